//! Checkpoints of a VM on its own disk: memory, vCPU, devices, exit index and
//! epoch, so that a follower that was killed (or whose host rebooted) starts
//! again from where it was instead of from nothing.
//!
//! One file per checkpoint, `ckpt-<exit index, 20 digits>.ftck`:
//!
//! ```text
//!   "FTVMMCKP" | version u16 (1) | reserved u16 (0) | base u64 | machine [88] | crc32 u32
//!        base: the exit of the checkpoint this one is a delta on; u64::MAX for a full one
//!        machine: the log-file header of the VM (guest image, memory size, CPUID, tick
//!                 rate; `logging_channel::LogHeader::to_bytes`, with its own CRC)
//!        crc32: over everything before it
//!   then state frames (`logging_channel::state`), as a state transfer sends them:
//!   Begin{exit, epoch, mem_size} | Pages.. | Zero.. | Blob x5 | End{exit, state digest}
//! ```
//!
//! A full checkpoint holds every non-zero page; a delta only the pages that changed
//! since its base (`Pages`) and those that became zero (`Zero`), found by comparing a
//! hash of every page with the previous checkpoint's (dirty-page logging is not used:
//! see README). Every `End` carries the whole state's digest, so restoring a chain
//! (full, delta, delta, ...) checks each link, and a corrupt or torn file anywhere is
//! found. A file is written as `.tmp`, synced and renamed, so a crash while writing
//! leaves only a `.tmp`, which restore ignores and deletes.
//!
//! What is kept: the newest checkpoint's chain and the previous one's (a corrupt
//! newest checkpoint falls back to the previous one); older files are deleted.
use crate::devices::bus::Bus;
use crate::vm::digest;
use crate::vm::pagediff::page_hash;
use crate::vm::snapshot::{self, SnapshotError};
use kvm_ioctls::VcpuFd;
use logging_channel::state::{BlobKind, PageHash, StateMessage, StateReader, MAX_PAGES, PAGE_SIZE};
use logging_channel::{FileError, LogHeader};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use zerocopy::IntoBytes;

mod restore;
pub use restore::{restore_newest, Restored};

const MAGIC: [u8; 8] = *b"FTVMMCKP";
const VERSION: u16 = 1;
const FULL: u64 = u64::MAX;
/// Bytes in a checkpoint file's header.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 8 + logging_channel::file::HEADER_LEN + 4;
/// After this many deltas the next checkpoint is full again: a chain is restored link by
/// link, and its files cannot be deleted while the newest needs them.
pub const MAX_CHAIN: u32 = 8;

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a checkpoint of this ftvmm (bad magic, version or header checksum)")]
    NotACheckpoint(String),
    #[error(
        "{path} is a checkpoint of another VM ({what}): give this VM its own --data-dir, or empty this one \
         (its state is useless here)"
    )]
    Foreign { path: String, what: String },
    #[error("{path} is damaged: {source}")]
    Damaged {
        path: String,
        #[source]
        source: SnapshotError,
    },
    #[error("{path} is a delta on checkpoint {base}, which is {why}")]
    BrokenChain { path: String, base: u64, why: String },
    #[error("taking or restoring a checkpoint failed: {0}")]
    Take(#[from] SnapshotError),
    #[error("the checkpoint writer thread is gone")]
    WriterGone,
}

/// A checkpoint file's header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The checkpoint this one is a delta on; `None` for a full one.
    pub base: Option<u64>,
    pub machine: LogHeader,
}

impl CheckpointHeader {
    /// The header as a checkpoint file starts with it.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.base.unwrap_or(FULL).to_le_bytes());
        out.extend_from_slice(&self.machine.to_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.try_into().expect("HEADER_LEN matches the fields")
    }

    /// Parses a header; `Err(None)` when it is not a checkpoint header at all, `Err(Some)`
    /// when its machine header is unreadable.
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Result<Self, Option<FileError>> {
        let (body, crc) = bytes.split_at(HEADER_LEN - 4);
        if bytes[..8] != MAGIC || bytes[8..10] != VERSION.to_le_bytes() || bytes[10..12] != [0, 0] {
            return Err(None);
        }
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(None);
        }
        let base = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let machine = LogHeader::from_bytes(bytes[20..HEADER_LEN - 4].try_into().expect("log header"))?;
        Ok(CheckpointHeader { base: (base != FULL).then_some(base), machine })
    }
}

