//! The primary's side of the logging channel: one [`FollowerLink`] per
//! follower, and the vCPU's [`GroupSink`] over all of them.
//!
//! ```text
//!   vcpu0 --send_batch--> GroupSink --encode once--> link 1: buffer --write--> TCP
//!                                               \--> link 2: buffer --write--> TCP
//!   log-tx (per link): heartbeat (progress mark) when nothing went out for a while
//!   ack-rx (per link): acks --> group.record_ack --> releaser.poke (output may go)
//! ```
//!
//! A link's buffer is written to the socket when the vCPU produced output
//! (followers must ack it before it can leave), when the buffer fills, and by
//! `log-tx` when the heartbeat is due. Each write carries the group's released
//! mark first if it moved. A follower that goes silent, closes, sends garbage,
//! acks what it was never sent, or whose replay stands still while the vCPU
//! waits for it is dropped: output stops waiting for it at once.
//!
//! Every exit's records also go to the [`Backlog`] (followers or not), so that a
//! follower whose connection broke can resume from it.
use super::backlog::Backlog;
use super::disklog::DiskLog;
use super::flow::{LagGate, ProgressWatch};
use super::group::{Follower, Group};
use super::output_rule::ReplicationMode;
use super::release::SharedReleaser;
use super::{Link, ReplicationError, Timing};
use crate::host::status::Stats;
use crate::host::tls::Channel;
use crate::vm::recorder::{LogSink, RecordError};
use logging_channel::channel::{Message, MessageReader};
use logging_channel::{codec, Record};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use wire::Wire;

/// How long a new follower may take to restore the state before its first ack.
const FIRST_ACK_GRACE: Duration = Duration::from_secs(10);
/// Buffered log bytes that force a write even without output.
const FLUSH_BYTES: usize = 64 * 1024;

/// The log stream to one follower.
pub struct FollowerLink {
    follower: Arc<Follower>,
    group: Arc<Group>,
    releaser: SharedReleaser,
    stats: Arc<Stats>,
    wire: Mutex<Wire>,
    /// The same socket, for its timeouts and shutdown without the wire's lock: the vCPU
    /// may hold that lock in a blocked write, which only a shutdown ends at once.
    control: Channel,
    /// The highest exit written to the socket: an ack beyond it is a lie.
    sent_through: AtomicU64,
    stopped: AtomicBool,
    gate: LagGate,
    /// How long the follower's replay may stand still while the vCPU waits for it.
    watchdog: Duration,
}

/// What a resuming follower gets before the live stream.
pub struct Resume {
    /// The encoded records it lacks.
    pub records: Vec<u8>,
    /// They cover every exit through this one.
    pub through: u64,
    /// They carry standing marks where the epoch changed (a resume across an election).
    pub marked: bool,
}

