//! A follower's log on its own disk (`--data-dir`): every record it receives,
//! appended to segment files in the format `ftvmm record` writes, so that a
//! follower restarted on the same directory replays from its newest checkpoint
//! to where it was and asks its primary only for what came after.
//!
//! ```text
//!   DIR/log-<start, 20 digits>.ftlog     a log file (logging_channel::file): the header
//!                                        (guest image, memory, CPUID, tick rate), then
//!                                        record frames (len | tag | payload | crc32)
//!        start: the exit this segment continues from; the segment before it covered
//!               exactly through `start` (a checkpoint or the state transfer holds the rest)
//!
//!   log-rx --records--> DiskLog::append --(channel)--> `disk-log` thread --> segment
//!            --fsync async:  append after the ack, the thread writes (the ack never waits)
//!            --fsync always: append before the ack, and wait until it is fsync'd
//!   checkpoint thread --prune(keep_from)--> a new segment; segments wholly at or
//!                                           before keep_from are deleted
//! ```
//!
//! Reading back ([`recover`]) checks the header, every frame's CRC and the records'
//! order; it stops at a torn or corrupt record and cuts the file there, after the last
//! record that completed an exit (an entry or progress mark), so that appending can
//! go on from a position the primary knows how to resume.
use crate::devices::bus::Bus;
use crate::vm::checkpoint::{CheckpointError, SharedCheckpointer};
use crate::vm::pagediff::Prepared;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use kvm_ioctls::VcpuFd;
use logging_channel::{codec, LogHeader, Record, Sequencer};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// When a follower's acknowledgement waits for its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Acks are sent on receipt; records reach the disk soon after (a process crash
    /// loses nothing the kernel has, a host crash the last moments).
    Async,
    /// A record is acked only once it is fsync'd.
    Always,
}

/// Why the disk log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskLogError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is the log of another VM ({what}): give this VM its own --data-dir, or empty this one \
         (its log is useless here)"
    )]
    Foreign { path: String, what: String },
    #[error("the disk log writer thread is gone")]
    WriterGone,
    /// A checkpoint of a new state could not be written (`Persist::new_history`).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// A follower's disk: its log and its checkpoints.
pub struct Persist {
    /// The log on disk.
    pub disk: Arc<DiskLog>,
    /// The VM's checkpoints (taken by the replay driver).
    pub checkpoints: SharedCheckpointer,
    /// The page list of the VM as it waits for its primary's answer, hashed before
    /// asking: the primary's guest is paused while it waits for the list.
    pub prepared: std::sync::Mutex<Option<Prepared>>,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Persist { .. }")
    }
}

impl Persist {
    /// The page list hashed before asking, if any (see [`Prepared::still_at`]).
    pub fn take_prepared(&self) -> Option<Prepared> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The VM's state was just replaced by one taken at exit `at` in `epoch` (a state
    /// transfer): the log on disk belongs to another history. Deletes it, then writes a
    /// full checkpoint of the new state (durable before this returns) that replaces
    /// every older one. In that order, so a crash in between leaves an old checkpoint
    /// with no log after it, never an old log after a new state.
    pub fn new_history(
        &self,
        at: u64,
        epoch: u64,
        vcpu: &mut VcpuFd,
        mem: &GuestMemoryMmap,
        bus: &Bus,
    ) -> Result<(), DiskLogError> {
        self.disk.reset(at)?;
        let mut c = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        let t = c.take(vcpu, mem, bus, at, epoch, true)?;
        tracing::info!(
            exit = at,
            epoch,
            pages = t.pages,
            bytes = t.bytes,
            "data directory: a new history from exit {at}"
        );
        Ok(())
    }
}

/// Present in a data directory while its log history was written with `--fsync always`
/// from its start (a state transfer, or a primary's boot): its disk then holds every
/// record the member acknowledged or sent. Created with each new history under
/// `always`, removed whenever the log is opened under `async` (a member restarted with
/// `always` on a log written `async` may lack what it acknowledged then).
pub const DURABLE_HISTORY: &str = "fsync-always-history";

