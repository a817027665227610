//! Hybrid logical clock: physical milliseconds plus a logical counter.
//!
//! The physical part is the guest's own clock (boot wall time + ticks), so it replays
//! exactly. The logical part makes timestamps strictly increasing even when the
//! physical clock stands still or a peer's clock runs ahead: after [`Hlc::observe`]ing
//! a remote timestamp, every later [`Hlc::now`] is larger, so a write that causally
//! follows another always carries a larger timestamp, whatever the clocks' skew.

/// One HLC reading. Ordered by physical part, then logical part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as the issuing site saw them (possibly advanced).
    pub wall_ms: u64,
    /// Orders events within one millisecond.
    pub logical: u32,
}

/// A site's clock state: the largest timestamp issued or observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hlc {
    last: Timestamp,
}

impl Hlc {
    /// A timestamp for a local event at physical time `phys_ms`, larger than every
    /// timestamp issued or observed before.
    pub fn now(&mut self, phys_ms: u64) -> Timestamp {
        let next = if phys_ms > self.last.wall_ms {
            Timestamp { wall_ms: phys_ms, logical: 0 }
        } else {
            match self.last.logical.checked_add(1) {
                Some(logical) => Timestamp { wall_ms: self.last.wall_ms, logical },
                // 4 billion events in one millisecond: borrow the next millisecond.
                None => Timestamp { wall_ms: self.last.wall_ms.saturating_add(1), logical: 0 },
            }
        };
        self.last = next;
        next
    }

    /// Take a remote timestamp into account (on receiving a write).
    pub fn observe(&mut self, remote: Timestamp) {
        if remote > self.last {
            self.last = remote;
        }
    }

    /// The largest timestamp issued or observed so far.
    pub fn last(&self) -> Timestamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_increase_even_when_the_clock_stalls_or_goes_back() {
        let mut c = Hlc::default();
        let a = c.now(100);
        let b = c.now(100);
        let d = c.now(50);
        assert!(a < b && b < d);
        assert_eq!(d.wall_ms, 100);
    }

    #[test]
    fn a_write_after_observing_a_fast_peer_is_later_than_the_peer_write() {
        let mut slow = Hlc::default();
        let remote = Timestamp { wall_ms: 10_500, logical: 3 };
        slow.observe(remote);
        assert!(slow.now(10_000) > remote);
    }
}
