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
use super::election::elector::Elector;
use super::election::rejoining::Rejoining;
use super::follower::{self, Reconnect, StreamSource, Upstream};
use super::handshake::{self, OnRefused};
use super::{ReplicationError, Timing};
use crate::host::status::Stats;
use crate::vm::checkpoint::{self, Checkpointer};
use crate::vm::machine::Machine;
use crate::vm::pagediff;
use crate::vm::replayer::{RecordSource, ReplayError};
use crossbeam_channel::{bounded, Receiver, Sender};
use logging_channel::channel::AttachRequest;
use logging_channel::channel::{AttachReply, Hello};
use logging_channel::{LogHeader, Record};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;

pub mod seal;

/// The default `--checkpoint-secs`.
pub const DEFAULT_CHECKPOINT_SECS: u64 = 30;
/// At most this much log after a checkpoint is replayed from disk at a restart; a
/// follower that was down longer than its log is big asks for the rest.
pub const MAX_LOCAL_REPLAY_BYTES: u64 = 256 << 20;

/// `--data-dir` and its options.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory (`--data-dir`).
    pub dir: PathBuf,
    /// How often to checkpoint (`--checkpoint-secs`).
    pub checkpoint_every: Duration,
    /// When acks wait for the disk (`--fsync`).
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

/// A replica member that stood down cleanly ([`seal`]): its VM has stopped, so its log
/// is whole; puts it on the disk and leaves the note that says so, with `released`, the
/// last exit whose output left. Returns the note.
pub fn seal(d: &DataDir, disk: &DiskLog, released: u64) -> Result<seal::Seal, String> {
    let exit = disk.seal().map_err(|e| e.to_string())?;
    let note = seal::Seal { exit, released: released.min(exit) };
    seal::write(&d.dir, note).map_err(|e| e.to_string())?;
    Ok(note)
}

/// At start, a replica member whose log on disk holds everything it ever acknowledged
/// or released keeps its vote: one that sealed its log when it stood down ([`seal`]),
/// or one that runs with `--fsync always` (it acknowledges, and as primary sends, only
/// what is on its disk). Restores its checkpoint and reads its log; returns them, and
/// the last exit whose output is known to have left, when the log is whole: it ends at
/// the sealed exit, or (`--fsync always`) it is undamaged but for a torn last write,
/// which was never fsync'd and so never acknowledged. `None` otherwise: the member
/// counts as restarted (its VM may hold the checkpoint already; the path it then takes
/// restores it again).
pub fn kept_restart(d: &DataDir, machine: &mut Machine) -> Result<Option<(Restart, u64)>, ReplicationError> {
    let note = seal::take(&d.dir).map_err(|e| ReplicationError::Attach(e.to_string()))?;
    // Written with --fsync always since its history began, and still run so.
    let durable = d.fsync == Fsync::Always && d.dir.join(disklog::DURABLE_HISTORY).exists();
    if note.is_none() && !durable {
        if d.fsync == Fsync::Always {
            tracing::info!(
                "data directory: its log was not written with --fsync always from its start, so this member \
                 counts as restarted until it has a state written so"
            );
        }
        return Ok(None);
    }
    let restart = restore(d, machine)?;
    // A log not kept now may lack what was acknowledged before: until a new history is
    // written, the disk no longer vouches for all of it (a crash again before it has
    // rejoined must not find the mark).
    let not_kept = || {
        let _ = std::fs::remove_file(d.dir.join(disklog::DURABLE_HISTORY));
        Ok(None)
    };
    let Some((checkpoint, _)) = restart.checkpoint else {
        tracing::warn!("data directory: no usable checkpoint, so this member counts as restarted");
        return not_kept();
    };
    let log = &restart.log;
    match note {
        Some(note) if log.position == note.exit && log.damage.is_none() => {
            tracing::info!(
                exit = note.exit,
                "data directory: this member sealed its log through exit {} when it stood down, and holds it \
                 whole: it keeps its vote",
                note.exit
            );
            Ok(Some((restart, note.released)))
        }
        Some(note) => {
            tracing::warn!(
                sealed = note.exit,
                found = log.position,
                "data directory: the log sealed through exit {} when this member stood down now ends at {} (or \
                 is damaged): it counts as restarted",
                note.exit,
                log.position
            );
            not_kept()
        }
        None if log.damage.is_none() || log.torn_tail => {
            // Its own primary's released marks, where it was a follower; otherwise what it
            // produced after its checkpoint may have left or not, and goes out again.
            let released = log
                .records
                .iter()
                .filter_map(|r| match r {
                    logging_channel::Record::Released { exit_index } => Some(*exit_index),
                    _ => None,
                })
                .max()
                .unwrap_or(checkpoint)
                .min(log.position);
            tracing::info!(
                exit = log.position,
                "data directory: --fsync always, and the log holds through exit {}: everything this member \
                 acknowledged is on its disk, so it keeps its vote",
                log.position
            );
            Ok(Some((restart, released)))
        }
        None => {
            tracing::warn!(
                "data directory: the log is damaged ({}): this member may lack what it acknowledged, so it counts \
                 as restarted",
                log.damage.as_deref().unwrap_or("?")
            );
            not_kept()
        }
    }
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
    let persist =
        Arc::new(Persist { disk, checkpoints: Arc::new(Mutex::new(checkpointer)), prepared: Mutex::new(None) });
    let _ = upstream.persist.set(persist.clone());
    Ok(persist)
}

