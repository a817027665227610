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
use super::election::elector::{Elector, Next};
use super::election::rules::MemberId;
use super::flow::{progress_ack_due, read_wait, ProgressWatch};
use super::handshake::{self, OnRefused};
use super::{Link, ReplicationError, Timing};
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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod upstream;
pub use upstream::Upstream;

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

impl StreamSource {
    /// A stream that has ended: a member that won the election on its own log replays
    /// nothing more and goes live.
    pub fn ended() -> StreamSource {
        let (_, rx) = unbounded();
        StreamSource { rx }
    }
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
    let (member, resumed) =
        until_led(elector, r.hello, upstream, |_, join, hello| resume(join, r, hello, upstream, seq))?;
    elector.following(member);
    Some(resumed)
}

/// Runs elections until the group has a primary. `None`: this member won. Otherwise
/// `follow` is asked to join the winner (its hello carries the winner's epoch, so a
/// primary of an older one refuses it), and the member and what it got are returned
/// once it succeeds; a failure means another round.
pub fn until_led<T>(
    elector: &Elector,
    hello: Hello,
    upstream: &Upstream,
    mut follow: impl FnMut(MemberId, &str, &Hello) -> Result<T, ReplicationError>,
) -> Option<(MemberId, T)> {
    loop {
        match elector.find_or_win() {
            Next::Lead { .. } => return None,
            Next::Follow { member, join, epoch } => {
                let hello = Hello { epoch, ..hello };
                match follow(member, &join, &hello) {
                    Ok(got) => {
                        upstream.primary_epoch.store(epoch, Ordering::SeqCst);
                        return Some((member, got));
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
