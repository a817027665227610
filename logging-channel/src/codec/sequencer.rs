//! Ordering rules of a log (`docs/design.md`, "The log").

use super::CodecError;
use crate::record::Record;

const RULE_ENTRIES_INCREASE: &str = "entry exit indices must strictly increase";
const RULE_PROGRESS_COVERS: &str = "a progress mark promised nothing more would happen up to its exit";
const RULE_NO_GOING_BACK: &str = "no record may refer to an exit before the highest one seen";
const RULE_END_IS_LAST: &str = "nothing may follow the end record";
const RULE_RELEASED_INCREASES: &str = "released marks must not go backwards";
const RULE_RELEASED_COVERED: &str = "a released mark may not pass the exits the log has covered";

/// Checks that records arrive in an order a replayer can trust:
///
/// - entry exit indices strictly increase, and an entry never lands at or
///   before an exit already covered by a progress mark (progress promises that
///   nothing else happened up to its index);
/// - no record refers to an exit before the highest exit index seen so far
///   (equal is fine: a digest, progress or released mark may share an exit
///   with an entry);
/// - nothing follows `End`;
/// - released marks are a stream of their own: they trail the log (the primary
///   releases output only after the backup acked it), never go backwards, and
///   never pass the highest exit covered by entries or progress; standing marks
///   are another such stream, under the same rules.
///
/// A rejected record leaves the state unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequencer {
    last_entry: Option<u64>,
    last_released: Option<u64>,
    last_epoch: Option<u64>,
    /// Highest exit covered by an entry or progress mark.
    covered: Option<u64>,
    highest: Option<u64>,
    end: Option<u64>,
}

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A log that continues from a state taken at exit `index` (a backup that
    /// joined a running VM): everything up to `index` is already covered, so the
    /// first entry must come after it, and released marks up to it are in order.
    pub fn starting_at(index: u64) -> Self {
        Sequencer { covered: Some(index), highest: Some(index), ..Self::default() }
    }

    /// Accepts `record` if it may follow everything accepted so far.
    pub fn check(&mut self, record: &Record) -> Result<(), CodecError> {
        let index = record.exit_index();
        let out_of_order = |previous: u64, rule: &'static str| CodecError::OutOfOrder {
            record: record.name(),
            exit_index: index,
            previous,
            rule,
        };
        if let Some(end) = self.end {
            return Err(out_of_order(end, RULE_END_IS_LAST));
        }
        if let Record::Released { .. } | Record::Standing { .. } = record {
            let last =
                if let Record::Released { .. } = record { &mut self.last_released } else { &mut self.last_epoch };
            if let Some(last) = last.filter(|&last| index < last) {
                return Err(out_of_order(last, RULE_RELEASED_INCREASES));
            }
            let covered = self.covered.unwrap_or(0);
            if index > covered {
                return Err(out_of_order(covered, RULE_RELEASED_COVERED));
            }
            *last = Some(index);
            return Ok(());
        }
        if let Record::Entry { .. } = record {
            if let Some(last) = self.last_entry.filter(|&last| index <= last) {
                return Err(out_of_order(last, RULE_ENTRIES_INCREASE));
            }
            if let Some(covered) = self.covered.filter(|&covered| index <= covered) {
                return Err(out_of_order(covered, RULE_PROGRESS_COVERS));
            }
        }
        if let Some(highest) = self.highest.filter(|&highest| index < highest) {
            return Err(out_of_order(highest, RULE_NO_GOING_BACK));
        }

        match record {
            Record::Entry { .. } => {
                self.last_entry = Some(index);
                self.covered = Some(index);
            }
            Record::Progress { .. } => self.covered = Some(index),
            Record::End { .. } => self.end = Some(index),
            Record::Digest { .. } | Record::Released { .. } | Record::Standing { .. } => {}
        }
        self.highest = Some(index);
        Ok(())
    }

    /// The highest exit index accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// The highest exit the log has fully described (by entries or progress):
    /// a backup may replay up to and including this exit.
    pub fn covered_through(&self) -> Option<u64> {
        self.covered
    }

    /// Whether an `End` record has been accepted.
    pub fn is_ended(&self) -> bool {
        self.end.is_some()
    }
}