impl FollowerLink {
    /// Starts `log-tx` (heartbeat) and `ack-rx` for `follower` on its connection; the
    /// follower holds the VM's state at exit `follower.joined_at`. A resuming follower
    /// gets `resume` first: the encoded records it lacks, which cover every exit
    /// through the one given.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        stream: Channel,
        timing: Timing,
        tick_hz: u32,
        follower: Arc<Follower>,
        group: Arc<Group>,
        releaser: SharedReleaser,
        stats: Arc<Stats>,
        resume: Option<Resume>,
    ) -> Result<Arc<FollowerLink>, ReplicationError> {
        // A dead-but-silent follower must not block the vCPU in write() for minutes;
        // until its first ack it is still restoring the state, so it gets longer.
        stream
            .set_write_timeout(Some(FIRST_ACK_GRACE.max(timing.failover_timeout)))
            .map_err(|e| ReplicationError::Handshake(format!("cannot set the send timeout: {e}")))?;
        let read_half = stream.try_clone().map_err(|e| ReplicationError::Thread("ack-rx", e))?;
        let control = stream.try_clone().map_err(|e| ReplicationError::Thread("ack-rx", e))?;
        let joined_at = follower.joined_at;
        let (buf, highest, marked) = match resume {
            Some(r) => (r.records, r.through.max(joined_at), r.marked),
            None => (Vec::with_capacity(FLUSH_BYTES), joined_at, false),
        };
        // Records that carry their own standing marks must not be led by the current
        // epoch's: the follower would take the old epoch's records for the new one's.
        let standing_sent = marked.then(|| (group.epoch(), group.eligible(&follower)));
        // Async never waits for a follower, for its network neither (see `wire`); nor
        // does the test-only broken build, which releases as async does in every mode.
        let nonblocking = group.mode() == ReplicationMode::Async || super::sabotage::unsafe_release_before_ack();
        let link = Arc::new(FollowerLink {
            follower,
            group,
            releaser,
            stats,
            control,
            wire: Mutex::new(Wire::new(stream, buf, highest, standing_sent, nonblocking)),
            sent_through: AtomicU64::new(joined_at),
            stopped: AtomicBool::new(false),
            gate: LagGate::new(timing.max_replay_lag),
            watchdog: timing.failover_timeout,
        });
        // The follower learns its standing before anything else (a resuming one, before
        // the records it lacks).
        let first = {
            let mut w = link.lock();
            link.write_out(&mut w)
        };
        link.check(first);
        let l = link.clone();
        std::thread::Builder::new()
            .name("log-tx".into())
            .spawn(move || {
                // A guest with a timer makes exits at least at its tick rate; a vCPU that
                // makes none for the failover timeout while protected is frozen, and
                // heartbeats from here would hide it. Reported loudly, once per stall.
                let exits = l.stats.exit_index.clone();
                let mut vcpu =
                    ProgressWatch::new(exits.load(Ordering::Relaxed), Instant::now(), timing.failover_timeout);
                let mut reported = false;
                while l.is_live() {
                    if l.lock().pending() > 0 {
                        l.control.wait_writable(timing.heartbeat / 2);
                        l.send_pending();
                    } else {
                        std::thread::sleep(timing.heartbeat / 2);
                    }
                    l.heartbeat(timing.heartbeat);
                    let at = exits.load(Ordering::Relaxed);
                    match vcpu.observe(at, tick_hz > 0, Instant::now()) {
                        Some(still) if !reported => {
                            reported = true;
                            l.stats.vcpu_stalls.fetch_add(1, Ordering::SeqCst);
                            tracing::error!(
                                "WATCHDOG: this primary's vCPU made no progress at exit {at} for {} ms while \
                                 protected (follower {})",
                                still.as_millis(),
                                l.follower.id
                            );
                        }
                        Some(_) => {}
                        None => reported = false,
                    }
                }
            })
            .map_err(|e| ReplicationError::Thread("log-tx", e))?;
        let l = link.clone();
        std::thread::Builder::new()
            .name("ack-rx".into())
            .spawn(move || l.ack_loop(read_half, timing.failover_timeout))
            .map_err(|e| ReplicationError::Thread("ack-rx", e))?;
        Ok(link)
    }

    fn lock(&self) -> MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The follower is still in the group and its stream still runs.
    pub fn is_live(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed) && !self.follower.is_dropped()
    }

    /// The follower this link streams to.
    pub fn follower(&self) -> &Arc<Follower> {
        &self.follower
    }

    /// Appends encoded records whose highest exit (released marks aside) is `highest`;
    /// writes everything buffered if `flush` or the buffer is full.
    fn append_encoded(&self, bytes: &[u8], highest: Option<u64>, flush: bool) {
        if bytes.is_empty() || !self.is_live() {
            return;
        }
        let mut w = self.lock();
        if let Some(h) = highest {
            w.highest = w.highest.max(h);
        }
        w.buf.extend_from_slice(bytes);
        if flush || w.buf.len() >= FLUSH_BYTES {
            let result = self.write_out(&mut w);
            drop(w);
            self.check(result);
        }
    }

    /// Writes the buffer, led by the group's released mark if it moved. Must not drop the
    /// follower itself: the caller holds the wire.
    fn write_out(&self, w: &mut Wire) -> std::io::Result<()> {
        if !self.is_live() {
            w.buf.clear();
            return Ok(());
        }
        // The mark leads the write (nothing may follow an end record), so it may refer
        // only to exits the follower was sent before this write.
        let told = self.sent_through.load(Ordering::SeqCst);
        let released = self.group.released().min(told);
        if released > w.released_sent {
            w.released_sent = released;
            let mut mark = Vec::with_capacity(16);
            codec::encode(&Record::Released { exit_index: released }, &mut mark);
            w.buf.splice(0..0, mark);
        }
        // The epoch moves on when this primary goes on without a follower (the others
        // must claim the new one if it dies, or their claim would lose to its own), and
        // in semi-sync only the synchronous follower may take over.
        let standing = (self.group.epoch(), self.group.eligible(&self.follower));
        if w.standing_sent != Some(standing) {
            w.standing_sent = Some(standing);
            let (epoch, eligible) = standing;
            let mut mark = Vec::with_capacity(24);
            codec::encode(&Record::Standing { exit_index: told, epoch, eligible }, &mut mark);
            w.buf.splice(0..0, mark);
        }
        if w.buf.is_empty() {
            return Ok(());
        }
        // Published before the bytes go: the follower may ack them before write_all even
        // returns here, and an ack beyond `sent_through` is treated as a lie.
        self.sent_through.fetch_max(w.highest, Ordering::SeqCst);
        let n = w.buf.len() as u64;
        let result = w.send();
        self.stats.log_bytes.fetch_add(n, Ordering::Relaxed);
        self.follower.log_bytes.fetch_add(n, Ordering::Relaxed);
        result
    }

    /// Async: sends what waits for the socket (log-tx, once it is writable).
    fn send_pending(&self) {
        let mut w = self.lock();
        let result = if self.is_live() { w.send_pending() } else { Ok(()) };
        drop(w);
        self.check(result);
    }

    fn check(&self, result: std::io::Result<()>) {
        if let Err(e) = result {
            self.lose(&format!("sending the log failed: {e}"));
        }
    }

    /// Drops the follower from the group and closes its connection; output stops
    /// waiting for it.
    pub fn lose(&self, why: &str) {
        self.stopped.store(true, Ordering::SeqCst);
        self.group.drop_follower(&self.follower, why);
        let _ = self.control.shutdown(Shutdown::Both);
        self.releaser.poke();
    }

    /// The heartbeat: if nothing went out for `period`, send what is buffered plus a
    /// progress mark repeating the highest exit sent, so the follower knows we live.
    fn heartbeat(&self, period: Duration) {
        let mut w = self.lock();
        if w.last_write.elapsed() < period {
            return;
        }
        let mark = Record::Progress { exit_index: w.highest };
        codec::encode(&mark, &mut w.buf);
        let result = self.write_out(&mut w);
        drop(w);
        self.check(result);
    }

    /// Flow control at `exit_index` (see [`super::flow`]).
    fn throttle(&self, exit_index: u64) {
        let replayed = || self.follower.replayed();
        let holds = || self.is_live() && self.gate.must_wait(exit_index, replayed());
        if !holds() {
            return;
        }
        // Every exit before this one is complete, but the follower may not know it (the
        // last progress mark can be thousands of exits back). Only the vCPU can tell it,
        // so it does before waiting, or the wait could be for itself.
        let mut mark = Vec::new();
        codec::encode(&Record::Progress { exit_index: exit_index - 1 }, &mut mark);
        self.append_encoded(&mark, Some(exit_index - 1), true);
        let mut watch = ProgressWatch::new(replayed(), Instant::now(), self.watchdog);
        while holds() {
            std::thread::sleep(Duration::from_micros(200));
            if let Some(still) = watch.observe(replayed(), true, Instant::now()) {
                let why = format!(
                    "WATCHDOG: follower {}'s replay stood still at exit {} for {} ms while this primary's vCPU \
                     waited for it at exit {exit_index} (flow control, limit {} exits); dropping it rather than \
                     freezing the guest",
                    self.follower.id,
                    replayed(),
                    still.as_millis(),
                    self.gate.max_lag()
                );
                self.stats.note_watchdog(&why);
                self.lose(&why);
                return;
            }
        }
    }

    /// Flushes what is buffered and ends the stream's write side (a clean stop).
    fn finish(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let mut w = self.lock();
        let live = !self.follower.is_dropped();
        let result = if live { w.drain_all() } else { Ok(()) };
        let _ = w.stream.shutdown(Shutdown::Write);
        drop(w);
        if let Err(e) = result {
            tracing::warn!(follower = self.follower.id, "the end of the log did not reach the follower: {e}");
        }
    }

    /// Reads acks until the follower is gone; generic over [`Link`] so that it runs on
    /// a pipe as well as on TCP.
    fn ack_loop(&self, mut stream: impl Link, timeout: Duration) {
        let why = self.read_acks(&mut stream, timeout);
        if !self.stopped.load(Ordering::SeqCst) {
            self.lose(&why);
        }
        stream.close();
    }

    fn read_acks(&self, stream: &mut impl Link, timeout: Duration) -> String {
        // The first ack comes once the follower has restored the state it was just sent.
        if let Err(e) = stream.set_read_timeout(Some(FIRST_ACK_GRACE.max(timeout))) {
            return format!("cannot set the ack timeout: {e}");
        }
        let mut first = true;
        let mut last_heard = Instant::now();
        let mut reader = MessageReader::new(&mut *stream);
        loop {
            match reader.next_message() {
                Ok(Some(Message::Ack(ack))) => {
                    if std::mem::take(&mut first) {
                        let tightened = reader.get_mut().set_read_timeout(Some(timeout));
                        let tightened = tightened.and(self.control.set_write_timeout(Some(timeout)));
                        if let Err(e) = tightened {
                            return format!("cannot set the failover timeout: {e}");
                        }
                    } else {
                        self.stats.note_silence(last_heard.elapsed());
                    }
                    last_heard = Instant::now();
                    self.stats.acks.fetch_add(1, Ordering::Relaxed);
                    let sent = self.sent_through.load(Ordering::SeqCst);
                    if ack.received_through > sent || ack.replayed_through > ack.received_through {
                        return format!(
                            "it acknowledged receiving exit {} and replaying {}, but was sent only through {sent}: \
                             a follower that acks what it does not hold protects nothing",
                            ack.received_through, ack.replayed_through
                        );
                    }
                    if self.group.record_ack(&self.follower, ack.received_through, ack.replayed_through) {
                        self.releaser.poke();
                    }
                }
                Ok(Some(other)) => return format!("it sent {other:?} where acks were expected"),
                Ok(None) => return "it closed the connection".to_string(),
                Err(logging_channel::CodecError::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    let limit = if first { FIRST_ACK_GRACE.max(timeout) } else { timeout };
                    return format!("no ack for {} ms", limit.as_millis());
                }
                Err(e) => return format!("reading acks failed: {e}"),
            }
        }
    }
}

