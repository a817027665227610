//! Reading a log back, exit by exit, from a file or from the primary's stream,
//! and noticing the first place the guest does something else.
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
    /// Where the records come from failed for a reason of its own (a follower that could
    /// not rejoin its primary after replaying its disk).
    #[error("{0}")]
    Source(String),
}

/// Where records come from. `Ok(None)`: the stream has ended (and nothing more will come).
pub trait RecordSource {
    fn next_record(&mut self) -> Result<Option<Record>, ReplayError>;

    /// The records ended because a state transfer replaces the VM's state where the
    /// replay stands (a follower restarted on its disk whose primary could not resume
    /// its log): the replay stops at this exit and applies nothing more of it. The
    /// joiner's page list was hashed from memory as it stood when the records ran out,
    /// so the VM must not run on before the state arrives (issue 11).
    fn state_follows(&self) -> bool {
        false
    }
}

impl<R: Read> RecordSource for LogReader<R> {
    fn next_record(&mut self) -> Result<Option<Record>, ReplayError> {
        Ok(LogReader::next_record(self)?)
    }
}

impl<S: RecordSource + ?Sized> RecordSource for Box<S> {
    fn next_record(&mut self) -> Result<Option<Record>, ReplayError> {
        (**self).next_record()
    }

    fn state_follows(&self) -> bool {
        (**self).state_follows()
    }
}

/// What the log says about one exit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AtExit {
    pub entry: Option<(ExitSig, Vec<Event>)>,
    pub digests: Vec<(DigestScope, Hash)>,
    pub end: Option<(EndReason, Option<Hash>)>,
    /// The source ran dry before this exit was known complete: the log ends here.
    pub stream_ended: bool,
}

pub struct Replayer<S: RecordSource> {
    source: S,
    peeked: Option<Record>,
    ended: bool,
    last_index: u64,
}

impl<S: RecordSource> Replayer<S> {
    pub fn new(source: S) -> Self {
        Replayer { source, peeked: None, ended: false, last_index: 0 }
    }

    fn peek(&mut self) -> Result<Option<&Record>, ReplayError> {
        if self.peeked.is_none() && !self.ended {
            self.peeked = self.source.next_record()?;
            match &self.peeked {
                Some(r) => self.last_index = self.last_index.max(r.exit_index()),
                None => self.ended = true,
            }
        }
        Ok(self.peeked.as_ref())
    }

    /// Everything the log holds for exit `index`. Blocks (on a live stream) until the
    /// exit is known complete: a record for a later exit, or progress for this one.
    pub fn at_exit(&mut self, index: u64) -> Result<AtExit, ReplayError> {
        let mut at = AtExit::default();
        loop {
            let Some(record) = self.peek()? else {
                at.stream_ended = true;
                if self.source.state_follows() {
                    // Applying this exit's entry would run the guest on from memory the
                    // joiner has already described to its primary: the state replaces it.
                    at.entry = None;
                    at.digests.clear();
                }
                return Ok(at);
            };
            let rec_index = record.exit_index();
            // Released and standing marks refer to exits already covered: never ahead of replay.
            let side_mark = matches!(record, Record::Released { .. } | Record::Standing { .. });
            let stale_mark = (side_mark || matches!(record, Record::Progress { .. })) && rec_index < index;
            if rec_index > index && !side_mark {
                return Ok(at);
            }
            if rec_index < index && !stale_mark {
                return Err(ReplayError::Divergence {
                    index: rec_index,
                    what: format!(
                        "the log has a {} record for exit {rec_index}, which replay passed without seeing it",
                        record.name()
                    ),
                });
            }
            let Some(record) = self.peeked.take() else { continue };
            match record {
                Record::Entry { sig, events, .. } => at.entry = Some((sig, events)),
                Record::Digest { scope, hash, .. } => at.digests.push((scope, hash)),
                Record::Progress { exit_index } if exit_index == index => return Ok(at),
                // Released and standing marks matter only at go-live; `log-rx` keeps the latest.
                Record::Progress { .. } | Record::Released { .. } | Record::Standing { .. } => {}
                Record::End { reason, state_digest, .. } => {
                    at.end = Some((reason, state_digest));
                    return Ok(at);
                }
            }
        }
    }

    /// The highest exit index any record so far referred to.
    pub fn last_index(&self) -> u64 {
        self.last_index
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
