//! The primary's side of the logging channel.
//!
//! Records are appended to a shared [`LogWire`] by the vCPU (and released
//! marks by whoever releases output). The wire is written to the socket when
//! the vCPU produced output (the backup must ack it before it can leave), when
//! the buffer fills, and by `log-tx` when the heartbeat is due. `ack-rx` reads
//! acks and calls back at once, so held output leaves without another thread
//! hop. If the backup goes silent, closes, or the stream fails, the primary
//! drops it and runs unprotected: held output is released, nothing more logged.
use super::flow::{LagGate, ProgressWatch};
use super::{PairState, ReplicationError, Timing};
use crate::host::arbiter::Arbiter;
use crate::host::status::Stats;
use crate::vm::live::VmEvent;
use crate::vm::recorder::{LogSink, RecordError};
use crossbeam_channel::Sender;
use logging_channel::channel::{Message, MessageReader};
use logging_channel::{codec, Record};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a new backup may take to restore the state before its first ack.
const FIRST_ACK_GRACE: Duration = Duration::from_secs(10);
/// Buffered log bytes that force a write even without output.
const FLUSH_BYTES: usize = 64 * 1024;

/// Called when acks move or the backup is lost: held output may go now.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// Everything the primary's threads share about the pairing.
pub struct Shared {
    pub state: Arc<PairState>,
    pub repl_status: Arc<AtomicU64>,
    pub stats: Arc<Stats>,
    pub on_change: OnChange,
    /// Decides who goes on alone; without one, a partition can cause split brain.
    pub arbiter: Option<Arc<dyn Arbiter>>,
    /// Where to tell the vCPU to halt when the arbiter says the backup went live.
    pub events: Sender<VmEvent>,
}

impl Shared {
    /// Drops the backup: everything held is released and the VM runs unprotected —
    /// unless an arbiter says the backup won this epoch, in which case this VM halts
    /// and releases nothing.
    pub fn lose_backup(&self, why: &str) {
        if !self.state.protected.load(Ordering::SeqCst) || self.state.deciding.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!("backup lost ({why})");
        if let Some(arbiter) = &self.arbiter {
            let epoch = self.stats.epoch.load(Ordering::SeqCst);
            match arbiter.claim(epoch, "primary") {
                Ok(true) => tracing::info!(epoch, arbiter = %arbiter.describe(), "won the arbiter: going on alone"),
                Ok(false) => return self.halt(format!("the backup won the arbiter for epoch {epoch} and is live")),
                Err(e) => return self.halt(format!("cannot reach the arbiter ({e})")),
            }
        }
        self.state.protected.store(false, Ordering::SeqCst);
        self.repl_status.store(0, Ordering::SeqCst);
        tracing::warn!("this primary now runs UNPROTECTED");
        (self.on_change)();
    }

    fn halt(&self, why: String) {
        self.state.halted.store(true, Ordering::SeqCst);
        tracing::error!("{why}: this primary HALTS without releasing held output");
        let _ = self.events.send(VmEvent::Halt(why));
    }
}

struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Highest exit index appended (released marks aside): a heartbeat repeats it.
    highest: u64,
    last_write: Instant,
}

/// The log's way to the backup, shared by the vCPU, the releaser and `log-tx`.
#[derive(Clone)]
pub struct LogWire {
    wire: Arc<Mutex<Wire>>,
    shared: Arc<Shared>,
}

impl LogWire {
    fn lock(&self) -> MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `record`; writes everything buffered if `flush` or the buffer is full.
    pub fn append(&self, record: &Record, flush: bool) {
        self.append_all(std::slice::from_ref(record), flush)
    }

    /// Appends `records` under one lock, so no heartbeat lands between them.
    pub fn append_all(&self, records: &[Record], flush: bool) {
        if records.is_empty() || !self.shared.state.protected.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.lock();
        for record in records {
            if !matches!(record, Record::Released { .. }) {
                w.highest = w.highest.max(record.exit_index());
            }
            codec::encode(record, &mut w.buf);
        }
        self.shared.stats.log_records.fetch_add(records.len() as u64, Ordering::Relaxed);
        if flush || w.buf.len() >= FLUSH_BYTES {
            let result = self.write_out(&mut w);
            drop(w);
            self.check(result);
        }
    }

