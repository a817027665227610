//! A follower's side of the logging channel: `log-rx` reads the primary's
//! records, checks their order, hands them to the replaying vCPU and acks them
//! on receipt (and, while the replay trails them, acks the replay's progress
//! every [`super::flow::REPLAY_ACK_EVERY`], so a primary held by flow control
//! goes on). Its end — silence past the failover timeout, a closed
//! connection, or a clean end record — ends the record stream; a corrupt
//! stream, or a replay that stalled, ends it too but forbids going live.
//!
//! With `--reconnect-secs`, a connection that breaks (silence, a close, a read
//! error; not a clean end, corruption or a stall) is not the end yet:
//!
//! ```text
//!   log-rx: broken --> reconnect, ask to resume after p (the exit it holds through)
//!             |-- Resume{p, J}: records after p on the new connection; go on
//!             |-- State: hand the connection to the vCPU and end the stream; the vCPU
//!             |          replays what it has, then restores the state ([`restore`])
//!             |          and follows again
//!             '-- refused, or no primary within the deadline: the stream ends (go live)
//! ```
//! Meanwhile the VM waits for records, paused at its position.
use super::backlog::Backlog;
use super::disklog::Persist;
use super::election::elector::{Elector, Next};
use super::election::rejoining::Rejoining;
use super::election::rules::LogPosition;
use super::flow::{progress_ack_due, read_wait, ProgressWatch};
use super::golive::{CatchUp, Loss};
use super::handshake::{self, OnRefused};
use super::{Link, ReplicationError, Timing};
use crate::host::sched::CpuTimes;
use crate::host::status::Stats;
use crate::host::tls::{Channel, Security};
use crate::vm::machine::AtExit;
use crate::vm::replayer::{RecordSource, ReplayError};
use crate::vm::snapshot;
use crossbeam_channel::{unbounded, Receiver, Sender};
use logging_channel::channel::{self, Ack, AttachReply, AttachRequest, Hello, Message};
use logging_channel::codec::Sequencer;
use logging_channel::Record;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a follower knows about its primary, shared by `log-rx`, the replaying
/// vCPU, the output thread and the go-live path.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The primary is alive and streaming (until the stream ends).
    pub alive: AtomicBool,
    /// The highest exit received completely (what acks say).
    pub received_through: AtomicU64,
    /// The last exit replayed; the replay driver writes it.
    pub replayed_through: Arc<AtomicU64>,
    /// The primary's latest released mark: its output up to here has left it.
    pub released: AtomicU64,
    /// The stream broke in a way that forbids going live (corruption).
    pub corrupt: AtomicBool,
    /// This follower's replay stopped making progress while records waited (the
    /// watchdog tripped); like corruption, this forbids going live.
    pub stalled: AtomicBool,
    /// The primary ended its log cleanly (SIGTERM), so the follower stops too.
    pub clean_end: AtomicBool,
    /// The epoch the primary last announced (its state's, then standing marks).
    pub epoch: AtomicU64,
    /// The records after this exit are `epoch`'s; those before, `earlier_epoch`'s (a
    /// resume across an election gets the old primary's records, then the new one's).
    epoch_from: AtomicU64,
    earlier_epoch: AtomicU64,
    /// In a replica group, the log this follower received, kept so that it can serve
    /// resumes from it if it becomes primary.
    pub backlog: Mutex<Option<Backlog>>,
    /// The primary last said this follower may take over: output waited for it, so it
    /// holds every write a client was told of. An asynchronous follower may not.
    pub eligible: AtomicBool,
    /// In a replica group: this member voted for another candidate in this epoch, so it
    /// must not acknowledge a primary of any earlier one (Raft's fencing; without it, a
    /// primary whose follower voted for a rival could go on releasing with its acks).
    pub fence: std::sync::OnceLock<Arc<AtomicU64>>,
    /// The epoch of the primary this follower is connected to (its hello's, then its
    /// standing marks'): what the fence is checked against. Not the log's epoch, which
    /// trails it while a resume across an election replays the old primary's records.
    pub primary_epoch: AtomicU64,
    /// A reconnection on which the primary sends a new state (a resume was not
    /// possible): the vCPU restores it once it has replayed what it holds.
    pub restart: Mutex<Option<Channel>>,
    /// With `--data-dir`: the disk every received record is appended to (`ft::recovery`).
    pub persist: OnceLock<Arc<Persist>>,
    /// The replaying vCPU thread's id (0 until it runs), so that `log-rx` can read its
    /// CPU times when the primary is lost (the go-live line says where the time went).
    pub vcpu_tid: AtomicI32,
    /// When `log-rx` last found its stream ended, and where this follower stood then.
    pub lost: Mutex<Option<Loss>>,
    /// A replica member restarted on its disk: told its elector once it has rejoined.
    pub rejoining: Mutex<Option<Rejoining>>,
}

