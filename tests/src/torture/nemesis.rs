//! The nemesis: a seeded schedule of faults against the group's members.
//!
//! ```text
//!   repeat until the run's end:
//!     traffic for 0.3-1.5 s
//!     one fault, drawn by weight:
//!       kill      kill -9 of a member's host (the primary 2 times in 3), restart after 0-1.5 s
//!                 with the same --data-dir (with --wipe-data: half the time emptied first)
//!       pause     SIGSTOP of a member (the primary 2 times in 3) for 0.5-4 s, then SIGCONT
//!       partition a member's link down for 0.5-3 s (3 members: now and then two members,
//!                 leaving none with a majority), then up
//!       slow      what a member receives is slowed (netem 5-50 ms, or a 1 Mbit/s token
//!                 bucket where the kernel lacks netem) for 1-4 s
//!     wait until the group is whole again (one primary, every other member following
//!     in sync), up to RECOVERY; a group that does not recover is reported, and the run goes on
//! ```
//!
//! Every draw comes from one generator seeded by `--seed`, so a schedule can be run
//! again; timing on a loaded machine still varies, as Jepsen's does.
use crate::netns::Topology;
use crate::replica::{Replicas, MEMBER_HOSTS};
use crate::status::fetch;
use crate::torture::clients::Rng;
use std::time::{Duration, Instant};

/// How long the group may take to be whole again after a fault.
pub const RECOVERY: Duration = Duration::from_secs(60);

/// What the nemesis did, by kind.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub kills: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub slow_links: u64,
    /// Restarts after a kill that began with an empty `--data-dir` (`--wipe-data`).
    pub wipes: u64,
    /// Faults after which the group was not whole within [`RECOVERY`].
    pub unrecovered: u64,
    /// One line per fault: when (s since the start) and what.
    pub log: Vec<String>,
}

impl Faults {
    /// Every fault.
    pub fn total(&self) -> u64 {
        self.kills + self.pauses + self.partitions + self.slow_links
    }
}

/// One member's status says it is primary.
fn is_primary(topo: &Topology, i: usize) -> bool {
    fetch(topo, MEMBER_HOSTS[i]).is_some_and(|s| s.contains("\"member_role\":\"primary\""))
}

/// One primary and every other member following it in sync.
pub fn whole(topo: &Topology, n: usize) -> bool {
    let status: Vec<String> = (0..n).map(|i| fetch(topo, MEMBER_HOSTS[i]).unwrap_or_default()).collect();
    let primaries = status.iter().filter(|s| s.contains("\"member_role\":\"primary\"")).count();
    let following = status
        .iter()
        .filter(|s| s.contains("\"member_role\":\"follower\"") && s.contains("\"protected\":true"))
        .count();
    primaries == 1 && following == n - 1
}

/// Waits until the group is [`whole`], up to `limit`.
pub fn wait_whole(topo: &Topology, n: usize, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if whole(topo, n) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Slows what `host` receives (`ms` = 0 undoes it), on the switch's port to it in the
/// lan namespace, so a follower's log arrives late while the clients' replies do not
/// wait: a netem delay of `ms`, or where the kernel has no netem, a token bucket
/// (1 Mbit/s, queueing up to 4 x `ms`). Returns which, or `None` if `tc` could do neither.
pub fn slow(topo: &Topology, host: &str, ms: u64) -> Option<&'static str> {
    let tc = |args: &[&str]| topo.command("lan", "tc").args(args).output().is_ok_and(|o| o.status.success());
    if ms == 0 {
        return tc(&["qdisc", "del", "dev", host, "root"]).then_some("none");
    }
    let delay = format!("{ms}ms");
    if tc(&["qdisc", "replace", "dev", host, "root", "netem", "delay", &delay]) {
        return Some("netem");
    }
    let latency = format!("{}ms", ms * 4);
    tc(&["qdisc", "replace", "dev", host, "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", &latency])
        .then_some("tbf 1mbit")
}

