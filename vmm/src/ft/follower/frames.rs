//! Decoding the primary's stream on `log-rx`: frames to records, in order, noting
//! what the follower learns from them (released marks, standing, the kept log). A
//! packed frame (a resume's records, [`logging_channel::pack`]) is unpacked first.
use super::Upstream;
use logging_channel::codec::{self, Sequencer};
use logging_channel::pack;
use logging_channel::Record;
use std::sync::atomic::Ordering;

/// Decodes every complete frame in `buf`, in order, checking their order; a packed
/// frame (a resume's records, [`logging_channel::pack`]) is unpacked and its records
/// taken one by one. A malformed or out-of-order frame is an error: the records before
/// it are returned, nothing from it on ever reaches the VM.
pub(super) fn decode_frames(
    buf: &mut Vec<u8>,
    seq: &mut Sequencer,
    state: &Upstream,
) -> (Vec<Record>, Result<(), String>) {
    let mut used = 0;
    let mut records = Vec::new();
    let result = loop {
        if pack::is_packed(&buf[used..]) {
            match pack::split_packed(&buf[used..]) {
                Ok(Some((frames, n))) => {
                    used += n;
                    if let Err(e) = take_all(&frames, seq, state, &mut records) {
                        break Err(e);
                    }
                    continue;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("log stream undecodable: {e}")),
            }
        }
        match codec::decode(&buf[used..]) {
            Ok(Some((record, n))) => {
                if let Err(e) = take(record, &buf[used..used + n], seq, state, &mut records) {
                    break Err(e);
                }
                used += n;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("log stream undecodable: {e}")),
        }
    };
    buf.drain(..used);
    (records, result)
}

/// Takes every record of `frames` (whole frames, unpacked).
fn take_all(frames: &[u8], seq: &mut Sequencer, state: &Upstream, records: &mut Vec<Record>) -> Result<(), String> {
    let mut at = 0;
    while at < frames.len() {
        let (record, n) = codec::decode(&frames[at..])
            .map_err(|e| format!("log stream undecodable (in a packed frame): {e}"))?
            .ok_or_else(|| "log stream undecodable: a packed frame ends inside a record".to_string())?;
        take(record, &frames[at..at + n], seq, state, records)?;
        at += n;
    }
    Ok(())
}

/// Checks `record`'s order, acts on the marks and keeps the rest (and its `frame`, in the
/// backlog if this follower keeps one) for the VM.
fn take(
    record: Record,
    frame: &[u8],
    seq: &mut Sequencer,
    state: &Upstream,
    records: &mut Vec<Record>,
) -> Result<(), String> {
    seq.check(&record).map_err(|e| format!("log stream out of order: {e}"))?;
    match record {
        Record::Released { exit_index } => {
            state.released.fetch_max(exit_index, Ordering::SeqCst);
        }
        Record::Standing { exit_index, epoch, eligible } => {
            let was = state.eligible.swap(eligible, Ordering::SeqCst);
            if state.announce_epoch(epoch, exit_index) || was != eligible {
                let may = if eligible { "may" } else { "may not" };
                tracing::info!(epoch, eligible, "the primary says: epoch {epoch}; this follower {may} take over");
            }
        }
        _ => {
            if let Some(b) = state.backlog.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                b.push(record.exit_index(), state.epoch.load(Ordering::SeqCst), frame);
            }
        }
    }
    records.push(record);
    Ok(())
}