    /// Writes the buffer. Must not drop the backup itself: the caller holds the wire,
    /// and dropping the backup releases output, which may append to the wire.
    fn write_out(&self, w: &mut Wire) -> std::io::Result<()> {
        if w.buf.is_empty() || !self.shared.state.protected.load(Ordering::Relaxed) {
            w.buf.clear();
            return Ok(());
        }
        self.shared.stats.log_bytes.fetch_add(w.buf.len() as u64, Ordering::Relaxed);
        let Wire { stream, buf, .. } = w;
        let result = stream.write_all(buf);
        buf.clear();
        w.last_write = Instant::now();
        result
    }

    fn check(&self, result: std::io::Result<()>) {
        if let Err(e) = result {
            self.shared.lose_backup(&format!("sending the log failed: {e}"));
        }
    }

    /// The heartbeat: if nothing went out for `period`, send what is buffered plus a
    /// progress mark repeating the highest exit sent, so the backup knows we live.
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
}

/// The vCPU's end of the stream.
pub struct StreamSink {
    wire: LogWire,
    stopped: Arc<AtomicBool>,
    gate: LagGate,
    /// How long the backup's replay may stand still while the vCPU waits for it.
    watchdog: Duration,
}

/// Starts `log-tx` (heartbeat) and `ack-rx` on a paired connection whose backup
/// holds the VM's state at exit `joined_at` (0 at boot) and replays from the next.
pub fn start(
    stream: TcpStream,
    timing: Timing,
    joined_at: u64,
    shared: Shared,
) -> Result<(StreamSink, LogWire), ReplicationError> {
    // A dead-but-silent backup must not block the vCPU in write() for minutes; until
    // its first ack the backup is still restoring the state, so it gets longer.
    stream
        .set_write_timeout(Some(FIRST_ACK_GRACE.max(timing.failover_timeout)))
        .map_err(|e| ReplicationError::Handshake(format!("cannot set the send timeout: {e}")))?;
    let read_half = stream.try_clone().map_err(|e| ReplicationError::Thread("ack-rx", e))?;
    let shared = Arc::new(shared);
    let wire = LogWire {
        wire: Arc::new(Mutex::new(Wire {
            stream,
            buf: Vec::with_capacity(FLUSH_BYTES),
            highest: joined_at,
            last_write: Instant::now(),
        })),
        shared: shared.clone(),
    };
    let stopped = Arc::new(AtomicBool::new(false));
    let (w, stop) = (wire.clone(), stopped.clone());
    std::thread::Builder::new()
        .name("log-tx".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) && w.shared.state.protected.load(Ordering::Relaxed) {
                std::thread::sleep(timing.heartbeat / 2);
                w.heartbeat(timing.heartbeat);
            }
        })
        .map_err(|e| ReplicationError::Thread("log-tx", e))?;
    std::thread::Builder::new()
        .name("ack-rx".into())
        .spawn(move || ack_loop(read_half, timing.failover_timeout, &shared))
        .map_err(|e| ReplicationError::Thread("ack-rx", e))?;
    let sink = StreamSink {
        wire: wire.clone(),
        stopped,
        gate: LagGate::new(timing.max_replay_lag),
        watchdog: timing.failover_timeout,
    };
    Ok((sink, wire))
}

impl LogSink for StreamSink {
    fn send(&mut self, record: Record) -> Result<(), RecordError> {
        // Progress is what the vCPU sends when it produced output (and the end record
        // ends the log): write at once, the output is waiting for the backup's ack.
        let flush = matches!(record, Record::Progress { .. } | Record::End { .. });
        self.wire.append(&record, flush);
        Ok(())
    }

    fn send_batch(&mut self, records: Vec<Record>) -> Result<(), RecordError> {
        let flush = records.iter().any(|r| matches!(r, Record::Progress { .. } | Record::End { .. }));
        self.wire.append_all(&records, flush);
        Ok(())
    }