/// Starts the disk of a VM that boots here as the primary (`--data-dir` on a primary, or
/// on a replica member elected at boot): a new history from exit 0 — whatever the
/// directory held is of another run — with its own log and checkpoints, in `group`'s
/// epoch, so that if it is restarted later, as a follower, it rejoins from there.
pub fn start_primary(
    d: &DataDir,
    machine: &mut Machine,
    group: &Arc<super::group::Group>,
) -> Result<Arc<Persist>, ReplicationError> {
    let failed = |e: String| ReplicationError::Attach(format!("--data-dir {}: {e}", d.dir.display()));
    let disk = DiskLog::open(&d.dir, machine.header, 0, d.fsync).map_err(|e| failed(e.to_string()))?;
    let prune = Arc::downgrade(&disk);
    let on_commit = Box::new(move |keep_from| {
        if let Some(disk) = prune.upgrade() {
            disk.prune(keep_from);
        }
    });
    let g = Arc::downgrade(group);
    let checkpointer = Checkpointer::new(&d.dir, machine.header, d.checkpoint_every, on_commit)
        .map_err(|e| failed(e.to_string()))?
        .with_epoch(Box::new(move || g.upgrade().map_or(0, |g| g.epoch())));
    let persist =
        Arc::new(Persist { disk, checkpoints: Arc::new(Mutex::new(checkpointer)), prepared: Mutex::new(None) });
    persist
        .new_history(0, group.epoch(), &mut machine.vcpu, &machine.mem, &machine.buses.mmio)
        .map_err(|e| failed(e.to_string()))?;
    Ok(persist)
}

/// Whom a follower restarted on its disk asks for what comes after it.
pub enum RejoinTo {
    /// The primary at this address (found by the election, or `--primary`).
    Primary(String),
    /// Whoever the group elects once the disk's log is replayed (a member that sealed
    /// its log, [`sealed_restart`]): this member, which then goes live on it, or
    /// another, which it then asks to resume.
    Elect(Arc<Elector>),
}

/// How a restarted follower asks its primary for what comes after its disk.
pub struct RestartPlan {
    /// Whom it asks.
    pub to: RejoinTo,
    /// This follower's hello.
    pub hello: Hello,
    /// How long to keep trying to reach the primary (`--connect-timeout-secs`).
    pub within: Duration,
    /// What to ask for: to resume after the disk's log.
    pub request: AttachRequest,
    pub timing: Timing,
    pub stats: Arc<Stats>,
    /// Where a later broken connection goes.
    pub reconnect: Option<Reconnect>,
    /// The VM's memory, to hash while the vCPU waits for the primary's answer.
    pub mem: GuestMemoryMmap,
    /// The group's name, learned from the primary.
    pub scope: Arc<crate::host::scope::Scope>,
    /// How the connection is locked.
    pub security: crate::host::tls::Security,
}