/// The followers' links and the backlog, shared by the vCPU's sink and the attach path.
pub struct Fanout {
    links: Mutex<Vec<Arc<FollowerLink>>>,
    backlog: Mutex<Backlog>,
}

impl Fanout {
    /// No followers yet, and `backlog` for the log to come.
    pub fn new(backlog: Backlog) -> Arc<Fanout> {
        Arc::new(Fanout { links: Mutex::new(Vec::new()), backlog: Mutex::new(backlog) })
    }

    /// The recent log. The vCPU thread is the only writer, and attaching runs on it
    /// too, so what the attach path reads is complete up to the exit it runs at.
    pub fn backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a follower's link: from the next exit on, it gets every record.
    pub fn add(&self, link: Arc<FollowerLink>) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|l| l.is_live());
        links.push(link);
    }

    fn live(&self) -> Vec<Arc<FollowerLink>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|l| l.is_live()).cloned().collect()
    }
}

/// The vCPU's end of the log stream: every record goes to every live follower.
pub struct GroupSink {
    fanout: Arc<Fanout>,
    group: Arc<Group>,
    stats: Arc<Stats>,
    scratch: Vec<u8>,
    /// With `--data-dir`: the VM's own log on disk.
    disk: Option<Arc<DiskLog>>,
    /// The epoch the disk log was last told its records are in (0: not yet).
    disk_epoch: u64,
}

