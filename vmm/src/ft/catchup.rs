//! A follower's catch-up, as log lines: while its replay trails what it has
//! received by more than [`BEHIND`] exits (it joined a busy primary, resumed
//! a long log, or replays its data directory's log after a restart), one line
//! a second with how far behind it is, how fast it replays and when it should
//! be in sync; then one line when it is.
//!
//! ```text
//!   catching up: 180233 exits behind, replaying 95120 exits/s (in sync in ~2 s)
//!   caught up: replayed 301544 exits in 3.2 s (94232 exits/s), now 12 behind
//! ```
//! [`CatchUp::observe`] is pure (time is passed in); `watch` runs it once a second.
use super::follower::Upstream;
use crate::vm::progress::EVERY;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Instant;

/// A replay this many exits behind what it received is catching up (the primary's
/// status calls such a follower "catching up" past the same distance).
pub const BEHIND: u64 = 4096;

/// What to log.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Still behind: by `behind` exits, replaying `rate` exits a second.
    Behind { behind: u64, rate: f64 },
    /// In sync again: `exits` replayed over `secs` since it fell behind.
    CaughtUp { exits: u64, secs: f64, behind: u64 },
}

impl Line {
    /// The line a person reads.
    pub fn text(&self) -> String {
        match self {
            Line::Behind { behind, rate } if *rate >= 1.0 => format!(
                "catching up: {behind} exits behind, replaying {rate:.0} exits/s (in sync in ~{:.0} s)",
                (*behind as f64 / rate).ceil()
            ),
            Line::Behind { behind, rate } => format!("catching up: {behind} exits behind, replaying {rate:.0} exits/s"),
            Line::CaughtUp { exits, secs, behind } => format!(
                "caught up: replayed {exits} exits in {secs:.1} s ({:.0} exits/s), now {behind} behind",
                *exits as f64 / secs.max(1e-3)
            ),
        }
    }
}

/// Where a follower's replay stands, between two looks.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Since when, and from which replayed exit, it has been behind.
    since: Option<(Instant, u64)>,
    /// The previous look: when, and the replayed exit then.
    last: Option<(Instant, u64)>,
}

impl CatchUp {
    /// Looks at `received` and `replayed` at `now`; returns the line to log, if any.
    pub fn observe(&mut self, now: Instant, received: u64, replayed: u64) -> Option<Line> {
        let behind = received.saturating_sub(replayed);
        let rate = match self.last {
            Some((then, was)) => {
                replayed.saturating_sub(was) as f64 / now.saturating_duration_since(then).as_secs_f64().max(1e-3)
            }
            None => 0.0,
        };
        self.last = Some((now, replayed));
        match (self.since, behind > BEHIND) {
            (None, true) => {
                self.since = Some((now, replayed));
                Some(Line::Behind { behind, rate })
            }
            (Some(_), true) => Some(Line::Behind { behind, rate }),
            (Some((from, at)), false) => {
                self.since = None;
                let secs = now.saturating_duration_since(from).as_secs_f64();
                Some(Line::CaughtUp { exits: replayed.saturating_sub(at), secs, behind })
            }
            (None, false) => None,
        }
    }
}

/// Watches `upstream` once a second on a thread of its own until it is dropped.
pub fn watch(upstream: Weak<Upstream>) -> std::io::Result<()> {
    std::thread::Builder::new().name("catch-up".into()).spawn(move || {
        let mut c = CatchUp::default();
        loop {
            std::thread::sleep(EVERY);
            let Some(up) = upstream.upgrade() else { return };
            let received = up.received_through.load(Ordering::SeqCst);
            let replayed = up.replayed_through.load(Ordering::SeqCst);
            drop(up);
            if let Some(line) = c.observe(Instant::now(), received, replayed) {
                log(&line);
            }
        }
    })?;
    Ok(())
}

fn log(line: &Line) {
    match line {
        Line::Behind { behind, rate } => {
            tracing::info!(progress = "catch-up", behind_exits = behind, exits_per_s = *rate as u64, "{}", line.text())
        }
        Line::CaughtUp { exits, secs, behind } => tracing::info!(
            progress = "catch-up",
            replayed_exits = exits,
            elapsed_ms = (secs * 1e3) as u64,
            behind_exits = behind,
            done = true,
            "{}",
            line.text()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn behind_past_the_threshold_logs_each_look_then_once_when_in_sync() {
        let mut c = CatchUp::default();
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(c.observe(t, 10_000, 10_000 - BEHIND), None, "at the threshold: in sync");
        let rate = (100_000 - (10_000 - BEHIND)) as f64;
        assert_eq!(c.observe(t + s, 300_000, 100_000), Some(Line::Behind { behind: 200_000, rate }));
        let Some(Line::Behind { behind, rate }) = c.observe(t + s * 2, 310_000, 200_000) else {
            panic!("still behind")
        };
        assert_eq!((behind, rate as u64), (110_000, 100_000));
        assert_eq!(
            Line::Behind { behind, rate }.text(),
            "catching up: 110000 exits behind, replaying 100000 exits/s (in sync in ~2 s)"
        );
        let done = c.observe(t + s * 3, 310_010, 310_000).expect("a last line");
        assert_eq!(done, Line::CaughtUp { exits: 210_000, secs: 2.0, behind: 10 });
        assert_eq!(done.text(), "caught up: replayed 210000 exits in 2.0 s (105000 exits/s), now 10 behind");
        assert_eq!(c.observe(t + s * 4, 310_020, 310_020), None, "in sync: quiet");
    }

    #[test]
    fn a_replay_that_stands_still_says_so_without_dividing_by_zero() {
        let mut c = CatchUp::default();
        let t = Instant::now();
        c.observe(t, 0, 0);
        let line = c.observe(t, 50_000, 0).expect("behind");
        assert_eq!(line.text(), "catching up: 50000 exits behind, replaying 0 exits/s");
    }
}