/// Why a checkpoint made for `theirs` cannot be restored into `ours`, naming the first
/// difference (memory size first: the image digest covers it too, less legibly).
pub fn machine_differs(theirs: &LogHeader, ours: &LogHeader) -> Option<String> {
    let short = logging_channel::short_hex;
    if theirs.mem_size != ours.mem_size {
        Some(format!("memory size {} MiB, this VM has {} MiB", theirs.mem_size >> 20, ours.mem_size >> 20))
    } else if theirs.guest_image_digest != ours.guest_image_digest {
        Some(format!(
            "guest image {}, this VM's is {} (another ftvmm build, --kernel, --workload or guest address)",
            short(&theirs.guest_image_digest),
            short(&ours.guest_image_digest)
        ))
    } else if theirs.cpuid_digest != ours.cpuid_digest {
        Some("another CPUID table (another ftvmm build or CPU model)".into())
    } else if theirs.tick_hz != ours.tick_hz {
        Some(format!("tick rate {} Hz, this VM's is {} Hz", theirs.tick_hz, ours.tick_hz))
    } else {
        None
    }
}

/// The file name of the checkpoint at `exit`.
pub fn file_name(exit: u64) -> String {
    format!("ckpt-{exit:020}.ftck")
}

/// The exit a checkpoint file name stands for.
pub fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("ckpt-")?.strip_suffix(".ftck")?.parse().ok()
}

/// What one checkpoint cost.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    /// The exit it is of.
    pub exit: u64,
    /// Not a delta.
    pub full: bool,
    /// Pages written.
    pub pages: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long the vCPU was held for it.
    pub pause: Duration,
}

/// Called on the writer thread once a checkpoint is durable, with the oldest exit
/// whose log must still be kept (the previous checkpoint's).
pub type OnCommit = Box<dyn Fn(u64) + Send>;

/// Takes checkpoints of one VM into a directory, on the vCPU thread; a thread of its
/// own makes each durable (fsync, rename) and deletes what is no longer needed.
pub struct Checkpointer {
    dir: PathBuf,
    machine: LogHeader,
    every: Duration,
    last: Instant,
    /// Each page's hash at the last checkpoint (`None`: zero).
    pages: Vec<Option<PageHash>>,
    /// The last checkpoint taken, and how many deltas lead to it.
    base: Option<(u64, u32)>,
    /// The files the last checkpoint needs, oldest (the full one) first.
    chain: Vec<u64>,
    /// A write failed: the next checkpoint must not be a delta on it.
    force_full: Arc<AtomicBool>,
    tx: Option<crossbeam_channel::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    /// The epoch a checkpoint taken now is in (the primary's last word on it).
    epoch: Box<dyn Fn() -> u64 + Send>,
}

/// A checkpointer shared by the vCPU's replay driver and the code that sets it up.
pub type SharedCheckpointer = Arc<std::sync::Mutex<Checkpointer>>;

struct Job {
    exit: u64,
    tmp: PathBuf,
    chain: Vec<u64>,
    /// Delete every other checkpoint (a new history begins here).
    alone: bool,
    done: Option<crossbeam_channel::Sender<Result<(), String>>>,
}