/// The replaying vCPU's records for a follower restarted on its data directory: the
/// log from disk, then (once the vCPU has replayed it, so its memory is as close to
/// the primary's as it can be) the primary's stream after it. The `rejoin` thread
/// connects meanwhile:
///
/// - `Resume`: the primary's records after the disk's position follow;
/// - `State`: the stream ends here, at the exit the vCPU stands at, and nothing more
///   of that exit is applied ([`RecordSource::state_follows`]): its memory stays as it
///   was hashed. The vCPU hands the connection to `follower::restore`, which sends
///   those page hashes and gets the pages that differ;
/// - failure: the replay stops with an error, and the follower with exit 7.
pub fn rejoin(plan: RestartPlan, local: Vec<Record>, upstream: Arc<Upstream>) -> Result<ChainSource, ReplicationError> {
    let (tx, rx) = bounded::<Result<Option<StreamSource>, String>>(1);
    let (drained_tx, drained) = bounded::<()>(1);
    let position = upstream.received_through.load(Ordering::SeqCst);
    std::thread::Builder::new()
        .name("rejoin".into())
        .spawn(move || {
            // The vCPU has asked for a record past the disk's log: it has replayed all it
            // could (the last exit's records are in, only the check for more is left).
            if drained.recv().is_err() {
                return; // the VM stopped first
            }
            // The vCPU waits for records now, so memory stands still: hash it before
            // asking, so that a primary that sends the state need not wait for the list.
            // The vCPU stopped in the exit after the last it replayed, and stays there until
            // the answer comes (a state follows: it yields there, see `state_follows`).
            let exit = upstream.replayed_through.load(Ordering::SeqCst) + 1;
            if let Some(p) = upstream.persist.get() {
                match pagediff::have_list(&plan.mem) {
                    Ok(list) => {
                        *p.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some(pagediff::Prepared { exit, list })
                    }
                    Err(e) => tracing::warn!("hashing the pages before rejoining failed: {e}"),
                }
            }
            let answer = match &plan.to {
                RejoinTo::Primary(addr) => connect(&plan, addr, &plan.hello, position, &upstream).map_err(|e| {
                    format!(
                        "this follower replayed its disk through exit {position} but cannot rejoin its primary at \
                         {addr}: {e}"
                    )
                }),
                RejoinTo::Elect(elector) => Ok(elect(&plan, elector, position, &upstream)),
            };
            let _ = tx.send(answer);
        })
        .map_err(|e| ReplicationError::Thread("rejoin", e))?;
    Ok(ChainSource {
        local: local.into(),
        drained: Some(drained_tx),
        pending: Some(rx),
        stream: None,
        state_follows: false,
    })
}

/// Until the group has a primary: this member won (its stream ends here, and it goes
/// live on what it replayed), or it follows the winner as [`connect`] does.
fn elect(plan: &RestartPlan, elector: &Arc<Elector>, position: u64, upstream: &Arc<Upstream>) -> Option<StreamSource> {
    let joined = follower::until_led(elector, plan.hello, upstream, |member, join, hello| {
        *upstream.rejoining.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Rejoining { elector: elector.clone(), primary: member });
        connect(plan, join, hello, position, upstream)
    });
    match joined {
        Some((_, source)) => source,
        None => {
            let epoch = elector.epoch();
            tracing::info!(epoch, "won epoch {epoch} on the log on this member's disk: going live on it");
            Some(StreamSource::ended())
        }
    }
}

/// Asks the primary at `addr` for what comes after `position`. `Ok(None)`: it sends a
/// state, which the vCPU restores from `upstream.restart`.
fn connect(
    plan: &RestartPlan,
    addr: &str,
    hello: &Hello,
    position: u64,
    upstream: &Arc<Upstream>,
) -> Result<Option<StreamSource>, ReplicationError> {
    let t0 = Instant::now();
    let (stream, reply) = handshake::connect_primary(
        addr,
        hello,
        plan.within,
        plan.request,
        OnRefused::Retry,
        &plan.scope,
        &plan.security,
    )?;
    match reply {
        AttachReply::Resume { from, through } if from == position => {
            tracing::info!(
                primary = %addr,
                from,
                through,
                ms = t0.elapsed().as_millis() as u64,
                "backup paired: resumed from the primary's backlog after exit {from}, the end of its data directory's \
                 log; replaying the primary's log"
            );
            // The page list hashed for a state is stale from here on.
            if let Some(p) = upstream.persist.get() {
                p.take_prepared();
            }
            let source =
                follower::start(stream, plan.timing, upstream.clone(), plan.stats.clone(), plan.reconnect.clone())?;
            upstream.rejoined();
            Ok(Some(source))
        }
        AttachReply::Resume { from, .. } => {
            Err(ReplicationError::Handshake(format!("the primary resumes after exit {from}, not {position}")))
        }
        AttachReply::State { why } => {
            tracing::warn!(
                "backup paired: the primary cannot resume this follower's log ({why}): it sends the pages that differ"
            );
            *upstream.restart.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream);
            Ok(None)
        }
        AttachReply::Refuse { why } => Err(ReplicationError::Refused(why)),
    }
}

