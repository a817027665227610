//! Flow control between a primary and its backup, and the watchdog that keeps
//! a wait for the backup from turning into a frozen guest.
//!
//! ```text
//!   primary vCPU at exit E                       backup
//!   E - replayed_through > max_lag ?  --no-->  go on
//!        | yes
//!   Progress(E-1), flushed  ------------------>  may replay through E-1
//!   wait while the gate holds  <-- acks carry replayed_through
//!   replayed_through still for the failover timeout ?  --> drop the backup
//! ```
//!
//! Three rules keep the wait finite:
//! 1. a backup's positions start at the exit it joined at, not at 0 — a backup
//!    that joined at exit J has, by definition, replayed through J;
//! 2. before waiting, the vCPU tells the backup that every exit before this one
//!    is complete: the backup can replay only what it was told is complete, and
//!    only the waiting thread can tell it, so a wait without that flush could
//!    wait for itself;
//! 3. if replay still makes no progress for the failover timeout, the backup is
//!    dropped. A VM frozen while heartbeats say all is well is the worst failure
//!    a fault-tolerant system can have: nobody fails over.
use std::time::{Duration, Instant};

/// How far, in exits, a backup's replay may trail the primary before the
/// primary's vCPU waits. A backup replays everything it received before it goes
/// live, so this bounds the replay between the primary's death and GOING LIVE:
/// replay costs ~33 µs of CPU an exit on the 2-core test host (KVM nested in a
/// VM), so 1024 exits are ~35 ms. It was 262 144 (seconds of replay): a backup
/// acked yet 2645–4830 exits behind then took 87–725 ms to go live
/// (bench/failover.md). The primary waits only while its backup really is that
/// far behind, and the backup acks its replay's progress every
/// [`REPLAY_ACK_EVERY`] while it trails, so such a wait ends as soon as it
/// catches up.
pub const DEFAULT_MAX_REPLAY_LAG: u64 = 1024;

/// While a follower's replay trails what it received, `log-rx` acks the replay's
/// progress at least this often, even when no record arrives: a primary held by
/// flow control learns at once that it may go on (otherwise only its next
/// heartbeat, up to `--heartbeat-ms` later, would bring the ack).
pub const REPLAY_ACK_EVERY: Duration = Duration::from_millis(2);

/// How long `log-rx` waits for bytes before it looks again: [`REPLAY_ACK_EVERY`]
/// while the replay trails what was received (`received` > `replayed`), else the
/// whole failover timeout.
pub fn read_wait(received: u64, replayed: u64, failover_timeout: Duration) -> Duration {
    if received > replayed {
        REPLAY_ACK_EVERY.min(failover_timeout)
    } else {
        failover_timeout
    }
}

/// Whether a follower whose last ack said `acked` has replayed further (`replayed`),
/// so that an ack of its progress is worth sending though nothing arrived.
pub fn progress_ack_due(acked: u64, replayed: u64) -> bool {
    replayed > acked
}

/// The flow-control condition, apart from any thread or socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagGate {
    max_lag: u64,
}

impl LagGate {
    /// A gate that lets the primary run at most `max_lag` exits ahead (at least 1).
    pub fn new(max_lag: u64) -> LagGate {
        LagGate { max_lag: max_lag.max(1) }
    }

    /// Whether the vCPU at `exit_index` must wait for a backup that has replayed
    /// through `replayed_through`.
    pub fn must_wait(&self, exit_index: u64, replayed_through: u64) -> bool {
        exit_index.saturating_sub(replayed_through) > self.max_lag
    }

    /// The limit, in exits.
    pub fn max_lag(&self) -> u64 {
        self.max_lag
    }
}

/// Watches a position that should keep moving while work waits for it, and says
/// when it has stood still for longer than `limit`.
#[derive(Debug, Clone, Copy)]
pub struct ProgressWatch {
    position: u64,
    since: Instant,
    limit: Duration,
}

impl ProgressWatch {
    /// Starts watching `position` at `now`.
    pub fn new(position: u64, now: Instant, limit: Duration) -> ProgressWatch {
        ProgressWatch { position, since: now, limit }
    }

