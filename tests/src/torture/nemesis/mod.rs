//! The nemesis: a seeded schedule of faults against the group's members.
//!
//! ```text
//!   repeat until the run's end:
//!     traffic for 0.3-1.5 s
//!     one fault, drawn by weight (of 20):
//!       7 kill     kill -9 of a member's host (the primary 2 times in 3), restart after
//!                  0-1.5 s with its --data-dir, or (1 time in 3, unless --keep-data)
//!                  without it: the directory is emptied first (a new disk)
//!       3 pause    SIGSTOP of a member (the primary 2 times in 3) for 0.5-4 s, then SIGCONT
//!       3 cut      a member's link down for 0.5-3 s (3 members: now and then two members,
//!                  leaving none with a majority), then up
//!       3 one-way  for 0.5-3 s, one direction only (nft on the switch): everything the
//!                  member sends is lost, or everything sent to it, or only what it sends
//!                  to one other member, or only what one other member sends to it
//!       2 slow     the logging link to a follower (what it receives) slowed for 1-4 s:
//!                  netem 5-50 ms, or a 1 Mbit/s token bucket where the kernel lacks netem
//!       2 witness  (2 members; with 3 it is a cut) the file witness away for 0.5-4 s;
//!                  half the time a member (the primary 2 times in 3) is killed while it
//!                  is away and restarted once it is back
//!     wait until the group is whole again (one primary, every other member following
//!     in sync), up to RECOVERY; a group that does not recover is reported, and the run goes on
//! ```
//!
//! Every draw comes from one generator seeded by `--seed`, and every fault is logged
//! with its draws, so a schedule can be run again; which member is primary when a
//! victim is drawn, and timing on a loaded machine, still vary, as in Jepsen.
pub mod net;
pub mod witness;

use crate::netns::Topology;
use crate::replica::{Replicas, MEMBER_HOSTS};
use crate::status::fetch;
use crate::torture::clients::Rng;
use net::OneWay;
use std::time::{Duration, Instant};

pub use net::slow;

/// How long the group may take to be whole again after a fault.
pub const RECOVERY: Duration = Duration::from_secs(60);

/// What the nemesis did, by kind.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// `kill -9` of a member's host (each followed by a restart).
    pub kills: u64,
    pub pauses: u64,
    /// Links down (both directions).
    pub partitions: u64,
    /// One direction dropped.
    pub one_way: u64,
    pub slow_links: u64,
    /// Times the file witness went away (and came back).
    pub witness_outages: u64,
    /// Restarts after a kill that began with an empty `--data-dir`.
    pub wipes: u64,
    /// Faults after which the group was not whole within [`RECOVERY`].
    pub unrecovered: u64,
    /// Things the nemesis could not do (a tool that failed): each one line.
    pub failures: Vec<String>,
    /// One line per fault: when (s since the start) and what.
    pub log: Vec<String>,
}