impl Checkpointer {
    /// Checkpoints every `every` into `dir` for a VM of `machine`'s shape.
    pub fn new(dir: &Path, machine: LogHeader, every: Duration, on_commit: OnCommit) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let force_full = Arc::new(AtomicBool::new(false));
        let (d, ff) = (dir.to_path_buf(), force_full.clone());
        let writer = std::thread::Builder::new().name("checkpoint".into()).spawn(move || {
            // Chains of the last two checkpoints: what pruning keeps.
            let mut kept: Vec<Vec<u64>> = Vec::new();
            for job in rx {
                let result = commit(&d, &job);
                if let Err(e) = &result {
                    tracing::warn!("checkpoint at exit {} not written: {e}; the next one is full", job.exit);
                    ff.store(true, Ordering::SeqCst);
                    let _ = fs::remove_file(&job.tmp);
                } else {
                    if job.alone {
                        kept.clear();
                    }
                    kept.push(job.chain.clone());
                    if kept.len() > 2 {
                        kept.remove(0);
                    }
                    prune(&d, &kept);
                    on_commit(kept[0].last().copied().unwrap_or(job.exit));
                }
                if let Some(done) = job.done {
                    let _ = done.send(result.map_err(|e| e.to_string()));
                }
            }
        })?;
        Ok(Checkpointer {
            dir: dir.to_path_buf(),
            machine,
            every,
            last: Instant::now(),
            pages: Vec::new(),
            base: None,
            chain: Vec::new(),
            force_full,
            tx: Some(tx),
            writer: Some(writer),
            epoch: Box::new(|| 0),
        })
    }

    /// Where the epoch of each checkpoint comes from.
    pub fn with_epoch(mut self, epoch: Box<dyn Fn() -> u64 + Send>) -> Self {
        self.epoch = epoch;
        self
    }

    /// If a checkpoint is due, takes one of the VM stopped at `exit` (nothing may have
    /// been injected at it) in the current epoch; a failure is logged, not fatal.
    pub fn take_if_due(&mut self, vcpu: &mut VcpuFd, mem: &GuestMemoryMmap, bus: &Bus, exit: u64) {
        if !self.due() {
            return;
        }
        let epoch = (self.epoch)();
        match self.take(vcpu, mem, bus, exit, epoch, false) {
            Ok(t) => tracing::info!(
                exit,
                full = t.full,
                pages = t.pages,
                bytes = t.bytes,
                pause_ms = format!("{:.1}", t.pause.as_secs_f64() * 1e3),
                "checkpoint taken"
            ),
            Err(e) => tracing::warn!("{e}; replay goes on, the next checkpoint is full"),
        }
    }

    /// A checkpoint is due.
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    /// Checkpoints the VM stopped at counted exit `exit`, in `epoch`. With `alone`, it is
    /// a full checkpoint that replaces every other one (a new history: the VM's state
    /// was just replaced), made durable before this returns.
    #[allow(clippy::too_many_arguments)]
    pub fn take(
        &mut self,
        vcpu: &mut VcpuFd,
        mem: &GuestMemoryMmap,
        bus: &Bus,
        exit: u64,
        epoch: u64,
        alone: bool,
    ) -> Result<Taken, CheckpointError> {
        let taken = self.write(vcpu, mem, bus, exit, epoch, alone);
        if taken.is_err() {
            // The page table may describe a file that was never finished.
            self.base = None;
            self.pages.clear();
            self.chain.clear();
        }
        taken
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        vcpu: &mut VcpuFd,
        mem: &GuestMemoryMmap,
        bus: &Bus,
        exit: u64,
        epoch: u64,
        alone: bool,
    ) -> Result<Taken, CheckpointError> {
        let started = Instant::now();
        self.last = started;
        snapshot::complete_pending_instruction(vcpu);
        let forced = self.force_full.swap(false, Ordering::SeqCst);
        let base = match self.base {
            Some((b, n)) if !alone && !forced && n < MAX_CHAIN && b < exit => Some((b, n)),
            _ => None,
        };
        if base.is_none() {
            self.pages.clear();
        }
        let tmp = self.dir.join(format!("{}.tmp", file_name(exit)));
        let io = |source| CheckpointError::Io { path: tmp.display().to_string(), source };
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
        let header = CheckpointHeader { base: base.map(|(b, _)| b), machine: self.machine };
        out.write_all(&header.to_bytes()).map_err(io)?;
        let mut frames = crate::vm::snapshot::Wire::plain(&mut out, HEADER_LEN as u64);
        let mem_size: u64 = mem.iter().map(|r| r.len()).sum();
        frames.put(&StateMessage::Begin { exit_index: exit, epoch, mem_size })?;
        let mut hasher = digest::cpu_hasher(vcpu).map_err(SnapshotError::from)?;
        let pages = write_pages(&mut frames, &mut hasher, mem, &mut self.pages)?;
        for (kind, bytes) in blobs(vcpu, bus)? {
            frames.put(&StateMessage::Blob { kind, bytes })?;
        }
        let state_digest = *hasher.finalize().as_bytes();
        frames.put(&StateMessage::End { exit_index: exit, state_digest })?;
        frames.flush()?;
        let bytes = frames.bytes;
        out.flush().map_err(io)?;
        drop(out);
        let chain_len = base.map_or(0, |(_, n)| n + 1);
        if base.is_none() {
            self.chain.clear();
        }
        self.chain.push(exit);
        let chain = self.chain.clone();
        self.base = Some((exit, chain_len));
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let job = Job { exit, tmp, chain, alone, done: alone.then_some(done_tx) };
        self.tx.as_ref().ok_or(CheckpointError::WriterGone)?.send(job).map_err(|_| CheckpointError::WriterGone)?;
        if alone {
            match done_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(CheckpointError::Io { path: file_name(exit), source: std::io::Error::other(e) })
                }
                Err(_) => return Err(CheckpointError::WriterGone),
            }
        }
        Ok(Taken { exit, full: base.is_none(), pages, bytes, pause: started.elapsed() })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn blobs(vcpu: &VcpuFd, bus: &Bus) -> Result<Vec<(BlobKind, Vec<u8>)>, SnapshotError> {
    let err = |what| move |source| SnapshotError::Vcpu { what, source };
    Ok(vec![
        (BlobKind::Regs, vcpu.get_regs().map_err(err("registers"))?.as_bytes().to_vec()),
        (BlobKind::Sregs, vcpu.get_sregs().map_err(err("special registers"))?.as_bytes().to_vec()),
        (BlobKind::Fpu, snapshot::xsave_bytes(&vcpu.get_xsave().map_err(err("FPU state (XSAVE)"))?)),
        (BlobKind::VcpuEvents, vcpu.get_vcpu_events().map_err(err("events"))?.as_bytes().to_vec()),
        (BlobKind::Devices, bus.save()),
    ])
}

