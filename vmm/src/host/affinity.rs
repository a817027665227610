//! Pinning a VMM's threads to CPUs (`--cpu`, `--vcpu-cpu`), as Firecracker and
//! cloud-hypervisor let operators pin: a primary and its follower on one machine
//! (the tests' and benchmarks' namespaces) otherwise compete for the same cores,
//! which two real hosts never do.
//!
//! `--cpu LIST` pins the whole process: it is applied on the launching thread
//! before any other thread exists, and every thread inherits it. `--vcpu-cpu
//! LIST` then narrows the vCPU thread alone, so the replication threads
//! (`log-tx`, `ack-rx`, `log-rx`, `output`, `nic-rx`) can be kept off its core.

/// Why a CPU list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    #[error("'{0}' is not a CPU list: give CPU numbers and ranges, e.g. 1 or 0,2 or 0-3")]
    Syntax(String),
    #[error("CPU {cpu} does not exist here (this machine has CPUs 0-{last}); pick CPUs from `nproc`")]
    NoSuchCpu { cpu: usize, last: usize },
    #[error("cannot pin {what} to CPUs {list}: {source}; is the CPU offline or outside this cgroup's cpuset?")]
    Pin {
        what: &'static str,
        list: String,
        #[source]
        source: std::io::Error,
    },
}

/// A set of CPUs, as parsed from `--cpu` / `--vcpu-cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList {
    cpus: Vec<usize>,
}

impl CpuList {
    /// Parses `0`, `0,2`, `0-3`, `0-1,3` against a machine with `available` CPUs.
    pub fn parse(text: &str, available: usize) -> Result<CpuList, AffinityError> {
        let syntax = || AffinityError::Syntax(text.to_string());
        let mut cpus = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
                None => (part.parse::<usize>(), part.parse::<usize>()),
            };
            let (lo, hi) = (lo.map_err(|_| syntax())?, hi.map_err(|_| syntax())?);
            if lo > hi {
                return Err(syntax());
            }
            for cpu in lo..=hi {
                if cpu >= available || cpu >= libc::CPU_SETSIZE as usize {
                    return Err(AffinityError::NoSuchCpu { cpu, last: available.saturating_sub(1) });
                }
                if !cpus.contains(&cpu) {
                    cpus.push(cpu);
                }
            }
        }
        cpus.sort_unstable();
        Ok(CpuList { cpus })
    }

    /// Parses against the CPUs this machine has online.
    pub fn parse_here(text: &str) -> Result<CpuList, AffinityError> {
        let available = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        // available_parallelism honours a narrower affinity or cgroup quota; the CPU
        // numbers that exist are what sysconf reports.
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        CpuList::parse(text, usize::try_from(online).unwrap_or(available).max(available))
    }

    /// The CPUs, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Pins the calling thread (and the threads it starts from now on) to these CPUs;
    /// `what` names it in the error.
    pub fn pin_current_thread(&self, what: &'static str) -> Result<(), AffinityError> {
        // SAFETY: cpu_set_t is a plain bit array for which all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in &self.cpus {
            // SAFETY: `cpu` < CPU_SETSIZE (checked in parse), so the bit is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`, which
        // lives across the call.
        let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if ret != 0 {
            return Err(AffinityError::Pin { what, list: self.to_string(), source: std::io::Error::last_os_error() });
        }
        Ok(())
    }
}

impl std::fmt::Display for CpuList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_parse_sorted_without_duplicates() {
        assert_eq!(CpuList::parse("1", 2).expect("1").cpus(), [1]);
        assert_eq!(CpuList::parse("3,0-2, 1", 4).expect("3,0-2, 1").cpus(), [0, 1, 2, 3]);
        assert_eq!(CpuList::parse("0-1", 2).expect("0-1").to_string(), "0,1");
    }

    #[test]
    fn a_cpu_past_the_last_one_is_refused_and_the_last_one_is_not() {
        assert_eq!(CpuList::parse("1", 2).expect("the last CPU").cpus(), [1]);
        assert!(matches!(CpuList::parse("2", 2), Err(AffinityError::NoSuchCpu { cpu: 2, last: 1 })));
        assert!(matches!(CpuList::parse("0-2", 2), Err(AffinityError::NoSuchCpu { cpu: 2, last: 1 })));
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in ["", "x", "1-", "-1", "2-1", "1,,2", "1.5"] {
            assert!(matches!(CpuList::parse(bad, 8), Err(AffinityError::Syntax(_))), "{bad:?} was accepted");
        }
    }

    #[test]
    fn pinning_a_thread_shows_in_its_allowed_cpus() {
        let list = CpuList::parse("0", 1).expect("cpu 0");
        let allowed = std::thread::spawn(move || {
            list.pin_current_thread("the test thread").expect("pin to CPU 0");
            let tid = nix::unistd::gettid();
            std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("status")
        })
        .join()
        .expect("thread");
        let line = allowed.lines().find(|l| l.starts_with("Cpus_allowed_list:")).expect("Cpus_allowed_list");
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}