/// Records from disk, then the primary's.
pub struct ChainSource {
    local: VecDeque<Record>,
    /// Told when the records from disk are used up.
    drained: Option<Sender<()>>,
    pending: Option<Receiver<Result<Option<StreamSource>, String>>>,
    stream: Option<StreamSource>,
    /// The primary answered with a state: the replay stops where it stands.
    state_follows: bool,
}

impl RecordSource for ChainSource {
    fn next_record(&mut self) -> Result<Option<Record>, ReplayError> {
        if let Some(r) = self.local.pop_front() {
            return Ok(Some(r));
        }
        if let Some(drained) = self.drained.take() {
            let _ = drained.send(());
        }
        if let Some(rx) = self.pending.take() {
            match rx.recv() {
                Ok(Ok(stream)) => {
                    self.state_follows = stream.is_none();
                    self.stream = stream;
                }
                Ok(Err(why)) => return Err(ReplayError::Source(why)),
                Err(_) => return Err(ReplayError::Source("the rejoin thread ended without an answer".into())),
            }
        }
        match &mut self.stream {
            Some(s) => s.next_record(),
            // A state follows: the stream ends here, and the vCPU restores it.
            None => Ok(None),
        }
    }

    fn state_follows(&self) -> bool {
        self.state_follows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::replayer::Replayer;
    use logging_channel::{Event, ExitKind, ExitSig};

    fn entry(exit_index: u64) -> Record {
        let sig = ExitSig { kind: ExitKind::MmioRead, addr: 0x1000, data: 0, regs_hash: exit_index };
        Record::Entry { exit_index, sig, events: vec![Event::Interrupt { vector: 0x20 }] }
    }

    /// A chain whose disk log is `local` and whose primary answered `answer`.
    fn chain(local: Vec<Record>, answer: Result<Option<StreamSource>, String>) -> (ChainSource, Receiver<()>) {
        let (tx, rx) = bounded(1);
        tx.send(answer).expect("room for the answer");
        let (drained_tx, drained) = bounded(1);
        let source = ChainSource {
            local: local.into(),
            drained: Some(drained_tx),
            pending: Some(rx),
            stream: None,
            state_follows: false,
        };
        (source, drained)
    }

    /// Issue 11: an old primary's disk log ended in the entry of its last exit. The page
    /// list was hashed when the records ran out, inside that exit; the replay then
    /// applied the entry (an interrupt) and ran the guest to its next exit before the
    /// state came, so pages it listed had changed, the primary skipped them as the
    /// same, and the digest check failed. With a state to follow, nothing more of the
    /// exit is applied and the replay yields there.
    #[test]
    fn a_disk_log_ending_inside_an_exit_is_not_applied_when_a_state_follows() {
        let (source, drained) = chain(vec![entry(7), entry(9)], Ok(None));
        let mut replayer = Replayer::new(source);
        let at7 = replayer.at_exit(7).expect("exit 7");
        assert!(at7.entry.is_some() && !at7.stream_ended, "exit 7 is complete: exit 9's entry follows it");
        assert!(drained.try_recv().is_err(), "the disk log is not used up yet");
        let at9 = replayer.at_exit(9).expect("exit 9");
        assert!(drained.try_recv().is_ok(), "the rejoin thread hashes memory now, inside exit 9");
        assert!(at9.stream_ended, "the state replaces the rest");
        assert_eq!(at9.entry, None, "exit 9's interrupt must not be injected: the guest would run on");
        assert!(at9.digests.is_empty());
    }

    #[test]
    fn a_failed_rejoin_stops_the_replay_with_why() {
        let (source, _drained) = chain(vec![entry(3)], Err("the primary is gone".into()));
        let err = Replayer::new(source).at_exit(3).expect_err("no answer to replay on");
        assert!(err.to_string().contains("the primary is gone"), "{err}");
    }

    /// A source that simply ends (a follower whose primary died) keeps the last exit's
    /// entry: that follower goes live after applying it.
    #[test]
    fn a_log_that_just_ends_still_applies_its_last_entry() {
        let mut replayer = Replayer::new(VecDeque::from(vec![entry(5)]));
        let at = replayer.at_exit(5).expect("exit 5");
        assert!(at.stream_ended && at.entry.is_some());
    }

    impl RecordSource for VecDeque<Record> {
        fn next_record(&mut self) -> Result<Option<Record>, ReplayError> {
            Ok(self.pop_front())
        }
    }
}