/// Writes the pages that differ from `known` (all non-zero ones when `known` is empty),
/// hashes every non-zero page into the digest, and updates `known`. Returns pages written.
fn write_pages<W: Write>(
    frames: &mut crate::vm::snapshot::Wire<'_, W>,
    hasher: &mut blake3::Hasher,
    mem: &GuestMemoryMmap,
    known: &mut Vec<Option<PageHash>>,
) -> Result<u64, SnapshotError> {
    let total = (mem.iter().map(|r| r.len()).sum::<u64>() / PAGE_SIZE as u64) as usize;
    let full = known.is_empty();
    if full {
        known.resize(total, None);
    }
    let mut run: Vec<u8> = Vec::with_capacity(MAX_PAGES * PAGE_SIZE);
    let mut run_start = 0u64;
    let (mut zero_start, mut zero_count) = (0u64, 0u32);
    let mut written = 0u64;
    digest::for_each_page(mem, |number, page| {
        let zero = digest::is_zero(page);
        let now = (!zero).then(|| page_hash(page));
        let slot = &mut known[number as usize];
        let write = now.is_some() && (full || *slot != now);
        let clear = !full && zero && slot.is_some();
        *slot = now;
        let contiguous = run_start + (run.len() / PAGE_SIZE) as u64 == number;
        if !run.is_empty() && (!write || !contiguous || run.len() == MAX_PAGES * PAGE_SIZE) {
            frames.put(&StateMessage::Pages { first_page: run_start, data: std::mem::take(&mut run) })?;
        }
        if zero_count > 0 && (!clear || zero_start + u64::from(zero_count) != number) {
            frames.put(&StateMessage::Zero { first_page: zero_start, count: zero_count })?;
            zero_count = 0;
        }
        if !zero {
            digest::hash_page(hasher, number, page);
        }
        if write {
            if run.is_empty() {
                run_start = number;
            }
            run.extend_from_slice(page);
            written += 1;
        }
        if clear {
            if zero_count == 0 {
                zero_start = number;
            }
            zero_count += 1;
        }
        Ok::<(), SnapshotError>(())
    })?;
    if !run.is_empty() {
        frames.put(&StateMessage::Pages { first_page: run_start, data: run })?;
    }
    if zero_count > 0 {
        frames.put(&StateMessage::Zero { first_page: zero_start, count: zero_count })?;
    }
    Ok(written)
}

/// Makes a written checkpoint durable: fsync, rename into place, fsync the directory.
fn commit(dir: &Path, job: &Job) -> std::io::Result<()> {
    File::open(&job.tmp)?.sync_all()?;
    fs::rename(&job.tmp, dir.join(file_name(job.exit)))?;
    File::open(dir)?.sync_all()
}

/// Deletes every checkpoint file not in `kept`'s chains.
fn prune(dir: &Path, kept: &[Vec<u64>]) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(exit) = name.to_str().and_then(parse_name) else { continue };
        if !kept.iter().any(|c| c.contains(&exit)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Reads a checkpoint file's header.
fn read_header(path: &Path) -> Result<(CheckpointHeader, BufReader<File>), CheckpointError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| CheckpointError::Io { path: shown.clone(), source })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut bytes = [0u8; HEADER_LEN];
    reader.read_exact(&mut bytes).map_err(|_| CheckpointError::NotACheckpoint(shown.clone()))?;
    match CheckpointHeader::from_bytes(&bytes) {
        Ok(h) => Ok((h, reader)),
        Err(None) => Err(CheckpointError::NotACheckpoint(shown)),
        Err(Some(source)) => Err(CheckpointError::Foreign { path: shown, what: source.to_string() }),
    }
}

/// Applies one checkpoint file on top of the VM and checks its digest.
fn apply_file(
    path: &Path,
    reader: BufReader<File>,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
    progress: &mut crate::vm::progress::Progress,
) -> Result<(u64, u64), CheckpointError> {
    let damaged = |source| CheckpointError::Damaged { path: path.display().to_string(), source };
    let cut = "the file ends before its End frame";
    snapshot::apply_state(&mut StateReader::new(reader), vcpu, mem, bus, cut, progress).map_err(damaged)
}

#[cfg(test)]
mod tests;