impl Faults {
    /// Every fault.
    pub fn total(&self) -> u64 {
        self.kills + self.pauses + self.partitions + self.one_way + self.slow_links + self.witness_outages
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

/// Undoes every network fault and brings the witness back: for the end of a run
/// (every fault heals itself; this is for safety).
pub fn heal_all(topo: &Topology, r: &Replicas, n: usize) {
    for h in MEMBER_HOSTS.iter().take(n) {
        topo.link(h, true);
        slow(topo, h, 0);
    }
    net::heal(topo);
    if let Some(w) = r.witness_dir() {
        let _ = witness::start(&w);
    }
}

/// The nemesis of one run.
pub struct Nemesis {
    rng: Rng,
    n: usize,
    t0: Instant,
    /// Whether `tc` can slow a link on this machine (known after the first try).
    slow_works: Option<bool>,
    /// Kills restart the member without its `--data-dir` 1 time in 3.
    pub wipe: bool,
    pub faults: Faults,
}

impl Nemesis {
    pub fn new(seed: u64, n: usize, t0: Instant) -> Nemesis {
        Nemesis { rng: Rng(seed), n, t0, slow_works: None, wipe: true, faults: Faults::default() }
    }

    fn note(&mut self, what: String) {
        let line = format!("{:8.3}s {what}", self.t0.elapsed().as_secs_f64());
        self.faults.log.push(line);
    }

    fn fail(&mut self, what: String) {
        self.note(format!("NEMESIS FAILED: {what}"));
        self.faults.failures.push(what);
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

    /// Another member than `v`, drawn.
    fn other(&mut self, v: usize) -> usize {
        (v + 1 + self.rng.below(self.n as u64 - 1) as usize) % self.n
    }

    /// Traffic, then one fault, then waits for the group to be whole.
    pub fn round(&mut self, topo: &Topology, r: &mut Replicas) {
        let quiet = self.ms(300, 1_500);
        std::thread::sleep(quiet);
        let kind = self.rng.below(20);
        let v = self.victim(topo);
        match kind {
            0..=6 => self.kill(topo, r, v),
            7..=9 => self.pause(r, v),
            10..=12 => self.partition(topo, v),
            13..=15 => self.one_way(topo, v),
            16..=17 => self.slow(topo, v),
            _ if r.witness_dir().is_some() => self.witness(topo, r, v),
            _ => self.partition(topo, v),
        }
        if !wait_whole(topo, self.n, RECOVERY) {
            self.faults.unrecovered += 1;
            self.note(format!("the group is not whole {RECOVERY:?} after the fault"));
        }
    }

    fn kill(&mut self, topo: &Topology, r: &mut Replicas, v: usize) {
        let down = self.ms(1, 1_500);
        let wipe = self.rng.below(3) == 0 && self.wipe;
        let how = if wipe { "without its --data-dir (emptied: a new disk)" } else { "with its --data-dir" };
        self.note(format!("kill -9 member {} ({}), restart after {down:?} {how}", v + 1, MEMBER_HOSTS[v]));
        r.kill(topo, v);
        std::thread::sleep(down);
        if wipe {
            let dir = r.data_dir(v);
            let emptied = std::fs::remove_dir_all(&dir).and_then(|()| std::fs::create_dir_all(&dir));
            if let Err(e) = emptied {
                self.fail(format!("cannot empty {}: {e}", dir.display()));
            }
            self.faults.wipes += 1;
        }
        r.restart(topo, v);
        self.faults.kills += 1;
    }

    fn pause(&mut self, r: &mut Replicas, v: usize) {
        let pause = self.ms(500, 4_000);
        self.note(format!("SIGSTOP member {} for {pause:?}", v + 1));
        let pid = r.members[v].pid();
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(pause);
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        self.faults.pauses += 1;
    }

    fn partition(&mut self, topo: &Topology, v: usize) {
        let cut = self.ms(500, 3_000);
        let mut hosts = vec![v];
        if self.n == 3 && self.rng.below(4) == 0 {
            hosts.push(self.other(v));
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

    fn one_way(&mut self, topo: &Topology, v: usize) {
        let hold = self.ms(500, 3_000);
        let (me, peer) = (Some(MEMBER_HOSTS[v]), Some(MEMBER_HOSTS[self.other(v)]));
        let cut = match self.rng.below(4) {
            0 => OneWay { from: me, to: None },
            1 => OneWay { from: None, to: me },
            2 => OneWay { from: me, to: peer },
            _ => OneWay { from: peer, to: me },
        };
        self.note(format!("one-way partition for {hold:?}: {}", cut.describe()));
        if let Err(e) = net::cut(topo, cut) {
            return self.fail(e);
        }
        std::thread::sleep(hold);
        net::heal(topo);
        self.faults.one_way += 1;
    }

    /// The logging link: what a follower receives (a follower if there is one).
    fn slow(&mut self, topo: &Topology, v: usize) {
        let ms = 5 + self.rng.below(45);
        let hold = self.ms(1_000, 4_000);
        let v = if is_primary(topo, v) { self.other(v) } else { v };
        let host = MEMBER_HOSTS[v];
        if self.slow_works == Some(false) {
            return;
        }
        let how = slow(topo, host, ms);
        self.slow_works = Some(how.is_some());
        let Some(how) = how else {
            return self.fail(format!("tc can slow no link here (neither netem nor tbf): {host}"));
        };
        self.note(format!("slow logging link to member {} ({how}, {ms} ms) for {hold:?}", v + 1));
        std::thread::sleep(hold);
        slow(topo, host, 0);
        self.faults.slow_links += 1;
    }

    fn witness(&mut self, topo: &Topology, r: &mut Replicas, v: usize) {
        let Some(dir) = r.witness_dir() else { return };
        let away = self.ms(500, 4_000);
        let kill = self.rng.below(2) == 0;
        let with = if kill {
            format!(", member {} killed meanwhile (restarted once it is back)", v + 1)
        } else {
            String::new()
        };
        self.note(format!("the witness away for {away:?}{with}"));
        if let Err(e) = witness::stop(&dir) {
            return self.fail(e);
        }
        if kill {
            r.kill(topo, v);
        }
        std::thread::sleep(away);
        if let Err(e) = witness::start(&dir) {
            self.fail(e);
        }
        if kill {
            r.restart(topo, v);
            self.faults.kills += 1;
        }
        self.faults.witness_outages += 1;
    }
}
