//! The pure half of a pre-copy: when to stop copying while the VM runs, and what
//! the joiner holds of each page — no KVM, no sockets, unit-tested.
//!
//! ```text
//!   round 0 (running): every page          -> send where the joiner's copy differs
//!   round k (running): pages written since round k-1 (KVM's dirty log, and the
//!                      pages devices wrote) -> the same
//!     after each: next_step(rounds, pages changed this round, the round before)
//!       <= CONVERGED_PAGES      -> Pause (the last round will be about as small)
//!       not fewer than before   -> Pause (the guest writes as fast as we copy)
//!       MAX_RUNNING_ROUNDS done -> Pause
//!       otherwise               -> another round
//!   last round (paused at exit J): pages written since, then vCPU + devices + digest
//! ```
use crate::vm::digest;
use crate::vm::pagediff::page_hash;
use logging_channel::state::PageHash;

/// Rounds copied while the VM runs, round 0 (all of memory) included. Bounds the
/// time a pre-copy takes whatever the guest does; the last round, paused, comes after.
pub const MAX_RUNNING_ROUNDS: u32 = 6;

/// A running round that found at most this many pages changed pauses the VM next:
/// the paused round will copy about as many (256 KiB: ~1 ms to hash and send here).
pub const CONVERGED_PAGES: usize = 64;

/// What to do after a running round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Copy the pages written meanwhile, the VM still running.
    Round,
    /// Pause the VM for the last round.
    Pause(PauseWhy),
}

/// Why the running rounds ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseWhy {
    /// The last running round had at most [`CONVERGED_PAGES`] pages to copy.
    Converged,
    /// The guest wrote at least as many pages as the round before: more rounds would
    /// not shrink the last one.
    NotConverging,
    /// [`MAX_RUNNING_ROUNDS`] rounds were copied.
    MaxRounds,
}

impl std::fmt::Display for PauseWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PauseWhy::Converged => "converged",
            PauseWhy::NotConverging => "not converging",
            PauseWhy::MaxRounds => "round limit",
        })
    }
}

/// After `rounds` running rounds (round 0 included), the last of which found `dirty`
/// pages changed since the one before it (which found `previous`; `None` after round 0,
/// which copied all of memory and says nothing about the guest's write rate).
pub fn next_step(rounds: u32, dirty: Option<usize>, previous: Option<usize>) -> Next {
    if let Some(d) = dirty {
        if d <= CONVERGED_PAGES {
            return Next::Pause(PauseWhy::Converged);
        }
        if previous.is_some_and(|p| d >= p) {
            return Next::Pause(PauseWhy::NotConverging);
        }
    }
    if rounds >= MAX_RUNNING_ROUNDS {
        return Next::Pause(PauseWhy::MaxRounds);
    }
    Next::Round
}

/// What to do with one page of the sender's memory, given what the joiner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// The joiner holds the same (both zero, or the same hash).
    Same,
    /// Send the page: the joiner lacks it or holds something else.
    Send,
    /// The page is zero here and not at the joiner: clear it there.
    Clear,
}

/// The sender's record of what the joiner holds, page by page, kept true as pages
/// are sent: `None` for zero, else the hash of the page as last sent (or as the
/// joiner listed it). After the last round it is also what the sender holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSync {
    theirs: Vec<Option<PageHash>>,
}

impl PageSync {
    /// From the joiner's page list: one slot per page of the sender's memory.
    pub fn new(theirs: Vec<Option<PageHash>>) -> PageSync {
        PageSync { theirs }
    }

    /// Page `n` reads `page` here now: what the joiner must get. Records that it gets it.
    /// A page beyond the sender's memory is [`Visit::Same`] (the dirty log and the page
    /// list both stop at the end of memory; a bad number changes nothing).
    pub fn visit(&mut self, n: u64, page: &[u8]) -> Visit {
        let Some(slot) = self.theirs.get_mut(n as usize) else { return Visit::Same };
        if digest::is_zero(page) {
            return match slot.take() {
                Some(_) => Visit::Clear,
                None => Visit::Same,
            };
        }
        let hash = page_hash(page);
        if *slot == Some(hash) {
            return Visit::Same;
        }
        *slot = Some(hash);
        Visit::Send
    }

