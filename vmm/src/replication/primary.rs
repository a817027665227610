//! The primary's side of the logging channel: `log-tx` streams records (and a
//! heartbeat) to the backup; `ack-rx` reads its acks. If the backup goes
//! silent, closes, or the stream fails, the primary drops it and runs
//! unprotected: held output is released and nothing more is logged.
use super::{PairState, ReplicationError, Timing};
use crate::recorder::{LogSink, RecordError};
use crate::release::Control;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use logging_channel::channel::{Message, MessageReader};
use logging_channel::{codec, Record};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Records in flight between the vCPU and `log-tx`; a full queue stalls the vCPU.
const QUEUE_RECORDS: usize = 16 * 1024;
/// How far the backup's replay may trail the primary, in exits, before the vCPU waits.
const MAX_REPLAY_LAG: u64 = 256 * 1024;
/// Bytes `log-tx` gathers into one write.
const BATCH_BYTES: usize = 256 * 1024;

/// Drops the backup: everything held is released and the VM runs unprotected.
pub fn lose_backup(state: &PairState, repl_status: &AtomicU64, wake: &Sender<Control>, why: &str) {
    if state.protected.swap(false, Ordering::SeqCst) {
        repl_status.store(0, Ordering::SeqCst);
        tracing::warn!("backup lost ({why}): this primary now runs UNPROTECTED");
        let _ = wake.try_send(Control::Wake);
    }
}

/// The vCPU's end of the stream.
pub struct StreamSink {
    tx: Option<Sender<Record>>,
    state: Arc<PairState>,
    log_tx: Option<JoinHandle<()>>,
}

/// Starts `log-tx` and `ack-rx` on a paired connection. `wake` tells the output
/// thread that acks moved (or that the backup is gone).
pub fn start(
    stream: TcpStream,
    timing: Timing,
    state: Arc<PairState>,
    repl_status: Arc<AtomicU64>,
    wake: Sender<Control>,
) -> Result<(StreamSink, Sender<Record>), ReplicationError> {
    let (tx, rx) = bounded::<Record>(QUEUE_RECORDS);
    let write_half = stream.try_clone().map_err(|e| ReplicationError::Thread("log-tx", e))?;
    let (st, rs, wk) = (state.clone(), repl_status.clone(), wake.clone());
    let log_tx = std::thread::Builder::new()
        .name("log-tx".into())
        .spawn(move || send_loop(write_half, &rx, timing.heartbeat, &st, &rs, &wk))
        .map_err(|e| ReplicationError::Thread("log-tx", e))?;
    let st = state.clone();
    std::thread::Builder::new()
        .name("ack-rx".into())
        .spawn(move || ack_loop(stream, timing.failover_timeout, &st, &repl_status, &wake))
        .map_err(|e| ReplicationError::Thread("ack-rx", e))?;
    let sink = StreamSink { tx: Some(tx.clone()), state, log_tx: Some(log_tx) };
    Ok((sink, tx))
}

impl LogSink for StreamSink {
    fn send(&mut self, record: Record) -> Result<(), RecordError> {
        if !self.state.protected.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(tx) = &self.tx {
            // A full queue blocks here: the backup is behind and the guest waits for it.
            let _ = tx.send(record);
        }
        Ok(())
    }

    fn throttle(&mut self, exit_index: u64) {
        while self.state.protected.load(Ordering::Relaxed)
            && exit_index.saturating_sub(self.state.replayed_through.load(Ordering::Relaxed)) > MAX_REPLAY_LAG
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn finish(mut self: Box<Self>) -> Result<(), RecordError> {
        self.tx.take();
        if let Some(h) = self.log_tx.take() {
            let _ = h.join();
        }
        Ok(())
    }
}

fn send_loop(
    mut stream: TcpStream,
    rx: &Receiver<Record>,
    heartbeat: Duration,
    state: &PairState,
    repl_status: &AtomicU64,
    wake: &Sender<Control>,
) {
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    let mut highest = 0u64;
    loop {
        buf.clear();
        match rx.recv_timeout(heartbeat) {
            Ok(record) => {
                note(&record, &mut highest);
                codec::encode(&record, &mut buf);
                while buf.len() < BATCH_BYTES {
                    let Ok(more) = rx.try_recv() else { break };
                    note(&more, &mut highest);
                    codec::encode(&more, &mut buf);
                }
            }
            // Nothing to say: a progress mark for the last exit sent is the heartbeat.
            Err(RecvTimeoutError::Timeout) => codec::encode(&Record::Progress { exit_index: highest }, &mut buf),
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if !state.protected.load(Ordering::Relaxed) {
            continue; // keep draining so the vCPU never blocks on a dead backup
        }
        if let Err(e) = stream.write_all(&buf) {
            lose_backup(state, repl_status, wake, &format!("sending the log failed: {e}"));
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

fn note(record: &Record, highest: &mut u64) {
    if !matches!(record, Record::Released { .. }) {
        *highest = (*highest).max(record.exit_index());
    }
}

fn ack_loop(stream: TcpStream, timeout: Duration, state: &PairState, repl_status: &AtomicU64, wake: &Sender<Control>) {
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        lose_backup(state, repl_status, wake, &format!("cannot set the ack timeout: {e}"));
        return;
    }
    let mut reader = MessageReader::new(&stream);
    loop {
        let why = match reader.next_message() {
            Ok(Some(Message::Ack(ack))) => {
                state.acked_through.fetch_max(ack.received_through, Ordering::SeqCst);
                state.replayed_through.fetch_max(ack.replayed_through, Ordering::SeqCst);
                let _ = wake.try_send(Control::Wake);
                continue;
            }
            Ok(Some(other)) => format!("the backup sent {other:?} where acks were expected"),
            Ok(None) => "the backup closed the connection".to_string(),
            Err(logging_channel::CodecError::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                format!("no ack for {} ms", timeout.as_millis())
            }
            Err(e) => format!("reading acks failed: {e}"),
        };
        lose_backup(state, repl_status, wake, &why);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
}
