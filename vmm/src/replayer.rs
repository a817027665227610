//! Feeding a recorded log back to a fresh VM, and noticing the first place it
//! does something else.
use logging_channel::{DigestScope, EndReason, Event, ExitSig, FileError, Hash, LogReader, Record};
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the log is unreadable: {0}")]
    Log(#[from] FileError),
    #[error("replay diverged at exit {index}: {what}")]
    Divergence { index: u64, what: String },
    #[error("the log ends at exit {end} ({reason:?}); it cannot be replayed to exit {wanted}")]
    PastEnd { end: u64, reason: EndReason, wanted: u64 },
    #[error("the log ends without an end record after exit {last}: it was cut short (a crash while recording, or a truncated copy)")]
    NoEnd { last: u64 },
}

/// What the log says about one exit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AtExit {
    pub entry: Option<(ExitSig, Vec<Event>)>,
    pub digests: Vec<(DigestScope, Hash)>,
    pub end: Option<(EndReason, Option<Hash>)>,
}

pub struct Replayer<R: Read> {
    reader: LogReader<R>,
    peeked: Option<Record>,
    last_index: u64,
}

impl<R: Read> Replayer<R> {
    pub fn new(reader: LogReader<R>) -> Self {
        Replayer { reader, peeked: None, last_index: 0 }
    }

    fn peek(&mut self) -> Result<Option<&Record>, ReplayError> {
        if self.peeked.is_none() {
            self.peeked = self.reader.next_record()?;
            match &self.peeked {
                Some(r) => self.last_index = r.exit_index(),
                None => return Err(ReplayError::NoEnd { last: self.last_index }),
            }
        }
        Ok(self.peeked.as_ref())
    }

    /// Everything the log holds for exit `index`. Records for earlier exits would mean
    /// the log skipped backwards, which the reader already refuses.
    pub fn at_exit(&mut self, index: u64) -> Result<AtExit, ReplayError> {
        let mut at = AtExit::default();
        while let Some(record) = self.peek()? {
            let rec_index = record.exit_index();
            if rec_index > index {
                break;
            }
            if rec_index < index {
                return Err(ReplayError::Divergence {
                    index: rec_index,
                    what: format!(
                        "the log has a {} record for exit {rec_index}, which replay passed without seeing it",
                        record.name()
                    ),
                });
            }
            let Some(record) = self.peeked.take() else {
                break;
            };
            match record {
                Record::Entry { sig, events, .. } => at.entry = Some((sig, events)),
                Record::Digest { scope, hash, .. } => at.digests.push((scope, hash)),
                Record::End { reason, state_digest, .. } => {
                    at.end = Some((reason, state_digest));
                    break;
                }
                Record::Progress { .. } | Record::Released { .. } => {}
            }
        }
        Ok(at)
    }
}

/// Compares what the guest did at an exit with what the log says it did.
pub fn check_sig(index: u64, logged: &ExitSig, actual: &ExitSig) -> Result<(), ReplayError> {
    if logged == actual {
        return Ok(());
    }
    Err(ReplayError::Divergence {
        index,
        what: format!(
            "the log expects {} at {:#x} (data {:#x}, registers {:016x}); the guest did {} at {:#x} (data {:#x}, registers {:016x})",
            logged.kind, logged.addr, logged.data, logged.regs_hash, actual.kind, actual.addr, actual.data, actual.regs_hash
        ),
    })
}