impl Upstream {
    /// A follower whose state was taken at exit `joined_at` (0 at boot): it holds,
    /// and has replayed, everything through that exit. Positions starting anywhere
    /// else would make flow control wait for exits that will never be sent.
    pub fn new(joined_at: u64) -> Arc<Upstream> {
        let u = Upstream { alive: AtomicBool::new(true), eligible: AtomicBool::new(true), ..Upstream::default() };
        u.epoch_from.store(joined_at, Ordering::SeqCst);
        u.received_through.store(joined_at, Ordering::SeqCst);
        u.replayed_through.store(joined_at, Ordering::SeqCst);
        u.released.store(joined_at, Ordering::SeqCst);
        Arc::new(u)
    }

    /// Where this follower's log ends, for elections: the epoch of its last record,
    /// and the last exit it holds.
    pub fn log_position(&self) -> LogPosition {
        let exit = self.received_through.load(Ordering::SeqCst);
        let epoch = if exit > self.epoch_from.load(Ordering::SeqCst) {
            self.epoch.load(Ordering::SeqCst)
        } else {
            self.earlier_epoch.load(Ordering::SeqCst)
        };
        LogPosition { epoch, exit }
    }

    /// The primary says the records after exit `from` are `epoch`'s.
    fn announce_epoch(&self, epoch: u64, from: u64) -> bool {
        let was = self.epoch.load(Ordering::SeqCst);
        if epoch <= was {
            return false;
        }
        // Records up to `from` keep the epoch they had.
        let before =
            if from > self.epoch_from.load(Ordering::SeqCst) { was } else { self.earlier_epoch.load(Ordering::SeqCst) };
        self.earlier_epoch.store(before, Ordering::SeqCst);
        self.epoch_from.store(from, Ordering::SeqCst);
        self.epoch.store(epoch, Ordering::SeqCst);
        true
    }

    /// Starts keeping the log this follower receives (replica groups), from a state
    /// taken at exit `joined_at` in `epoch`.
    pub fn keep_log(&self, bytes: usize, joined_at: u64, epoch: u64) {
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = Some(Backlog::new(bytes, joined_at, epoch));
    }

    /// The calling thread is the one that replays (and goes live).
    pub fn note_vcpu_thread(&self) {
        self.vcpu_tid.store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
    }

    /// The stream ended now: notes where this follower stood, for the go-live line.
    fn note_loss(&self) {
        let loss = Loss {
            at: Instant::now(),
            received_through: self.received_through.load(Ordering::SeqCst),
            replayed_through: self.replayed_through.load(Ordering::SeqCst),
            vcpu: CpuTimes::of_thread(self.vcpu_tid.load(Ordering::SeqCst)),
            raised: None,
        };
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(loss);
    }