/// The nemesis of one run.
pub struct Nemesis {
    rng: Rng,
    n: usize,
    t0: Instant,
    /// Whether `tc` can slow a link on this machine (known after the first try).
    slow_works: Option<bool>,
    /// Half the kills restart the member with its `--data-dir` emptied.
    pub wipe: bool,
    pub faults: Faults,
}

impl Nemesis {
    pub fn new(seed: u64, n: usize, t0: Instant) -> Nemesis {
        Nemesis { rng: Rng(seed), n, t0, slow_works: None, wipe: false, faults: Faults::default() }
    }

    fn note(&mut self, what: String) {
        let line = format!("{:8.3}s {what}", self.t0.elapsed().as_secs_f64());
        self.faults.log.push(line);
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below(hi - lo))
    }

    /// A victim: the primary 2 times in 3 (when there is one), else any member.
    fn victim(&mut self, topo: &Topology) -> usize {
        let any = self.rng.below(self.n as u64) as usize;
        if self.rng.below(3) < 2 {
            if let Some(p) = (0..self.n).find(|&i| is_primary(topo, i)) {
                return p;
            }
        }
        any
    }

    /// Traffic, then one fault, then waits for the group to be whole.
    pub fn round(&mut self, topo: &Topology, r: &mut Replicas) {
        let quiet = self.ms(300, 1_500);
        std::thread::sleep(quiet);
        let kind = self.rng.below(10);
        let v = self.victim(topo);
        let host = MEMBER_HOSTS[v];
        match kind {
            0..=3 => {
                let down = self.ms(1, 1_500);
                self.note(format!("kill -9 member {} ({host}), restart after {down:?}", v + 1));
                r.kill(topo, v);
                std::thread::sleep(down);
                if self.wipe && self.rng.below(2) == 0 {
                    // A new disk: the member forgets its ballot (epoch and vote).
                    let _ = std::fs::remove_dir_all(r.data_dir(v));
                    self.note(format!("member {}'s --data-dir wiped before the restart", v + 1));
                    self.faults.wipes += 1;
                }
                r.restart(topo, v);
                self.faults.kills += 1;
            }
            4..=5 => {
                let pause = self.ms(500, 4_000);
                self.note(format!("SIGSTOP member {} for {pause:?}", v + 1));
                let pid = r.members[v].pid();
                signal(pid, nix::sys::signal::Signal::SIGSTOP);
                std::thread::sleep(pause);
                signal(pid, nix::sys::signal::Signal::SIGCONT);
                self.faults.pauses += 1;
            }
            6..=8 => {
                let cut = self.ms(500, 3_000);
                let mut hosts = vec![v];
                if self.n == 3 && self.rng.below(4) == 0 {
                    hosts.push((v + 1 + self.rng.below(2) as usize) % 3);
                }
                let names: Vec<String> = hosts.iter().map(|i| format!("{}", i + 1)).collect();
                self.note(format!("partition: member(s) {} cut off for {cut:?}", names.join("+")));
                for &i in &hosts {
                    topo.link(MEMBER_HOSTS[i], false);
                }
                std::thread::sleep(cut);
                for &i in &hosts {
                    topo.link(MEMBER_HOSTS[i], true);
                }
                self.faults.partitions += 1;
            }
            _ => {
                let ms = 5 + self.rng.below(45);
                let hold = self.ms(1_000, 4_000);
                if self.slow_works != Some(false) {
                    let how = slow(topo, host, ms);
                    self.slow_works = Some(how.is_some());
                    if let Some(how) = how {
                        self.note(format!("slow link to member {} ({how}, {ms} ms) for {hold:?}", v + 1));
                        std::thread::sleep(hold);
                        slow(topo, host, 0);
                        self.faults.slow_links += 1;
                    }
                }
            }
        }
        if !wait_whole(topo, self.n, RECOVERY) {
            self.faults.unrecovered += 1;
            self.note(format!("the group is not whole {RECOVERY:?} after the fault"));
        }
    }
}
