//! The primary's backlog: the most recent part of its log stream, as encoded
//! record frames, so that a follower whose connection broke can resume from
//! where it was instead of receiving the whole state again.
//!
//! ```text
//!   floor                                                   newest
//!     |  chunk(exit 17)  chunk(exit 20)  ...  chunk(exit 9051) |
//!     every exit after `floor` is here;  bytes <= limit (oldest evicted first)
//!   epochs: [(from exit 0, epoch 1), (from exit 4410, epoch 2)]
//! ```
//!
//! A chunk is the records of one exit (the vCPU logs an exit's records as one
//! batch). `from(p)` is every chunk after exit `p`: a follower that holds every
//! record through `p` needs exactly those. A follower may hold only part of the
//! chunk of exit `p` itself (a connection can break mid-batch); what it lacks
//! there is at most a digest or a progress mark for `p`, which later records
//! make up for. The epoch of each exit is kept too: a follower may resume only
//! if it was in the same epoch at its position, i.e. its log is a prefix of
//! this one. Pure: no I/O, no clock.
use std::collections::VecDeque;

/// The default `--backlog-mib`.
pub const DEFAULT_BACKLOG_MIB: u64 = 64;

#[derive(Debug)]
struct Chunk {
    exit_index: u64,
    bytes: Vec<u8>,
}

/// The recent log, bounded in bytes.
#[derive(Debug)]
pub struct Backlog {
    limit: usize,
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// Every exit after this one is kept; its own records and older ones may not be.
    floor: u64,
    /// `(first exit, epoch)`, oldest first; the first one covers `floor`.
    epochs: VecDeque<(u64, u64)>,
}

impl Backlog {
    /// An empty backlog of at most `limit` bytes for a log that starts after exit
    /// `start` (the state the first followers received), in `epoch`.
    pub fn new(limit: usize, start: u64, epoch: u64) -> Backlog {
        Backlog { limit, chunks: VecDeque::new(), bytes: 0, floor: start, epochs: VecDeque::from([(start, epoch)]) }
    }

    /// Appends the encoded records of `exit_index` (logged in `epoch`), evicting the
    /// oldest chunks beyond the limit. Exits must not go backwards; a second batch for
    /// the same exit (the end record) joins that exit's chunk.
    pub fn push(&mut self, exit_index: u64, epoch: u64, bytes: &[u8]) {
        self.note_epoch(exit_index, epoch);
        if bytes.is_empty() {
            return;
        }
        match self.chunks.back_mut() {
            Some(last) if last.exit_index >= exit_index => last.bytes.extend_from_slice(bytes),
            _ => self.chunks.push_back(Chunk { exit_index, bytes: bytes.to_vec() }),
        }
        self.bytes += bytes.len();
        while self.bytes > self.limit {
            let Some(oldest) = self.chunks.pop_front() else { break };
            self.bytes -= oldest.bytes.len();
            self.floor = self.floor.max(oldest.exit_index);
        }
        // The epoch that covers the floor stays; older changes are of no use.
        while self.epochs.len() > 1 && self.epochs[1].0 <= self.floor {
            self.epochs.pop_front();
        }
    }

    /// The group's epoch is `epoch` from exit `exit_index` on (if it changed).
    pub fn note_epoch(&mut self, exit_index: u64, epoch: u64) {
        if self.epochs.back().is_none_or(|&(_, e)| e != epoch) {
            self.epochs.push_back((exit_index, epoch));
        }
    }

    /// Every kept record after exit `p`, or `None` if records after `p` were evicted.
    pub fn from(&self, p: u64) -> Option<Vec<u8>> {
        if p < self.floor {
            return None;
        }
        let mut out = Vec::new();
        for chunk in self.chunks.iter().filter(|c| c.exit_index > p) {
            out.extend_from_slice(&chunk.bytes);
        }
        Some(out)
    }

    /// Like [`Backlog::from`], with a standing mark wherever the epoch changes after `p`
    /// (`Standing{s, e}`: the records after exit `s` are epoch `e`'s), so that a
    /// follower resuming across an election knows which of the records it gets are of
    /// the old primary's epoch and which of the new one's (its log position says so).
    pub fn from_marked(&self, p: u64) -> Option<Vec<u8>> {
        if p < self.floor {
            return None;
        }
        let mut out = Vec::new();
        let mut changes = self.epochs.iter().filter(|&&(first, _)| first > p).peekable();
        let mut last = p;
        for chunk in self.chunks.iter().filter(|c| c.exit_index > p) {
            while let Some(&(_, epoch)) = changes.next_if(|&&(first, _)| first <= chunk.exit_index) {
                let mark = logging_channel::Record::Standing { exit_index: last, epoch, eligible: true };
                logging_channel::codec::encode(&mark, &mut out);
            }
            out.extend_from_slice(&chunk.bytes);
            last = chunk.exit_index;
        }
        for &(_, epoch) in changes {
            logging_channel::codec::encode(
                &logging_channel::Record::Standing { exit_index: last, epoch, eligible: true },
                &mut out,
            );
        }
        Some(out)
    }

    /// The epoch the log was in at exit `p`, if the backlog still reaches back to it.
    pub fn epoch_at(&self, p: u64) -> Option<u64> {
        if p < self.floor {
            return None;
        }
        self.epochs.iter().rev().find(|&&(from, _)| from <= p).map(|&(_, e)| e)
    }

    /// The most bytes it keeps.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The epoch of the newest records.
    pub fn epoch_now(&self) -> u64 {
        self.epochs.back().map_or(0, |&(_, e)| e)
    }