    fn throttle(&mut self, exit_index: u64) {
        let shared = &self.wire.shared;
        let state = &shared.state;
        let replayed = || state.replayed_through.load(Ordering::SeqCst);
        let holds = || state.protected.load(Ordering::SeqCst) && self.gate.must_wait(exit_index, replayed());
        if !holds() {
            return;
        }
        // Every exit before this one is complete, but the backup may not know it (the last
        // progress mark can be thousands of exits back). Only this thread can tell it, so
        // tell it before waiting, or the wait could be for itself.
        self.wire.append(&Record::Progress { exit_index: exit_index - 1 }, true);
        let mut watch = ProgressWatch::new(replayed(), Instant::now(), self.watchdog);
        while holds() {
            std::thread::sleep(Duration::from_micros(200));
            if let Some(still) = watch.observe(replayed(), true, Instant::now()) {
                let why = format!(
                    "WATCHDOG: the backup's replay stood still at exit {} for {} ms while this primary's vCPU \
                     waited for it at exit {exit_index} (flow control, limit {} exits); dropping the backup \
                     rather than freezing the guest",
                    replayed(),
                    still.as_millis(),
                    self.gate.max_lag()
                );
                shared.stats.note_watchdog(&why);
                shared.lose_backup(&why);
                return;
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<(), RecordError> {
        self.stopped.store(true, Ordering::SeqCst);
        let mut w = self.wire.lock();
        let result = self.wire.write_out(&mut w);
        let _ = w.stream.shutdown(Shutdown::Write);
        drop(w);
        self.wire.check(result);
        Ok(())
    }
}

fn ack_loop(stream: TcpStream, timeout: Duration, shared: &Shared) {
    // The first ack comes once the backup has restored the state it was just sent.
    if let Err(e) = stream.set_read_timeout(Some(FIRST_ACK_GRACE.max(timeout))) {
        shared.lose_backup(&format!("cannot set the ack timeout: {e}"));
        return;
    }
    let mut first = true;
    let state = &shared.state;
    let mut reader = MessageReader::new(&stream);
    let mut last_heard = Instant::now();
    loop {
        let why = match reader.next_message() {
            Ok(Some(Message::Ack(ack))) => {
                if std::mem::take(&mut first) {
                    let tightened = stream.set_read_timeout(Some(timeout)).and(stream.set_write_timeout(Some(timeout)));
                    if let Err(e) = tightened {
                        shared.lose_backup(&format!("cannot set the failover timeout: {e}"));
                        return;
                    }
                } else {
                    shared.stats.note_silence(last_heard.elapsed());
                }
                last_heard = Instant::now();
                let before = state.acked_through.fetch_max(ack.received_through, Ordering::SeqCst);
                state.replayed_through.fetch_max(ack.replayed_through, Ordering::SeqCst);
                if ack.received_through > before {
                    (shared.on_change)();
                }
                continue;
            }
            Ok(Some(other)) => format!("the backup sent {other:?} where acks were expected"),
            Ok(None) => "the backup closed the connection".to_string(),
            Err(logging_channel::CodecError::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                format!("no ack for {} ms", if first { FIRST_ACK_GRACE } else { timeout }.as_millis())
            }
            Err(e) => format!("reading acks failed: {e}"),
        };
        shared.lose_backup(&why);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
}

#[cfg(test)]
mod tests {
    //! Flow control on a loopback connection, with the test playing the backup: no KVM.
    use super::*;
    use crate::ft::flow::DEFAULT_MAX_REPLAY_LAG;
    use crate::host::status::Role;
    use crate::vm::recorder::LogSink;
    use logging_channel::channel::{self, Ack};
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// How the pretend backup reports replay: as far as it was told (a healthy backup),
    /// or never past where it joined (a frozen one).
    #[derive(Clone, Copy)]
    enum Replays {
        AsToldComplete,
        Never,
    }

    struct Rig {
        sink: StreamSink,
        state: Arc<PairState>,
        stats: Arc<Stats>,
    }

    fn rig(joined_at: u64, max_replay_lag: u64, replays: Replays) -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let backup = TcpStream::connect(addr).expect("connect");
        let (primary_end, _) = listener.accept().expect("accept");
        std::thread::spawn(move || pretend_backup(backup, joined_at, replays));
        let state = PairState::new_protected(joined_at);
        let stats = Stats::new(Role::Primary);
        let (events, _events_rx) = crossbeam_channel::unbounded();
        let shared = Shared {
            state: state.clone(),
            repl_status: Arc::new(AtomicU64::new(0)),
            stats: stats.clone(),
            on_change: Arc::new(|| {}),
            arbiter: None,
            events,
        };
        let timing = Timing {
            heartbeat: Duration::from_millis(5),
            failover_timeout: Duration::from_millis(300),
            max_replay_lag,
        };
        let (sink, _wire) = start(primary_end, timing, joined_at, shared).expect("start");
        Rig { sink, state, stats }
    }

    /// Acks every complete exit it is told about on receipt, and reports replay per `replays`.
    fn pretend_backup(mut stream: TcpStream, joined_at: u64, replays: Replays) {
        let ack = |stream: &mut TcpStream, received: u64| {
            let replayed = match replays {
                Replays::AsToldComplete => received,
                Replays::Never => joined_at,
            };
            let mut out = Vec::new();
            channel::encode(&Message::Ack(Ack { received_through: received, replayed_through: replayed }), &mut out);
            stream.write_all(&out)
        };
        if ack(&mut stream, joined_at).is_err() {
            return;
        }
        let (mut buf, mut chunk, mut covered) = (Vec::new(), [0u8; 4096], joined_at);
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
            while let Ok(Some((record, used))) = codec::decode(&buf) {
                buf.drain(..used);
                if let Record::Progress { exit_index } = record {
                    covered = covered.max(exit_index);
                }
            }
            if ack(&mut stream, covered).is_err() {
                return;
            }
        }
    }

    /// Runs `throttle(exit)` on its own thread; `None` if it is still waiting after `limit`.
    fn throttle_within(mut rig: Rig, exit: u64, limit: Duration) -> Option<(Duration, Rig)> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            rig.sink.throttle(exit);
            let _ = tx.send((t0.elapsed(), rig));
        });
        rx.recv_timeout(limit).ok()
    }

    #[test]
    fn a_backup_that_joined_past_the_lag_limit_does_not_freeze_the_primary() {
        // Issue 18: joined at exit 1,000,000 with positions from 0, the vCPU waited forever.
        let rig = rig(1_000_000, DEFAULT_MAX_REPLAY_LAG, Replays::AsToldComplete);
        let (waited, rig) = throttle_within(rig, 1_000_001, Duration::from_secs(2)).expect("throttle returned");
        assert!(waited < Duration::from_millis(50), "waited {waited:?} at the first exit after the join");
        assert!(rig.state.protected.load(Ordering::SeqCst));
    }

    #[test]
    fn a_primary_past_the_limit_tells_the_backup_what_is_complete_and_waits_only_for_its_replay() {
        // Nothing was logged for exits 1..=99 (no events, no output), so only the waiting
        // vCPU can tell the backup they are complete.
        let rig = rig(0, 10, Replays::AsToldComplete);
        let (waited, rig) = throttle_within(rig, 100, Duration::from_secs(2)).expect("throttle returned");
        assert!(rig.state.protected.load(Ordering::SeqCst), "a healthy backup must not be dropped");
        assert!(rig.state.replayed_through.load(Ordering::SeqCst) >= 90);
        assert_eq!(rig.stats.watchdog_trips.load(Ordering::SeqCst), 0);
        assert!(waited < Duration::from_millis(300), "waited {waited:?}");
    }

    #[test]
    fn a_backup_whose_replay_stands_still_is_dropped_by_the_watchdog_instead_of_freezing_the_guest() {
        let rig = rig(0, 10, Replays::Never);
        let (waited, rig) = throttle_within(rig, 100, Duration::from_secs(3)).expect("the watchdog ended the wait");
        assert!(waited >= Duration::from_millis(300), "dropped after {waited:?}, before the failover timeout");
        assert!(!rig.state.protected.load(Ordering::SeqCst), "the frozen backup is dropped");
        assert_eq!(rig.stats.watchdog_trips.load(Ordering::SeqCst), 1);
        assert!(rig.stats.snapshot().contains("WATCHDOG"), "status says why");
    }
}
