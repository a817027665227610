//! How long a follower's go-live took, step by step, for its log: from the moment
//! `log-rx` found the primary gone ([`Loss`]) to the end of the replay, the
//! take-over, the mirrored input's hand-off and the TAP. Pure apart from
//! [`Boost`], which raises and restores a thread's scheduling through
//! `host::sched` (the system calls and `/proc` reading live there; what to raise,
//! how far, and what the log says live here).
//!
//! Why: the client-seen gap after a kill is, once the backup has the request
//! (docs/client-gap.md), the time from the kill to GOING LIVE. That time is the
//! failure detection, then the replay of what the backup had received but not yet
//! replayed, then the take-over. On a loaded host the replay's part depends on how
//! far behind the backup was and whether its vCPU thread got a CPU, so the line
//! says both: exits behind at the loss, and the vCPU's run time and run-queue wait
//! while it caught up (`/proc/.../schedstat`).
//!
//! What it measured on a loaded 2-core host (bench/failover.md): a backup acked
//! yet thousands of exits behind in its replay, whose vCPU then waited for a CPU
//! for most of the catch-up (551 of 688 ms). So from the loss until it is live the
//! replaying vCPU runs at real-time priority ([`Boost`]): the catch-up is the
//! one thing on this host that a client is waiting for, and it is finite (the log
//! ended; the primary's flow control bounds how much of it is left).
use std::fmt;
use std::time::{Duration, Instant};

use crate::host::sched::{sched_of, set_sched, CpuTimes, Sched};

/// The SCHED_FIFO priority of the replaying vCPU from the loss to going live: the
/// lowest real-time one, enough to run before every ordinary thread.
pub const CATCH_UP_RT_PRIORITY: i32 = 1;
/// Without real-time scheduling (refused: no CAP_SYS_NICE, or a cgroup without
/// real-time runtime), the nice value the catch-up gets instead.
pub const CATCH_UP_NICE: i32 = -20;

/// Whether a thread running as `was` already runs at least as urgently as the
/// catch-up would.
fn at_least_catch_up(was: Sched) -> bool {
    was.is_real_time() && was.rt_priority >= CATCH_UP_RT_PRIORITY
}

/// How the catch-up raises a thread that runs as `was`: real time, then (if that is
/// refused) a lower nice value; nothing for a thread that is already real time.
pub fn catch_up_plan(was: Sched) -> Vec<Sched> {
    if at_least_catch_up(was) {
        return Vec::new();
    }
    let rt = Sched { policy: libc::SCHED_FIFO, rt_priority: CATCH_UP_RT_PRIORITY, nice: was.nice };
    let mut plan = vec![rt];
    if was.nice > CATCH_UP_NICE {
        plan.push(Sched { nice: CATCH_UP_NICE, ..was });
    }
    plan
}

/// The replaying vCPU's scheduling raised for the catch-up, and how to put it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boost {
    pub tid: i32,
    pub was: Sched,
    pub now: Sched,
}

impl Boost {
    /// Raises thread `tid` (see [`catch_up_plan`]); says why not if it cannot.
    pub fn raise(tid: i32) -> Result<Boost, String> {
        if tid <= 0 {
            return Err("the replaying thread is not known".into());
        }
        let was = sched_of(tid).map_err(|e| format!("cannot read its scheduling: {e}"))?;
        let mut refused = String::from("it already runs at real-time priority");
        for want in catch_up_plan(was) {
            match set_sched(tid, want) {
                Ok(()) => return Ok(Boost { tid, was, now: want }),
                Err(e) => refused = e.to_string(),
            }
        }
        Err(refused)
    }

    /// Puts the thread's scheduling back as it was.
    pub fn restore(&self) -> std::io::Result<()> {
        set_sched(self.tid, self.was)
    }

    /// "SCHED_FIFO 1" or "nice -20".
    pub fn describe(&self) -> String {
        if self.now.is_real_time() {
            format!("real-time priority {}", self.now.rt_priority)
        } else {
            format!("nice {}", self.now.nice)
        }
    }
}

