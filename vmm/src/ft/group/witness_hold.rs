//! Where a two-member group's primary stands with the witness: the one piece of
//! state behind "may it release alone" and "must it lower the witness's floor".
//!
//! ```text
//!   won the witness (election or going on alone)  --> Alone
//!   Alone     --a follower joins-->                    FloorUp
//!   Alone | FloorUp --a follower acks all released-->  Free (the floor comes down)
//!   won without the witness                       --> Free
//! ```
//!
//! `Alone`: no other member can win an election without this one (the witness's
//! floor is its log), so the witness counts toward its majority and it releases
//! output nobody else holds. `FloorUp`: a follower joined, so the witness no longer
//! counts (that follower could win it if its log were allowed), but the floor still
//! refuses every log but this primary's until the follower holds what was released.
use std::sync::atomic::{AtomicU8, Ordering};

/// The primary's standing with the witness (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessHold {
    /// It did not win the witness, or the floor is down again.
    Free = 0,
    /// It won the witness and no follower joined since.
    Alone = 1,
    /// A follower joined; the witness's floor is still this primary's log.
    FloorUp = 2,
}

/// A [`WitnessHold`] shared by the vCPU, `ack-rx` and the step-down paths.
#[derive(Debug)]
pub struct WitnessState(AtomicU8);

impl WitnessState {
    /// Free.
    pub fn new() -> WitnessState {
        WitnessState(AtomicU8::new(WitnessHold::Free as u8))
    }

    /// Now.
    pub fn get(&self) -> WitnessHold {
        match self.0.load(Ordering::SeqCst) {
            1 => WitnessHold::Alone,
            2 => WitnessHold::FloorUp,
            _ => WitnessHold::Free,
        }
    }

    /// An election (or going on alone) was won, `with_witness`'s vote or not.
    pub fn won(&self, with_witness: bool) {
        let to = if with_witness { WitnessHold::Alone } else { WitnessHold::Free };
        self.0.store(to as u8, Ordering::SeqCst);
    }

    /// A follower joined: its log is of this epoch, so it could win the witness too.
    pub fn follower_joined(&self) {
        let _ = self.0.compare_exchange(
            WitnessHold::Alone as u8,
            WitnessHold::FloorUp as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Whether the witness counts toward this primary's majority.
    pub fn counts(&self) -> bool {
        self.get() == WitnessHold::Alone
    }

    /// A follower holds everything released: returns whether the floor must come down
    /// now (true once, to exactly one caller).
    pub fn take_floor(&self) -> bool {
        let mut now = self.0.load(Ordering::SeqCst);
        while now != WitnessHold::Free as u8 {
            match self.0.compare_exchange(now, WitnessHold::Free as u8, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
        false
    }
}

impl Default for WitnessState {
    fn default() -> Self {
        WitnessState::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_win_with_the_witness_counts_it_until_a_follower_joins_and_the_floor_comes_down_once() {
        let w = WitnessState::new();
        assert!(!w.counts() && !w.take_floor(), "nothing held before a win");
        w.won(true);
        assert!(w.counts());
        w.follower_joined();
        assert_eq!(w.get(), WitnessHold::FloorUp);
        assert!(!w.counts(), "a joined follower could win the witness: it no longer counts");
        assert!(w.take_floor(), "the first ack covering the releases lowers the floor");
        assert!(!w.take_floor(), "and only the first");
        w.follower_joined();
        assert_eq!(w.get(), WitnessHold::Free, "a join while free changes nothing");
    }

    #[test]
    fn a_win_without_the_witness_holds_nothing() {
        let w = WitnessState::new();
        w.won(true);
        w.won(false);
        assert_eq!(w.get(), WitnessHold::Free);
        assert!(!w.take_floor());
    }

    #[test]
    fn the_floor_comes_down_for_exactly_one_of_many_racing_acks() {
        let w = std::sync::Arc::new(WitnessState::new());
        w.won(true);
        w.follower_joined();
        let lowered: usize = (0..8)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || w.take_floor())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().expect("no panic")))
            .sum();
        assert_eq!(lowered, 1);
    }
}