    /// Looks at the position again. `waiting` says whether anything waits for it to
    /// move (a position nobody waits for may rest). Returns how long it has stood
    /// still if that is past the limit.
    pub fn observe(&mut self, position: u64, waiting: bool, now: Instant) -> Option<Duration> {
        if position != self.position || !waiting {
            self.position = position;
            self.since = now;
            return None;
        }
        let still = now.saturating_duration_since(self.since);
        (still > self.limit).then_some(still)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_that_joined_late_is_not_waited_for_at_its_first_exit() {
        // The bug this module was written for: a backup joined at exit 293,643 with
        // positions at 0 made the gate hold at the first exit after the join, forever.
        let gate = LagGate::new(DEFAULT_MAX_REPLAY_LAG);
        let joined_at = 293_643;
        assert!(!gate.must_wait(joined_at + 1, joined_at));
        assert!(gate.must_wait(joined_at + 1, 0), "positions from 0 would hold the gate");
    }

    #[test]
    fn the_gate_holds_only_past_the_limit() {
        let gate = LagGate::new(100);
        assert!(!gate.must_wait(1100, 1000));
        assert!(gate.must_wait(1101, 1000));
        assert!(!gate.must_wait(5, 1000), "a backup ahead of the primary never holds it");
        assert_eq!(LagGate::new(0).max_lag(), 1, "a zero limit would hold every exit");
    }

    #[test]
    fn a_trailing_replay_looks_again_soon_and_acks_only_progress() {
        let failover = Duration::from_millis(500);
        assert_eq!(read_wait(100, 90, failover), REPLAY_ACK_EVERY, "trailing: look again soon");
        assert_eq!(read_wait(100, 100, failover), failover, "caught up: wait for the primary");
        assert_eq!(read_wait(90, 100, failover), failover, "ahead (a restored state): nothing to ack");
        let tiny = Duration::from_millis(1);
        assert_eq!(read_wait(100, 90, tiny), tiny, "never longer than the failover timeout");
        assert!(progress_ack_due(90, 91));
        assert!(!progress_ack_due(90, 90), "no progress, no ack");
        assert!(!progress_ack_due(91, 90));
    }

    #[test]
    fn the_default_lag_keeps_a_catch_up_short() {
        // ~33 µs of replay an exit measured on the 2-core test host: at most ~50 ms of
        // catch-up at go-live, half of issue 14's 100 ms.
        let per_exit = Duration::from_micros(33);
        assert!(per_exit * DEFAULT_MAX_REPLAY_LAG as u32 <= Duration::from_millis(50));
        assert!(LagGate::new(DEFAULT_MAX_REPLAY_LAG).must_wait(DEFAULT_MAX_REPLAY_LAG + 2, 1));
    }

    #[test]
    fn a_watch_trips_only_when_the_position_stands_still_while_something_waits() {
        let t0 = Instant::now();
        let limit = Duration::from_millis(500);
        let mut watch = ProgressWatch::new(10, t0, limit);

        assert_eq!(watch.observe(10, true, t0 + Duration::from_millis(400)), None);
        assert_eq!(watch.observe(11, true, t0 + Duration::from_millis(800)), None, "it moved");
        assert_eq!(watch.observe(11, true, t0 + Duration::from_millis(1200)), None, "400 ms since it moved");
        assert_eq!(watch.observe(11, true, t0 + Duration::from_millis(1301)), Some(Duration::from_millis(501)));
    }

    #[test]
    fn a_position_nobody_waits_for_may_rest() {
        let t0 = Instant::now();
        let mut watch = ProgressWatch::new(10, t0, Duration::from_millis(100));
        assert_eq!(watch.observe(10, false, t0 + Duration::from_secs(60)), None);
        assert_eq!(watch.observe(10, true, t0 + Duration::from_secs(60)), None, "waiting starts the clock");
        assert!(watch.observe(10, true, t0 + Duration::from_millis(60_101)).is_some());
    }
}