    /// The pages the joiner holds non-zero, ascending.
    pub fn non_zero(&self) -> impl Iterator<Item = u64> + '_ {
        self.theirs.iter().enumerate().filter(|(_, h)| h.is_some()).map(|(n, _)| n as u64)
    }

    /// How many pages it tracks (the sender's memory, in pages).
    pub fn len(&self) -> u64 {
        self.theirs.len() as u64
    }

    /// Whether it tracks no page at all.
    pub fn is_empty(&self) -> bool {
        self.theirs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_at_most_the_threshold_pauses_and_one_past_it_goes_on() {
        assert_eq!(next_step(1, None, None), Next::Round, "round 0 copied everything: always look again");
        assert_eq!(next_step(2, Some(CONVERGED_PAGES), None), Next::Pause(PauseWhy::Converged));
        assert_eq!(next_step(2, Some(CONVERGED_PAGES + 1), None), Next::Round);
        assert_eq!(next_step(2, Some(0), None), Next::Pause(PauseWhy::Converged));
    }

    #[test]
    fn a_guest_writing_as_fast_as_it_is_copied_pauses_at_once() {
        let big = CONVERGED_PAGES * 4;
        assert_eq!(next_step(3, Some(big - 1), Some(big)), Next::Round, "shrinking: go on");
        assert_eq!(next_step(3, Some(big), Some(big)), Next::Pause(PauseWhy::NotConverging));
        assert_eq!(next_step(3, Some(big + 1), Some(big)), Next::Pause(PauseWhy::NotConverging));
    }

    #[test]
    fn the_running_rounds_stop_at_the_limit() {
        let mut dirty = 10_000;
        let mut previous = None;
        let mut rounds = 1;
        // A guest whose writes shrink slowly never converges: only the limit stops it.
        while next_step(rounds, Some(dirty), previous) == Next::Round {
            previous = Some(dirty);
            dirty -= 1;
            rounds += 1;
            assert!(rounds <= MAX_RUNNING_ROUNDS, "past the limit");
        }
        assert_eq!(rounds, MAX_RUNNING_ROUNDS);
        assert_eq!(next_step(rounds, Some(dirty), previous), Next::Pause(PauseWhy::MaxRounds));
        assert_eq!(next_step(MAX_RUNNING_ROUNDS - 1, Some(dirty), previous), Next::Round);
        assert_eq!(next_step(MAX_RUNNING_ROUNDS, None, None), Next::Pause(PauseWhy::MaxRounds));
    }

    #[test]
    fn a_page_is_sent_once_until_it_changes_and_cleared_once_when_it_becomes_zero() {
        let zero = [0u8; 4096];
        let a = [1u8; 4096];
        let b = [2u8; 4096];
        let mut sync = PageSync::new(vec![None, Some(page_hash(&a)), Some(page_hash(&a))]);
        assert_eq!(sync.visit(0, &zero), Visit::Same, "zero at both");
        assert_eq!(sync.visit(1, &a), Visit::Same, "the joiner listed the same page");
        assert_eq!(sync.visit(2, &b), Visit::Send);
        assert_eq!(sync.visit(2, &b), Visit::Same, "sent: now the same");
        assert_eq!(sync.visit(0, &a), Visit::Send);
        assert_eq!(sync.visit(1, &zero), Visit::Clear);
        assert_eq!(sync.visit(1, &zero), Visit::Same, "cleared: now the same");
        assert_eq!(sync.non_zero().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(sync.visit(3, &a), Visit::Same, "beyond memory: nothing to do");
        assert_eq!(sync.len(), 3);
    }
}