    /// The log ended for good and this follower may go live: its vCPU replays what is
    /// left at real-time priority (ft/golive.rs says why); going live puts it back.
    fn raise_catch_up(&self) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let Some(loss) = lost.as_mut() else { return };
        match CatchUp::raise(self.vcpu_tid.load(Ordering::SeqCst)) {
            Ok(raised) => loss.raised = Some(raised),
            Err(why) => tracing::info!("the replay catches up at its usual priority: {why}"),
        }
    }

    /// When the stream last ended, and where this follower stood then.
    pub fn loss(&self) -> Option<Loss> {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// It follows its primary again (a resume was accepted, or a state restored): a
    /// replica member restarted on its disk tells its elector now, not before.
    pub fn rejoined(&self) {
        self.alive.store(true, Ordering::SeqCst);
        if let Some(r) = self.rejoining.lock().unwrap_or_else(|p| p.into_inner()).take() {
            r.report();
        }
    }

    /// The connection a new state arrives on, if the primary is sending one.
    pub fn take_restart(&self) -> Option<Channel> {
        self.restart.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The follower restored a state taken at `joined_at` in `epoch`: it holds and has
    /// replayed everything through it, and its primary streams again.
    fn restarted_at(&self, joined_at: u64, epoch: u64) {
        self.received_through.store(joined_at, Ordering::SeqCst);
        self.replayed_through.store(joined_at, Ordering::SeqCst);
        self.released.fetch_max(joined_at, Ordering::SeqCst);
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
        // The state is the primary's, in its epoch, through `joined_at`.
        self.earlier_epoch.store(self.epoch.load(Ordering::SeqCst), Ordering::SeqCst);
        self.epoch_from.store(joined_at, Ordering::SeqCst);
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = backlog.as_mut() {
            *b = Backlog::new(b.limit(), joined_at, epoch);
        }
        drop(backlog);
        self.alive.store(true, Ordering::SeqCst);
    }
}

/// How `log-rx` reconnects when the connection to its primary breaks.
#[derive(Clone)]
pub struct Reconnect {
    /// Where it reconnects.
    pub to: Rejoin,
    /// This follower's hello.
    pub hello: Hello,
    /// How long to keep trying one primary (`--reconnect-secs`).
    pub within: Duration,
    /// The group's name, learned from whichever primary it joins.
    pub scope: Arc<crate::host::scope::Scope>,
    /// How the connection is locked (TLS, or `--insecure`).
    pub security: Security,
}

/// Where a follower whose primary is gone goes.
#[derive(Clone)]
pub enum Rejoin {
    /// Back to the same primary's address (`--reconnect-secs`); if that fails, live.
    Same(String),
    /// To whoever the group elects: this member, or another it then follows.
    Elect(Arc<Elector>),
}

/// How `receive_loop` ended.
enum Ended {
    /// The connection broke: worth a reconnection.
    Broken(String),
    /// A clean end, corruption, a stall, or the VM stopped: final.
    Final(String),
}

/// What a reconnection got.
enum Resumed {
    /// Records after this follower's position follow on it.
    Log(Channel),
    /// A state follows on it; the primary said why.
    State(Channel, String),
}

/// The replaying vCPU's end of the stream.
pub struct StreamSource {
    rx: Receiver<Record>,
}

impl RecordSource for StreamSource {
    fn next_record(&mut self) -> Result<Option<Record>, ReplayError> {
        Ok(self.rx.recv().ok())
    }
}

/// Starts `log-rx` on a paired connection; with `reconnect`, a broken connection is
/// reconnected (see the module docs).
pub fn start(
    stream: impl Link + Send + 'static,
    timing: Timing,
    upstream: Arc<Upstream>,
    stats: Arc<Stats>,
    reconnect: Option<Reconnect>,
) -> Result<StreamSource, ReplicationError> {
    let (tx, rx) = unbounded();
    std::thread::Builder::new()
        .name("log-rx".into())
        .spawn(move || {
            let mut stream: Box<dyn Link + Send> = Box::new(stream);
            // This follower holds everything through this exit (a state taken there, or a log
            // on its disk that reaches it). One sequencer across reconnections: a resumed
            // stream continues the log.
            let mut seq = Sequencer::starting_at(upstream.received_through.load(Ordering::SeqCst));
            let why = loop {
                let ended = receive_loop(&mut *stream, timing, &upstream, &stats, &tx, &mut seq);
                upstream.note_loss();
                stream.close();
                let (why, r) = match (ended, &reconnect) {
                    (Ended::Broken(why), Some(r)) => (why, r),
                    (Ended::Broken(why) | Ended::Final(why), _) => break why,
                };
                upstream.alive.store(false, Ordering::SeqCst);
                let next = match &r.to {
                    Rejoin::Same(addr) => {
                        tracing::warn!(
                            "the connection to the primary broke: {why}; reconnecting for up to {} s",
                            r.within.as_secs()
                        );
                        resume(addr, r, &r.hello, &upstream, &seq)
                            .map_err(|e| format!("{why}; reconnecting failed: {e}"))
                    }
                    Rejoin::Elect(elector) => {
                        tracing::warn!("primary lost: {why}; the group elects a new one");
                        match rejoin_group(elector, r, &upstream, &seq) {
                            Some(resumed) => Ok(resumed),
                            None => break format!("{why}; this member won the election"),
                        }
                    }
                };
                match next {
                    Ok(Resumed::Log(s)) => stream = Box::new(s),
                    Ok(Resumed::State(s, because)) => {
                        tracing::warn!(
                            "the primary cannot resume this follower's log ({because}): it sends a full state \
                             transfer, which this follower restores once it has replayed what it holds"
                        );
                        *upstream.restart.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
                        return;
                    }
                    Err(e) => break e,
                }
            };
            upstream.alive.store(false, Ordering::SeqCst);
            if upstream.clean_end.load(Ordering::SeqCst) {
                tracing::info!("the primary ended its log cleanly");
            } else if upstream.stalled.load(Ordering::SeqCst) {
                tracing::error!("{why}; this follower stands down and will not go live");
            } else if upstream.corrupt.load(Ordering::SeqCst) {
                tracing::error!("{why}: the log stream is corrupt; this follower will not go live on it");
            } else {
                upstream.raise_catch_up();
                tracing::warn!("primary lost: {why}");
            }
        })
        .map_err(|e| ReplicationError::Thread("log-rx", e))?;
    Ok(StreamSource { rx })
}

/// Until the group has a primary: follows the one it elects and returns how the log
/// goes on, or `None` if this member won (its stream ends, and it goes live).
fn rejoin_group(elector: &Elector, r: &Reconnect, upstream: &Upstream, seq: &Sequencer) -> Option<Resumed> {
    loop {
        match elector.find_or_win() {
            Next::Lead { .. } => return None,
            Next::Follow { member, join, epoch } => {
                // Its hello carries the epoch it follows: a primary of an older one is refused.
                let hello = Hello { epoch, ..r.hello };
                match resume(&join, r, &hello, upstream, seq) {
                    Ok(resumed) => {
                        upstream.primary_epoch.store(epoch, Ordering::SeqCst);
                        elector.following(member);
                        return Some(resumed);
                    }
                    Err(e) => tracing::info!("cannot follow member {member} yet: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks the primary at `addr` to resume the log after the exit this follower holds through.
fn resume(
    addr: &str,
    r: &Reconnect,
    hello: &Hello,
    upstream: &Upstream,
    seq: &Sequencer,
) -> Result<Resumed, ReplicationError> {
    let p = seq.covered_through().unwrap_or(0);
    let request = AttachRequest::Resume { epoch: upstream.log_position().epoch, exit_index: p };
    let (stream, reply) =
        handshake::connect_primary(addr, hello, r.within, request, OnRefused::GiveUp, &r.scope, &r.security)?;
    match reply {
        AttachReply::Resume { from, through } if from == p => {
            tracing::info!(from, through, "resumed the log from the primary's backlog: no state transfer");
            upstream.alive.store(true, Ordering::SeqCst);
            Ok(Resumed::Log(stream))
        }
        AttachReply::Resume { from, .. } => {
            Err(ReplicationError::Handshake(format!("the primary resumes after exit {from}, not {p}")))
        }
        AttachReply::State { why } => Ok(Resumed::State(stream, why)),
        AttachReply::Refuse { why } => Err(ReplicationError::Refused(why)),
    }
}

/// On the vCPU thread, once the follower has replayed everything it held: restores the
/// state the primary sends on `conn` into the VM at `at`, and starts `log-rx` on it again.
/// Returns the exit the state was taken at and the new stream.
pub fn restore(
    mut conn: Channel,
    at: AtExit<'_>,
    timing: Timing,
    upstream: Arc<Upstream>,
    stats: Arc<Stats>,
    reconnect: Option<Reconnect>,
) -> Result<(u64, StreamSource), ReplicationError> {
    let t0 = Instant::now();
    // The exit the loop stopped at is half done (KVM finishes its instruction on the
    // next run); finish it so that nothing of it lands on the restored state.
    snapshot::complete_pending_instruction(at.vcpu);
    // A follower restarted on its disk hashed its pages while it waited for the answer,
    // stopped at this exit (anything the instruction just finished changed is caught by
    // the digest). A list hashed at another exit is stale: the guest ran since.
    let prepared = upstream.persist.get().and_then(|p| p.take_prepared());
    let have = prepared.and_then(|p| {
        let hashed_at = p.exit;
        let list = p.still_at(at.index);
        if list.is_none() {
            tracing::warn!(
                hashed_at,
                exit = at.index,
                "the page list hashed at exit {hashed_at} is stale: hashing again"
            );
        }
        list
    });
    let (joined_at, epoch) = match have {
        Some(have) => snapshot::receive_prepared(&mut conn, at.vcpu, at.mem, at.bus, &have)?,
        None => snapshot::receive(&mut conn, at.vcpu, at.mem, at.bus)?,
    };
    if let Some(p) = upstream.persist.get() {
        p.new_history(joined_at, epoch, at.vcpu, at.mem, at.bus)
            .map_err(|e| ReplicationError::Attach(format!("--data-dir: {e}")))?;
    }
    upstream.restarted_at(joined_at, epoch);
    upstream.rejoined();
    tracing::info!(
        exit = joined_at,
        epoch,
        ms = t0.elapsed().as_millis() as u64,
        "state transfer received: following the primary again from exit {joined_at}"
    );
    let source = start(conn, timing, upstream, stats, reconnect)?;
    Ok((joined_at, source))
}

/// Runs until the stream ends; says how.
fn receive_loop(
    stream: &mut dyn Link,
    timing: Timing,
    state: &Upstream,
    stats: &Stats,
    tx: &Sender<Record>,
    seq: &mut Sequencer,
) -> Ended {
    match receive(stream, timing, state, stats, tx, seq) {
        Err(why) => Ended::Broken(why),
        Ok(why) => Ended::Final(why),
    }
}

/// Why this follower may no longer acknowledge its primary, if it may not.
fn fenced(state: &Upstream) -> Option<String> {
    let below = state.fence.get()?.load(Ordering::SeqCst);
    let epoch = state.primary_epoch.load(Ordering::SeqCst).max(state.epoch.load(Ordering::SeqCst));
    (epoch < below).then(|| {
        format!("this member voted for another candidate in epoch {below}: it acknowledges no primary of epoch {epoch}")
    })
}

/// `Err` when the connection broke, `Ok` for every other end.
fn receive(
    stream: &mut dyn Link,
    timing: Timing,
    state: &Upstream,
    stats: &Stats,
    tx: &Sender<Record>,
    seq: &mut Sequencer,
) -> Result<String, String> {
    if let Err(e) = stream.set_read_timeout(Some(timing.failover_timeout)) {
        return Err(format!("cannot set the failover timeout: {e}"));
    }
    let joined_at = seq.covered_through().unwrap_or(0);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 * 1024];
    // An ack at once: the state is restored (or the log resumes), and the primary can
    // tighten its timeout.
    let replayed = state.replayed_through.load(Ordering::SeqCst).min(joined_at);
    if let Some(why) = fenced(state) {
        return Err(why);
    }
    let mut out = Vec::with_capacity(24);
    channel::encode(&Message::Ack(Ack { received_through: joined_at, replayed_through: replayed }), &mut out);
    if let Err(e) = stream.write_all(&out) {
        return Err(format!("sending the first ack failed: {e}"));
    }
    let mut last_heard = Instant::now();
    let mut watch = ProgressWatch::new(replayed, last_heard, timing.failover_timeout);
    let mut last_turn = Instant::now();
    // What the last ack said of the replay, and how long a read waits now (flow::read_wait).
    let mut acked_replayed = replayed;
    let mut wait = timing.failover_timeout;
    loop {
        // A turn of this loop longer than the failover timeout means this process was
        // stopped (SIGSTOP, a frozen host): its replay did not stall, it did not run. The
        // watch starts over rather than blame the replay for the stop.
        if last_turn.elapsed() > timing.failover_timeout {
            let at = state.replayed_through.load(Ordering::Relaxed);
            watch = ProgressWatch::new(at, Instant::now(), timing.failover_timeout);
        }
        last_turn = Instant::now();
        let received = state.received_through.load(Ordering::SeqCst);
        let want = read_wait(received, state.replayed_through.load(Ordering::Relaxed), timing.failover_timeout);
        if want != wait {
            if let Err(e) = stream.set_read_timeout(Some(want)) {
                return Err(format!("cannot set the read timeout: {e}"));
            }
            wait = want;
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err("the primary closed the connection".into()),
            Ok(n) => {
                stats.note_silence(last_heard.elapsed());
                last_heard = Instant::now();
                n
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_heard.elapsed() >= timing.failover_timeout {
                    return Err(format!("no log traffic for {} ms", timing.failover_timeout.as_millis()));
                }
                // Nothing arrived, but the replay moved: a primary held by flow control
                // learns it may go on.
                let replayed = state.replayed_through.load(Ordering::Relaxed).min(received);
                if progress_ack_due(acked_replayed, replayed) {
                    if let Some(why) = fenced(state) {
                        return Err(why);
                    }
                    let mut out = Vec::with_capacity(24);
                    channel::encode(
                        &Message::Ack(Ack { received_through: received, replayed_through: replayed }),
                        &mut out,
                    );
                    if let Err(e) = stream.write_all(&out) {
                        return Err(format!("sending an ack failed: {e}"));
                    }
                    acked_replayed = replayed;
                }
                continue;
            }
            // TLS refused bytes that were changed on the way (or are not TLS): like a
            // corrupt frame, nothing of them reached the VM, and this follower must not
            // go live on a stream that someone tampers with.
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                state.corrupt.store(true, Ordering::SeqCst);
                return Ok(format!("log stream failed the TLS integrity check: {e}"));
            }
            Err(e) => return Err(format!("reading the log failed: {e}")),
        };
        buf.extend_from_slice(&chunk[..n]);
        let (records, decoded) = decode_frames(&mut buf, seq, state);
        let received = seq.covered_through().unwrap_or(joined_at).max(joined_at);
        let replayed = state.replayed_through.load(Ordering::Relaxed).min(received);
        // Ack first: handing records to the vCPU wakes it, and on a busy host it could
        // run before this thread gets to the ack the primary's output is waiting for.
        if let Some(why) = fenced(state) {
            return Err(why);
        }
        let ack = Ack { received_through: received, replayed_through: replayed };
        acked_replayed = replayed;
        state.received_through.store(received, Ordering::SeqCst);
        let disk = state.persist.get();
        // With --fsync always the ack waits for the disk; otherwise the disk waits for the ack.
        if let Some(p) = disk {
            p.disk.append(&records, true);
        }
        let mut out = Vec::with_capacity(24);
        channel::encode(&Message::Ack(ack), &mut out);
        let acked = stream.write_all(&out);
        if let Some(p) = disk {
            p.disk.append(&records, false);
        }
        for record in records {
            if tx.send(record).is_err() {
                return Ok("the VM stopped".into());
            }
        }
        if let Err(why) = decoded {
            state.corrupt.store(true, Ordering::SeqCst);
            return Ok(why);
        }
        if let Err(e) = acked {
            return Err(format!("sending an ack failed: {e}"));
        }
        if seq.is_ended() {
            // The end record is on disk before this follower (and its process) stops.
            if let Some(p) = disk {
                p.disk.sync();
            }
            state.clean_end.store(true, Ordering::SeqCst);
            return Ok("the primary ended its log".into());
        }
        // A replay that stands still while records wait, behind acks that say all is
        // well, would leave the primary protected by a backup that could never take over.
        if let Some(still) = watch.observe(replayed, received > replayed, Instant::now()) {
            state.stalled.store(true, Ordering::SeqCst);
            let why = format!(
                "WATCHDOG: this backup's replay stood still at exit {replayed} for {} ms with records through \
                 exit {received} waiting",
                still.as_millis()
            );
            stats.note_watchdog(&why);
            return Ok(why);
        }
    }
}

mod frames;
use frames::decode_frames;
#[cfg(test)]
mod tests;