/// The moment `log-rx` found the primary gone, and where the follower stood then.
#[derive(Debug, Clone, Copy)]
pub struct Loss {
    pub at: Instant,
    /// The last exit received completely.
    pub received_through: u64,
    /// The last exit the vCPU had replayed.
    pub replayed_through: u64,
    /// The replaying vCPU thread's CPU times then, if known.
    pub vcpu: Option<CpuTimes>,
    /// The vCPU's scheduling, raised for the catch-up once the log ended for good.
    pub raised: Option<Boost>,
}

impl Loss {
    /// Exits received but not yet replayed: what the replay still had to do.
    pub fn behind(&self) -> u64 {
        self.received_through.saturating_sub(self.replayed_through)
    }
}

/// A step of the go-live path after the replay, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The group's take-over (the arbiter, in a pair that has one).
    TakeOver,
    /// Mirrored input handed to the live VM.
    Mirror,
    /// The TAP opened (without mirrored input) and the announcement started.
    Tap,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::TakeOver => "take-over",
            Step::Mirror => "mirror hand-off",
            Step::Tap => "TAP",
        }
    }
}

/// The go-live path's clock: started when the replay reached the end of the log.
#[derive(Debug, Clone)]
pub struct GoLiveSteps {
    loss: Option<Loss>,
    caught_up: Instant,
    /// The vCPU's CPU times while it caught up (from the loss to the end of the replay).
    vcpu: Option<CpuTimes>,
    last: Instant,
    steps: Vec<(Step, Duration)>,
}

impl GoLiveSteps {
    /// The replay reached the end of the log at `now`; the vCPU's times are `vcpu_now`.
    pub fn caught_up(loss: Option<Loss>, now: Instant, vcpu_now: Option<CpuTimes>) -> GoLiveSteps {
        let vcpu = match (loss.and_then(|l| l.vcpu), vcpu_now) {
            (Some(then), Some(now)) => Some(now.since(then)),
            _ => None,
        };
        GoLiveSteps { loss, caught_up: now, vcpu, last: now, steps: Vec::new() }
    }

    /// `step` ended at `now` (it began where the one before it ended).
    pub fn done(&mut self, step: Step, now: Instant) {
        self.steps.push((step, now.saturating_duration_since(self.last)));
        self.last = now;
    }

    /// Exits behind at the loss (0 if the loss is unknown).
    pub fn behind(&self) -> u64 {
        self.loss.map_or(0, |l| l.behind())
    }

    /// From the loss to the end of the replay.
    pub fn replay(&self) -> Option<Duration> {
        self.loss.map(|l| self.caught_up.saturating_duration_since(l.at))
    }

