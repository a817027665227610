//! Decoding the primary's stream on `log-rx`: frames to records, in order, noting
//! what the follower learns from them (released marks, standing, the kept log).
use super::Upstream;
use logging_channel::codec::{self, Sequencer};
use logging_channel::Record;
use std::sync::atomic::Ordering;

/// Decodes every complete frame in `buf`, in order, checking their order. A
/// malformed or out-of-order frame is an error: the records before it are
/// returned, nothing from it on ever reaches the VM.
pub(super) fn decode_frames(
    buf: &mut Vec<u8>,
    seq: &mut Sequencer,
    state: &Upstream,
) -> (Vec<Record>, Result<(), String>) {
    let mut used = 0;
    let mut records = Vec::new();
    let result = loop {
        match codec::decode(&buf[used..]) {
            Ok(Some((record, n))) => {
                if let Err(e) = seq.check(&record) {
                    break Err(format!("log stream out of order: {e}"));
                }
                used += n;
                match record {
                    Record::Released { exit_index } => {
                        state.released.fetch_max(exit_index, Ordering::SeqCst);
                    }
                    Record::Standing { exit_index, epoch, eligible } => {
                        let was = state.eligible.swap(eligible, Ordering::SeqCst);
                        if state.announce_epoch(epoch, exit_index) || was != eligible {
                            let may = if eligible { "may" } else { "may not" };
                            tracing::info!(
                                epoch,
                                eligible,
                                "the primary says: epoch {epoch}; this follower {may} take over"
                            );
                        }
                    }
                    _ => {
                        if let Some(b) = state.backlog.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                            b.push(record.exit_index(), state.epoch.load(Ordering::SeqCst), &buf[used - n..used]);
                        }
                    }
                }
                records.push(record);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("log stream undecodable: {e}")),
        }
    };
    buf.drain(..used);
    (records, result)
}
