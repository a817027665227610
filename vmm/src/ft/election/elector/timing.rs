//! When members stand: the election's clocks, derived from the failover timeout
//! and heartbeat, and the jitter that keeps two candidates from standing together.
use crate::ft::election::peer;
use std::time::Duration;

/// The clocks of elections.
#[derive(Debug, Clone, Copy)]
pub struct ElectionTiming {
    /// How often a member without a primary probes the group.
    pub poll: Duration,
    /// Each member with a newer log (or a better rank) ahead of this one delays its
    /// standing by this much, so the best member usually stands alone.
    pub step: Duration,
    /// How long a vote request may take.
    pub ask_timeout: Duration,
    /// How long a probe may take: a member that cannot answer within it is taken as
    /// absent for this round (the next round asks again), so a hung member delays an
    /// election by this much, not by `ask_timeout`.
    pub probe_timeout: Duration,
    /// How long after voting for a candidate a member backs it as if it heard it as
    /// primary: it grants no vote or pre-vote to another (Raft resets its election
    /// timer on a grant, section 5.2). Without it, a candidate that just lost could
    /// stand again at once and win the voters that had not heard from the winner
    /// yet, deposing a primary that had not had the time to take its followers.
    pub backing: Duration,
}

impl ElectionTiming {
    /// Derived from the failover timeout and heartbeat (see README, "Choosing the timeouts").
    pub fn from(failover_timeout: Duration, heartbeat: Duration) -> ElectionTiming {
        ElectionTiming {
            poll: heartbeat.max(Duration::from_millis(5)),
            // Long enough for the first candidate's probe and vote on a LAN (a few ms, tens
            // on a loaded host), short enough to add little to a failover.
            step: (failover_timeout / 10).max(heartbeat * 2),
            ask_timeout: failover_timeout.clamp(Duration::from_millis(20), peer::PEER_IO_TIMEOUT),
            probe_timeout: heartbeat.clamp(Duration::from_millis(10), failover_timeout / 4),
            backing: failover_timeout,
        }
    }
}

/// A small xorshift for election jitter (no need for a crypto-grade source).
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new(seed: u64) -> Jitter {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Jitter((t.as_nanos() as u64) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn upto(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.0 % nanos)
    }
}