    /// From the loss (or, unknown, the end of the replay) to the last step.
    pub fn total(&self) -> Duration {
        let from = self.loss.map_or(self.caught_up, |l| l.at);
        self.last.saturating_duration_since(from)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for GoLiveSteps {
    /// "primary lost -> replay caught up 3.1 ms (120 exits behind; vCPU ran 2.0 ms, waited
    /// for a CPU 0.9 ms), take-over 0.0 ms, mirror hand-off 0.1 ms: 3.2 ms in all"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.loss, self.replay()) {
            (Some(l), Some(r)) => write!(f, "primary lost -> replay caught up {} ({} exits behind", ms(r), l.behind())?,
            _ => write!(f, "replay caught up (when the primary was lost is unknown")?,
        }
        if let Some(c) = self.vcpu {
            write!(f, "; vCPU ran {}, waited for a CPU {}", ms(c.run), ms(c.wait))?;
        }
        match self.loss.and_then(|l| l.raised) {
            Some(r) => write!(f, "; at {})", r.describe())?,
            None => write!(f, ")")?,
        }
        for (step, d) in &self.steps {
            write!(f, ", {} {}", step.name(), ms(*d))?;
        }
        write!(f, ": {} in all", ms(self.total()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const OTHER: Sched = Sched { policy: libc::SCHED_OTHER, rt_priority: 0, nice: 0 };

    #[test]
    fn the_catch_up_tries_real_time_then_nice_and_never_lowers_a_thread() {
        let plan = catch_up_plan(OTHER);
        assert_eq!(
            plan,
            vec![
                Sched { policy: libc::SCHED_FIFO, rt_priority: CATCH_UP_RT_PRIORITY, nice: 0 },
                Sched { nice: CATCH_UP_NICE, ..OTHER },
            ]
        );
        let niced = Sched { nice: CATCH_UP_NICE, ..OTHER };
        assert_eq!(catch_up_plan(niced).len(), 1, "no nice step for a thread already at the lowest nice");
        let rt = Sched { policy: libc::SCHED_RR, rt_priority: 50, nice: 0 };
        assert!(catch_up_plan(rt).is_empty(), "a thread run under chrt keeps its priority");
        let fifo = Sched { policy: libc::SCHED_FIFO, rt_priority: CATCH_UP_RT_PRIORITY, nice: 0 };
        assert!(catch_up_plan(fifo).is_empty());
    }

    #[test]
    fn a_thread_is_raised_and_put_back_or_told_why_not() {
        assert!(Boost::raise(0).is_err());
        // A thread of its own, so that the test runner's threads keep their scheduling.
        std::thread::spawn(|| {
            let tid = nix::unistd::gettid().as_raw();
            let before = sched_of(tid).unwrap();
            match Boost::raise(tid) {
                Ok(c) => {
                    assert_eq!(sched_of(tid).unwrap(), c.now);
                    assert_ne!(c.now, before);
                    c.restore().unwrap();
                    assert_eq!(sched_of(tid).unwrap(), before, "put back as it was");
                }
                // Without CAP_SYS_NICE both steps are refused: that is reported, not fatal.
                Err(why) => assert!(!why.is_empty()),
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_steps_add_up_from_the_loss() {
        let t0 = Instant::now();
        let loss = Loss {
            at: t0,
            received_through: 1200,
            replayed_through: 1000,
            vcpu: Some(CpuTimes { run: ms(10), wait: ms(5) }),
            raised: Some(Boost {
                tid: 1,
                was: OTHER,
                now: Sched { policy: libc::SCHED_FIFO, rt_priority: CATCH_UP_RT_PRIORITY, nice: 0 },
            }),
        };
        let mut s = GoLiveSteps::caught_up(Some(loss), t0 + ms(30), Some(CpuTimes { run: ms(18), wait: ms(27) }));
        s.done(Step::TakeOver, t0 + ms(31));
        s.done(Step::Mirror, t0 + ms(34));
        assert_eq!(s.behind(), 200);
        assert_eq!(s.replay(), Some(ms(30)));
        assert_eq!(s.total(), ms(34));
        assert_eq!(
            s.to_string(),
            "primary lost -> replay caught up 30.0 ms (200 exits behind; vCPU ran 8.0 ms, waited for a CPU 22.0 ms; at real-time priority 1), \
             take-over 1.0 ms, mirror hand-off 3.0 ms: 34.0 ms in all"
        );
    }

    #[test]
    fn an_unknown_loss_or_a_follower_ahead_of_what_it_received_says_so_without_underflow() {
        let t0 = Instant::now();
        let mut s = GoLiveSteps::caught_up(None, t0, None);
        s.done(Step::Tap, t0 + ms(2));
        assert_eq!((s.behind(), s.replay(), s.total()), (0, None, ms(2)));
        assert_eq!(s.to_string(), "replay caught up (when the primary was lost is unknown), TAP 2.0 ms: 2.0 ms in all");
        // Replayed past what it had received (a state restored after the loss was noted).
        let loss = Loss { at: t0, received_through: 5, replayed_through: 9, vcpu: None, raised: None };
        assert_eq!(GoLiveSteps::caught_up(Some(loss), t0, None).behind(), 0);
    }
}