    /// The oldest position a follower can resume from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(exit: u64, len: usize) -> Vec<u8> {
        vec![(exit % 251) as u8; len]
    }

    #[test]
    fn a_position_in_the_backlog_gets_everything_after_it_in_order() {
        let mut b = Backlog::new(1 << 20, 0, 1);
        for exit in [3, 7, 12] {
            b.push(exit, 1, &chunk(exit, 10));
        }
        assert_eq!(b.from(7), Some(chunk(12, 10)));
        assert_eq!(b.from(5), Some([chunk(7, 10), chunk(12, 10)].concat()));
        assert_eq!(b.from(0).map(|v| v.len()), Some(30));
        assert_eq!(b.from(12), Some(Vec::new()), "nothing after the newest exit: an empty resume");
        assert_eq!(b.from(40), Some(Vec::new()));
    }

    #[test]
    fn crossing_the_limit_evicts_the_oldest_and_positions_before_them_fall_back() {
        let mut b = Backlog::new(100, 0, 1);
        for exit in 1..=10 {
            b.push(exit, 1, &chunk(exit, 30));
        }
        // 300 bytes pushed, 100 allowed: exits 8, 9 and 10 stay (90 bytes).
        assert_eq!(b.len(), 90);
        assert_eq!(b.floor(), 7);
        assert_eq!(b.from(6), None, "exit 7's records are gone");
        assert_eq!(b.from(7), Some([chunk(8, 30), chunk(9, 30), chunk(10, 30)].concat()));
        assert_eq!(b.epoch_at(6), None);
    }

    #[test]
    fn a_chunk_larger_than_the_whole_limit_is_not_kept() {
        let mut b = Backlog::new(16, 0, 1);
        b.push(5, 1, &chunk(5, 17));
        assert!(b.is_empty());
        assert_eq!(b.from(4), None);
        assert_eq!(b.from(5), Some(Vec::new()));
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let mut b = Backlog::new(0, 0, 1);
        b.push(1, 1, &chunk(1, 1));
        assert_eq!((b.len(), b.floor()), (0, 1));
    }

    #[test]
    fn a_second_batch_for_the_same_exit_joins_its_chunk() {
        let mut b = Backlog::new(1000, 0, 1);
        b.push(9, 1, &chunk(9, 4));
        b.push(9, 1, &[0xee; 2]);
        assert_eq!(b.from(8), Some([chunk(9, 4), vec![0xee; 2]].concat()));
        assert_eq!(b.from(9), Some(Vec::new()));
    }

    #[test]
    fn epochs_are_kept_by_exit() {
        let mut b = Backlog::new(1000, 100, 1);
        b.push(150, 1, &chunk(150, 10));
        b.note_epoch(180, 2);
        b.push(200, 2, &chunk(200, 10));
        b.push(210, 2, &chunk(210, 10));
        assert_eq!(b.epoch_at(99), None, "before the log started here");
        assert_eq!(b.epoch_at(100), Some(1));
        assert_eq!(b.epoch_at(179), Some(1));
        assert_eq!(b.epoch_at(180), Some(2));
        assert_eq!(b.epoch_at(5000), Some(2));
    }

    #[test]
    fn a_resume_across_an_epoch_change_marks_where_the_new_epoch_begins() {
        use logging_channel::{codec, Record};
        let progress = |exit| {
            let mut v = Vec::new();
            codec::encode(&Record::Progress { exit_index: exit }, &mut v);
            v
        };
        let mut b = Backlog::new(1 << 20, 0, 1);
        b.push(10, 1, &progress(10));
        b.push(20, 1, &progress(20));
        b.note_epoch(21, 3);
        b.push(25, 3, &progress(25));
        let bytes = b.from_marked(5).expect("in the backlog");
        let mut records = Vec::new();
        let mut rest = &bytes[..];
        while let Some((r, n)) = codec::decode(rest).expect("decodes") {
            records.push(r);
            rest = &rest[n..];
        }
        assert_eq!(
            records,
            vec![
                Record::Progress { exit_index: 10 },
                Record::Progress { exit_index: 20 },
                Record::Standing { exit_index: 20, epoch: 3, eligible: true },
                Record::Progress { exit_index: 25 },
            ]
        );
        let mut seq = logging_channel::Sequencer::starting_at(5);
        assert!(records.iter().all(|r| seq.check(r).is_ok()), "a follower's sequencer takes them in this order");
        assert_eq!(b.from_marked(22), Some(progress(25)), "after the change: nothing to mark");
        let mut after_all = Vec::new();
        codec::encode(&Record::Standing { exit_index: 20, epoch: 3, eligible: true }, &mut after_all);
        assert_eq!(b.from_marked(20), Some([after_all, progress(25)].concat()));
    }

    #[test]
    fn eviction_keeps_the_epoch_that_covers_the_floor() {
        let mut b = Backlog::new(20, 0, 1);
        b.push(10, 1, &chunk(10, 10));
        b.push(20, 2, &chunk(20, 10));
        b.push(30, 3, &chunk(30, 10));
        assert_eq!(b.floor(), 10);
        assert_eq!(b.epoch_at(10), Some(1), "exit 10 was logged in epoch 1");
        assert_eq!(b.epoch_at(25), Some(2));
        b.push(40, 3, &chunk(40, 10));
        assert_eq!(b.floor(), 20);
        assert_eq!(b.epoch_at(20), Some(2));
        assert_eq!(b.epoch_at(19), None);
    }
}