/// The file name of the segment that continues from exit `start`.
pub fn segment_name(start: u64) -> String {
    format!("log-{start:020}.ftlog")
}

fn parse_segment(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?.strip_suffix(".ftlog")?.parse().ok()
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| Some((parse_segment(e.file_name().to_str()?)?, e.path()))).collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

enum Msg {
    Append {
        bytes: Vec<u8>,
        records: Vec<Record>,
        durable: Option<Sender<()>>,
    },
    Prune(u64),
    Reset {
        at: u64,
        done: Sender<Result<(), String>>,
    },
    /// Answered once everything sent before it is written.
    Barrier(Sender<()>),
    /// The records after the covered position are `epoch`'s (a standing mark).
    Epoch(u64),
    /// Write everything, fsync it, and answer with the last exit the log covers.
    Seal(Sender<Result<u64, String>>),
}

/// The writer's end of a follower's disk log.
pub struct DiskLog {
    tx: Sender<Msg>,
    fsync: Fsync,
}

impl DiskLog {
    /// Starts the `disk-log` thread, appending to a new segment that continues from
    /// exit `start` (what the VM's state or the segments before already hold).
    pub fn open(dir: &Path, machine: LogHeader, start: u64, fsync: Fsync) -> Result<Arc<DiskLog>, DiskLogError> {
        let mut writer = Writer::new(dir, machine, start, fsync)?;
        let (tx, rx) = unbounded::<Msg>();
        std::thread::Builder::new()
            .name("disk-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| DiskLogError::Io { path: dir.display().to_string(), source })?;
        Ok(Arc::new(DiskLog { tx, fsync }))
    }

    /// Hands `records` (just received, in order) to the disk. Called twice per batch,
    /// before the ack (`before_ack`) and after it: with `--fsync always` the first call
    /// writes and waits for the disk, otherwise the second hands them to the thread.
    pub fn append(&self, records: &[Record], before_ack: bool) {
        if records.is_empty() || before_ack != (self.fsync == Fsync::Always) {
            return;
        }
        let mut bytes = Vec::new();
        for r in records {
            codec::encode(r, &mut bytes);
        }
        let (durable, wait) = match self.fsync {
            Fsync::Always => {
                let (tx, rx) = bounded(1);
                (Some(tx), Some(rx))
            }
            Fsync::Async => (None, None),
        };
        if self.tx.send(Msg::Append { bytes, records: records.to_vec(), durable }).is_ok() {
            if let Some(rx) = wait {
                // The thread drops the sender without answering when the write failed;
                // it has said so, and the ack goes out anyway (the memory copy is intact).
                let _ = rx.recv();
            }
        }
    }

    /// A checkpoint is durable and the log before `keep_from` is no longer needed.
    pub fn prune(&self, keep_from: u64) {
        let _ = self.tx.send(Msg::Prune(keep_from));
    }

    /// Waits until everything appended so far has been written.
    pub fn sync(&self) {
        let (tx, rx) = bounded(1);
        if self.tx.send(Msg::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The records from now on are `epoch`'s: a standing mark at the exit the log covers,
    /// as a follower's stream carries one. A primary's own log needs it: without it, a
    /// member restarted on that log would claim the epoch of its last checkpoint, older
    /// than its last records, and could vote for a log that lacks them.
    pub fn mark_epoch(&self, epoch: u64) {
        let _ = self.tx.send(Msg::Epoch(epoch));
    }

    /// Writes everything appended so far and fsyncs it (file and directory), whatever
    /// `--fsync` says; returns the last exit the log on disk covers. For a clean stand-down
    /// ([`super::recovery::seal`]): the process is about to start over, and its log
    /// must be on the disk whole.
    pub fn seal(&self) -> Result<u64, DiskLogError> {
        let (tx, rx) = bounded(1);
        self.tx.send(Msg::Seal(tx)).map_err(|_| DiskLogError::WriterGone)?;
        match rx.recv() {
            Ok(Ok(exit)) => Ok(exit),
            Ok(Err(e)) => Err(DiskLogError::Io { path: "the disk log".into(), source: std::io::Error::other(e) }),
            Err(_) => Err(DiskLogError::WriterGone),
        }
    }

    /// The VM's state was replaced by one taken at exit `at`: the log before it belongs
    /// to another history. Deletes every segment and starts a new one from `at`.
    pub fn reset(&self, at: u64) -> Result<(), DiskLogError> {
        let (done, rx) = bounded(1);
        self.tx.send(Msg::Reset { at, done }).map_err(|_| DiskLogError::WriterGone)?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DiskLogError::Io { path: segment_name(at), source: std::io::Error::other(e) }),
            Err(_) => Err(DiskLogError::WriterGone),
        }
    }
}

/// The `disk-log` thread's state.
struct Writer {
    dir: PathBuf,
    machine: LogHeader,
    fsync: Fsync,
    file: Option<File>,
    /// The current segment's start.
    start: u64,
    seq: Sequencer,
    /// The highest epoch a standing mark in this history announced.
    epoch: u64,
    failed: bool,
}

impl Writer {
    fn new(dir: &Path, machine: LogHeader, start: u64, fsync: Fsync) -> Result<Writer, DiskLogError> {
        fs::create_dir_all(dir).map_err(|source| DiskLogError::Io { path: dir.display().to_string(), source })?;
        let mut w = Writer {
            dir: dir.to_path_buf(),
            machine,
            fsync,
            file: None,
            start,
            seq: Sequencer::starting_at(start),
            epoch: 0,
            failed: false,
        };
        if fsync == Fsync::Async {
            // Records from now on may be acknowledged before they are on the disk.
            match fs::remove_file(dir.join(DURABLE_HISTORY)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(w.io(e)),
                _ => {}
            }
        }
        w.roll(start)?;
        Ok(w)
    }