impl GroupSink {
    /// A sink over `fanout`'s links and backlog; `group` says the epoch of each exit.
    pub fn new(fanout: Arc<Fanout>, group: Arc<Group>, stats: Arc<Stats>) -> GroupSink {
        GroupSink { fanout, group, stats, scratch: Vec::with_capacity(4096), disk: None, disk_epoch: 0 }
    }

    /// Every record also goes to `disk` (`--data-dir`), as a follower's do: the log a
    /// primary restarted later as a follower replays from its checkpoint.
    pub fn with_disk(mut self, disk: Option<Arc<DiskLog>>) -> GroupSink {
        self.disk = disk;
        self
    }

    fn fan_out(&mut self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        let links = self.fanout.live();
        // Progress is what the vCPU sends when it produced output (and the end record
        // ends the log): write at once, the output is waiting for the followers' acks.
        let flush = records.iter().any(|r| matches!(r, Record::Progress { .. } | Record::End { .. }));
        let highest = records.iter().filter(|r| !matches!(r, Record::Released { .. })).map(Record::exit_index).max();
        self.scratch.clear();
        for record in records {
            codec::encode(record, &mut self.scratch);
        }
        // Kept with no follower too: the one whose link is down was dropped, and it
        // resumes from here when it is back.
        // One read per batch: the backlog and the disk mark the same epoch.
        let epoch = self.group.epoch();
        if let Some(exit) = highest {
            self.fanout.backlog().push(exit, epoch, &self.scratch);
        }
        if !links.is_empty() {
            self.stats.log_records.fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        if let Some(disk) = &self.disk {
            // Its records are this epoch's: the disk's log says so, as a follower's stream
            // would (a member restarted on it votes with that epoch).
            if epoch != self.disk_epoch {
                disk.mark_epoch(epoch);
                self.disk_epoch = epoch;
            }
            // --fsync always: on the disk before any follower has them, so before any
            // output they hold can leave. A primary restarted after a crash then holds
            // everything it released, and keeps its vote (`recovery::kept_restart`).
            disk.append(records, true);
        }
        for link in &links {
            link.append_encoded(&self.scratch, highest, flush);
        }
        if let Some(disk) = &self.disk {
            // --fsync async: handed to the disk-log thread (the vCPU never waits for it).
            disk.append(records, false);
        }
    }
}

impl LogSink for GroupSink {
    fn send(&mut self, record: Record) -> Result<(), RecordError> {
        self.fan_out(std::slice::from_ref(&record));
        Ok(())
    }

    fn send_batch(&mut self, records: Vec<Record>) -> Result<(), RecordError> {
        self.fan_out(&records);
        Ok(())
    }

    fn throttle(&mut self, exit_index: u64) {
        for link in self.fanout.live() {
            link.throttle(exit_index);
        }
    }

    fn finish(self: Box<Self>) -> Result<(), RecordError> {
        for link in self.fanout.live() {
            link.finish();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
mod wire;
