//! A follower with a data directory (`--data-dir`): what it restores from its
//! disk when it starts, what it asks its primary for, and how its disk keeps up
//! while it follows.
//!
//! ```text
//!   start:  newest usable checkpoint (exit C)  --restore-->  VM at C
//!           log on disk after C, through p     --------->   records C+1..=p (checked)
//!           Attach(Resume{epoch, p})  (Fresh when there was no checkpoint)
//!             Resume{p, J}: replay C+1..=p from disk, then the primary's records after p
//!             State:        a diff transfer onto the VM at C (only differing pages
//!                           move); the disk starts a new history at J
//!   follow: every record received --> disk log (async, or fsync'd before the ack)
//!           every --checkpoint-secs, at an exit nothing is injected at --> checkpoint
//! ```
//! A torn or corrupt last record is cut off; a corrupt checkpoint falls back to the
//! one before it, and with none usable the VM gets a whole state transfer. The
//! replay of the log from disk checks every entry's signature and every digest in
//! it, so a VM that does not reach what the log says stops (exit 3) instead of
//! following from a bad state.
use super::disklog::{self, DiskLog, Fsync, Persist, Recovered};
use super::follower::{StreamSource, Upstream};
use super::ReplicationError;
use crate::vm::checkpoint::{self, Checkpointer};
use crate::vm::machine::Machine;
use crate::vm::replayer::{RecordSource, ReplayError};
use logging_channel::channel::AttachRequest;
use logging_channel::{LogHeader, Record};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default `--checkpoint-secs`.
pub const DEFAULT_CHECKPOINT_SECS: u64 = 30;
/// At most this much log after a checkpoint is replayed from disk at a restart; a
/// follower that was down longer than its log is big asks for the rest.
pub const MAX_LOCAL_REPLAY_BYTES: u64 = 256 << 20;

/// `--data-dir` and its options.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub dir: PathBuf,
    pub checkpoint_every: Duration,
    pub fsync: Fsync,
}

/// What a follower restarted on its data directory holds.
#[derive(Debug, Default)]
pub struct Restart {
    /// The checkpoint restored into the VM: (exit, epoch).
    pub checkpoint: Option<(u64, u64)>,
    /// Its log after that checkpoint.
    pub log: Recovered,
}

impl Restart {
    /// What to ask the primary for.
    pub fn request(&self) -> AttachRequest {
        match self.checkpoint {
            Some((_, epoch)) => {
                AttachRequest::Resume { epoch: epoch.max(self.log.epoch), exit_index: self.log.position }
            }
            None => AttachRequest::Fresh,
        }
    }
}

/// Restores the newest usable checkpoint in the data directory into `machine` and reads
/// the log after it. A directory holding another VM's state is an error.
pub fn restore(d: &DataDir, machine: &mut Machine) -> Result<Restart, ReplicationError> {
    let t0 = Instant::now();
    let refused = |e: String| ReplicationError::Stale(format!("--data-dir {}: {e}", d.dir.display()));
    let found =
        checkpoint::restore_newest(&d.dir, &machine.header, &mut machine.vcpu, &machine.mem, &mut machine.buses.mmio)
            .map_err(|e| refused(e.to_string()))?;
    for name in &found.interrupted {
        tracing::warn!("data directory: {name} is a checkpoint whose writing was interrupted (a crash): ignored");
    }
    for why in &found.skipped {
        tracing::warn!("data directory: checkpoint not usable, trying an older one: {why}");
    }
    let Some((exit, epoch)) = found.at else {
        if !found.skipped.is_empty() {
            tracing::warn!("data directory: no usable checkpoint; this follower needs a whole state transfer");
        }
        return Ok(Restart::default());
    };
    let log =
        disklog::recover(&d.dir, &machine.header, exit, MAX_LOCAL_REPLAY_BYTES).map_err(|e| refused(e.to_string()))?;
    if let Some(why) = &log.damage {
        tracing::warn!("data directory: {why}");
    }
    tracing::info!(
        checkpoint = exit,
        epoch,
        position = log.position,
        records = log.records.len(),
        log_bytes = log.bytes,
        ms = t0.elapsed().as_millis() as u64,
        "data directory: restored the checkpoint of exit {exit}; its log holds through exit {}",
        log.position
    );
    Ok(Restart { checkpoint: Some((exit, epoch)), log })
}

/// Starts the disk side of a follower whose log on disk continues from exit `position`.
pub fn start(
    d: &DataDir,
    machine: LogHeader,
    position: u64,
    upstream: &Arc<Upstream>,
) -> Result<Arc<Persist>, ReplicationError> {
    let failed = |e: String| ReplicationError::Attach(format!("--data-dir {}: {e}", d.dir.display()));
    let disk = DiskLog::open(&d.dir, machine, position, d.fsync).map_err(|e| failed(e.to_string()))?;
    let prune = Arc::downgrade(&disk);
    let on_commit = Box::new(move |keep_from| {
        if let Some(disk) = prune.upgrade() {
            disk.prune(keep_from);
        }
    });
    let up = Arc::downgrade(upstream);
    let checkpointer = Checkpointer::new(&d.dir, machine, d.checkpoint_every, on_commit)
        .map_err(|e| failed(e.to_string()))?
        .with_epoch(Box::new(move || up.upgrade().map_or(0, |u| u.epoch.load(Ordering::SeqCst))));
    let persist = Arc::new(Persist { disk, checkpoints: Arc::new(Mutex::new(checkpointer)) });
    let _ = upstream.persist.set(persist.clone());
    Ok(persist)
}

/// The replaying vCPU's records: first the log from disk, then the primary's stream.
pub struct ChainSource {
    local: VecDeque<Record>,
    stream: StreamSource,
}

impl ChainSource {
    pub fn new(local: Vec<Record>, stream: StreamSource) -> ChainSource {
        ChainSource { local: local.into(), stream }
    }
}

impl RecordSource for ChainSource {
    fn next_record(&mut self) -> Result<Option<Record>, ReplayError> {
        match self.local.pop_front() {
            Some(r) => Ok(Some(r)),
            None => self.stream.next_record(),
        }
    }
}