    /// A new history written with `--fsync always`: every record of it will be on the
    /// disk before it is acknowledged or sent, which [`DURABLE_HISTORY`] says.
    fn mark_durable(&self) -> Result<(), DiskLogError> {
        if self.fsync != Fsync::Always {
            return Ok(());
        }
        let mark = File::create(self.dir.join(DURABLE_HISTORY)).and_then(|f| f.sync_all());
        mark.and_then(|()| File::open(&self.dir)?.sync_all()).map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> DiskLogError {
        DiskLogError::Io { path: self.dir.join(segment_name(self.start)).display().to_string(), source }
    }

    /// Starts the segment that continues from `start`.
    fn roll(&mut self, start: u64) -> Result<(), DiskLogError> {
        self.start = start;
        let path = self.dir.join(segment_name(start));
        let mut file = File::create(&path).map_err(|e| self.io(e))?;
        file.write_all(&self.machine.to_bytes()).map_err(|e| self.io(e))?;
        // The file format's guest-configuration block, empty: a follower's log is replayed
        // with the flags its VM was started with (`ftvmm replay` takes them as given).
        file.write_all(&EMPTY_CONFIG_BLOCK).map_err(|e| self.io(e))?;
        if self.fsync == Fsync::Always {
            file.sync_all().and_then(|()| File::open(&self.dir)?.sync_all()).map_err(|e| self.io(e))?;
        }
        self.file = Some(file);
        Ok(())
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        // Appends that arrive together go out in one write: under load `log-rx` hands
        // over a batch per socket read, and a write(2) each would cost CPU the replicas
        // compete for.
        let mut pending: Vec<u8> = Vec::new();
        for msg in rx.iter() {
            match msg {
                Msg::Append { bytes, records, durable } => {
                    if self.failed {
                        continue;
                    }
                    if let Err(e) = self.check(&records) {
                        tracing::error!("{e}: this follower stops writing its disk log (it goes on replicating)");
                        self.failed = true;
                        continue;
                    }
                    pending.extend_from_slice(&bytes);
                    if durable.is_none() && !rx.is_empty() && pending.len() < 1 << 20 {
                        continue;
                    }
                    self.flush(&mut pending);
                    if let (Some(d), false) = (durable, self.failed) {
                        let _ = d.send(());
                    }
                }
                Msg::Prune(keep_from) => {
                    self.flush(&mut pending);
                    self.prune(keep_from);
                }
                Msg::Barrier(done) => {
                    self.flush(&mut pending);
                    let _ = done.send(());
                }
                Msg::Epoch(epoch) => self.mark(epoch, &mut pending),
                Msg::Seal(done) => {
                    self.flush(&mut pending);
                    let _ = done.send(self.seal());
                }
                Msg::Reset { at, done } => {
                    pending.clear();
                    for (_, path) in segments(&self.dir) {
                        let _ = fs::remove_file(path);
                    }
                    self.seq = Sequencer::starting_at(at);
                    self.epoch = 0;
                    self.failed = false;
                    let rolled = self.roll(at).and_then(|()| self.mark_durable());
                    let _ = done.send(rolled.map_err(|e| e.to_string()));
                }
            }
        }
        self.flush(&mut pending);
    }

    /// Gathers a standing mark for `epoch` at the covered exit, unless the log says so
    /// already.
    fn mark(&mut self, epoch: u64, pending: &mut Vec<u8>) {
        if self.failed || self.epoch >= epoch {
            return;
        }
        let exit_index = self.seq.covered_through().unwrap_or(self.start);
        let mark = Record::Standing { exit_index, epoch, eligible: true };
        if let Err(e) = self.check(std::slice::from_ref(&mark)) {
            tracing::error!("{e}: this member stops writing its disk log (it goes on replicating)");
            self.failed = true;
            return;
        }
        codec::encode(&mark, pending);
    }

    /// Makes what was written durable; the last exit covered, or why the log is not whole.
    fn seal(&mut self) -> Result<u64, String> {
        if self.failed {
            return Err("the disk log stopped writing earlier (see the error above)".into());
        }
        let file = self.file.as_ref().ok_or("the disk log has no open segment")?;
        file.sync_all().and_then(|()| File::open(&self.dir)?.sync_all()).map_err(|e| self.io(e).to_string())?;
        Ok(self.seq.covered_through().unwrap_or(self.start))
    }

    /// Writes what has been gathered.
    fn flush(&mut self, pending: &mut Vec<u8>) {
        if self.failed || pending.is_empty() {
            return;
        }
        if let Err(e) = self.write(pending) {
            tracing::error!("{e}: this follower stops writing its disk log (it goes on replicating)");
            self.failed = true;
            self.file = None;
        }
        pending.clear();
    }

    fn check(&mut self, records: &[Record]) -> Result<(), DiskLogError> {
        for r in records {
            // log-rx checked the order already; a second check keeps this file readable
            // whatever a caller does.
            if let Err(e) = self.seq.check(r) {
                return Err(self.io(std::io::Error::other(e.to_string())));
            }
            if let Record::Standing { epoch, .. } = r {
                self.epoch = self.epoch.max(*epoch);
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DiskLogError> {
        let file = self.file.as_mut().ok_or(DiskLogError::WriterGone)?;
        let written = file.write_all(bytes).and_then(|()| match self.fsync {
            Fsync::Always => file.sync_data(),
            Fsync::Async => Ok(()),
        });
        written.map_err(|e| self.io(e))
    }

    /// Starts a new segment at the covered position, and deletes every segment that
    /// ends at or before `keep_from` (the next one starts there or earlier).
    fn prune(&mut self, keep_from: u64) {
        if self.failed {
            return;
        }
        let covered = self.seq.covered_through().unwrap_or(self.start);
        if covered > self.start {
            if let Err(e) = self.roll(covered) {
                tracing::error!("{e}: this follower stops writing its disk log (it goes on replicating)");
                self.failed = true;
                return;
            }
        }
        let all = segments(&self.dir);
        for pair in all.windows(2) {
            let ((_, path), (next_start, _)) = (&pair[0], &pair[1]);
            if *next_start <= keep_from {
                let _ = fs::remove_file(path);
            }
        }
    }
}

mod recover;
use recover::EMPTY_CONFIG_BLOCK;
pub use recover::{recover, Recovered};

#[cfg(test)]
mod tests;
