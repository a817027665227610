//! The timer: when ticks are due on a live (recording) VM.
//!
//! There is no timer thread. Ticks are due by wall-clock arithmetic, checked
//! at every counted exit (a vDSO clock read is noise next to an exit), and a
//! waiting vCPU sleeps until the next deadline. A tick is delivered at most
//! once per exit; a backlog (the host was busy) is delivered over the next
//! exits so the guest's clock catches up, but never more than a second's worth.
use std::time::{Duration, Instant};

pub struct TickClock {
    start: Instant,
    period: Option<Duration>,
    delivered: u64,
    max_backlog: u64,
}

impl TickClock {
    pub fn new(tick_hz: u32) -> TickClock {
        TickClock {
            start: Instant::now(),
            period: (tick_hz > 0).then(|| Duration::from_secs(1) / tick_hz),
            delivered: 0,
            max_backlog: u64::from(tick_hz.max(1)),
        }
    }

    fn due(&self, now: Instant) -> u64 {
        match self.period {
            Some(p) => (now.saturating_duration_since(self.start).as_nanos() / p.as_nanos()) as u64,
            None => 0,
        }
    }

    pub fn pending(&mut self, now: Instant) -> bool {
        let due = self.due(now);
        if due > self.delivered + self.max_backlog {
            self.delivered = due - self.max_backlog;
        }
        due > self.delivered
    }

    pub fn delivered(&mut self) {
        self.delivered += 1;
    }

    /// When the next undelivered tick falls due; None without a timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        let p = self.period?;
        let n = u32::try_from(self.delivered + 1).ok()?;
        Some(self.start + p * n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_due_by_elapsed_time_one_delivery_at_a_time() {
        let mut c = TickClock::new(1000);
        let t0 = c.start;
        assert!(!c.pending(t0));
        let later = t0 + Duration::from_micros(3500);
        assert!(c.pending(later));
        c.delivered();
        c.delivered();
        c.delivered();
        assert!(!c.pending(later));
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(4)));
    }

    #[test]
    fn backlog_is_capped_at_one_second_of_ticks() {
        let mut c = TickClock::new(100);
        let t = c.start + Duration::from_secs(10);
        assert!(c.pending(t));
        assert_eq!(c.delivered, 900);
    }

    #[test]
    fn no_timer_means_no_ticks_and_no_deadline() {
        let mut c = TickClock::new(0);
        assert!(!c.pending(c.start + Duration::from_secs(5)));
        assert_eq!(c.next_deadline(), None);
    }
}
