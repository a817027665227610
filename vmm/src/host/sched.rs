//! A thread's scheduling as the kernel keeps it: reading and setting its policy,
//! real-time priority and nice value (`sched_getscheduler`, `sched_getparam`,
//! `getpriority`, `sched_setscheduler`, `setpriority`), and reading how long it
//! ran and waited for a CPU (`/proc/self/task/TID/schedstat`).
//!
//! Why here: these are the host's system calls and files, like the CPU pinning
//! next door (`affinity`). What a follower does with them at go-live (which
//! thread it raises, how far, and what its log says) is fault-tolerance policy,
//! in `ft/golive.rs`; this module decides nothing.
use std::io;
use std::time::Duration;

/// A thread's scheduling: its policy, real-time priority and nice value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sched {
    /// `libc::SCHED_OTHER`, `SCHED_FIFO`, `SCHED_RR`, ... (without `SCHED_RESET_ON_FORK`).
    pub policy: i32,
    /// The real-time priority (0 for the ordinary policies).
    pub rt_priority: i32,
    /// The nice value, -20 to 19.
    pub nice: i32,
}

impl Sched {
    /// Whether the policy is a real-time one (FIFO or round-robin).
    pub fn is_real_time(&self) -> bool {
        matches!(self.policy, libc::SCHED_FIFO | libc::SCHED_RR)
    }
}

/// Thread `tid`'s scheduling now.
pub fn sched_of(tid: i32) -> io::Result<Sched> {
    // SAFETY: sched_getscheduler takes a thread id and touches no memory of ours.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param the call writes into.
    if unsafe { libc::sched_getparam(tid, &mut param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // getpriority returns the nice value, and -1 is one: errno tells an error apart.
    // SAFETY: __errno_location returns this thread's errno; getpriority touches nothing of ours.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if n == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        n
    };
    Ok(Sched { policy: policy & !libc::SCHED_RESET_ON_FORK, rt_priority: param.sched_priority, nice })
}

/// Sets thread `tid`'s policy and real-time priority, then its nice value.
pub fn set_sched(tid: i32, to: Sched) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: to.rt_priority };
    // SAFETY: `param` is a valid sched_param the call only reads; `tid` is a thread id.
    if unsafe { libc::sched_setscheduler(tid, to.policy, &param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setpriority touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, to.nice) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time of one thread so far: time it ran, and time it was runnable but waited
/// for a CPU (the kernel's schedstat, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub run: Duration,
    pub wait: Duration,
}

impl CpuTimes {
    /// Parses `/proc/.../schedstat` ("run_ns wait_ns timeslices").
    pub fn parse(schedstat: &str) -> Option<CpuTimes> {
        let mut it = schedstat.split_whitespace().map(|s| s.parse::<u64>().ok());
        let run = it.next()??;
        let wait = it.next()??;
        Some(CpuTimes { run: Duration::from_nanos(run), wait: Duration::from_nanos(wait) })
    }

    /// The times of thread `tid` of this process, if the kernel keeps them.
    pub fn of_thread(tid: i32) -> Option<CpuTimes> {
        if tid <= 0 {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        CpuTimes::parse(&text)
    }

    /// What the thread did between `earlier` and these times.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes { run: self.run.saturating_sub(earlier.run), wait: self.wait.saturating_sub(earlier.wait) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_is_parsed_and_garbage_is_not() {
        let c = CpuTimes::parse("755249 1000000 1\n").unwrap();
        assert_eq!(c, CpuTimes { run: Duration::from_nanos(755_249), wait: Duration::from_millis(1) });
        assert_eq!(CpuTimes::parse(""), None);
        assert_eq!(CpuTimes::parse("12"), None, "no wait column");
        assert_eq!(CpuTimes::parse("x 1 1"), None);
        assert_eq!(CpuTimes::of_thread(0), None);
        assert_eq!(CpuTimes::of_thread(-1), None);
    }

    #[test]
    fn this_threads_own_times_can_be_read() {
        let tid = nix::unistd::gettid().as_raw();
        // A kernel without schedstat has no file: that is allowed (the line then says less).
        if std::path::Path::new("/proc/thread-self/schedstat").exists() {
            assert!(CpuTimes::of_thread(tid).is_some());
        }
    }

    #[test]
    fn times_that_went_backwards_do_not_underflow() {
        // A thread's counters read after a restart.
        let ns = Duration::from_nanos;
        let then = CpuTimes { run: ns(9), wait: ns(9) };
        assert_eq!(CpuTimes { run: ns(1), wait: ns(10) }.since(then), CpuTimes { run: ns(0), wait: ns(1) });
    }

    #[test]
    fn a_threads_scheduling_is_read_back_as_it_was_set_and_a_bad_thread_is_an_error() {
        // A thread of its own, so that the test runner's threads keep their scheduling.
        std::thread::spawn(|| {
            let tid = nix::unistd::gettid().as_raw();
            let before = sched_of(tid).unwrap();
            // A higher nice value (less urgent) needs no privilege, unlike a lower one.
            let nicer = Sched { nice: (before.nice + 1).min(19), ..before };
            set_sched(tid, nicer).unwrap();
            assert_eq!(sched_of(tid).unwrap(), nicer);
        })
        .join()
        .unwrap();
        assert!(sched_of(-1).is_err());
        assert!(set_sched(-1, Sched { policy: libc::SCHED_OTHER, rt_priority: 0, nice: 0 }).is_err());
    }
}
