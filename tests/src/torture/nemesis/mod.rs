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
//! Every draw of a round is made from one generator seeded by `--seed` before the
//! round does anything ([`plan`]), so a seed names its schedule (`ftvmm-torture
//! --plan` prints it) and every fault is logged as it happens; which member is
//! primary when a victim is taken, and timing on a loaded machine, still vary, as in
//! Jepsen.
pub mod net;
pub mod plan;
pub mod witness;

use crate::etcd::Etcd;
use crate::netns::Topology;
use crate::replica::{Replicas, MEMBER_HOSTS};
use crate::status::fetch;
use crate::torture::clients::Rng;
use net::OneWay;
use plan::Fault;
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
    /// How often each kind of fault is drawn.
    pub mix: plan::Mix,
    /// The group's etcd witness, when it has one (else a file witness, or none).
    pub etcd: Option<Etcd>,
    pub faults: Faults,
}

impl Nemesis {
    pub fn new(seed: u64, n: usize, t0: Instant) -> Nemesis {
        Nemesis {
            rng: Rng(seed),
            n,
            t0,
            slow_works: None,
            wipe: true,
            mix: plan::Mix::default(),
            etcd: None,
            faults: Faults::default(),
        }
    }

    fn note(&mut self, what: String) {
        let line = format!("{:8.3}s {what}", self.t0.elapsed().as_secs_f64());
        self.faults.log.push(line);
    }

    fn fail(&mut self, what: String) {
        self.note(format!("NEMESIS FAILED: {what}"));
        self.faults.failures.push(what);
    }

    /// Traffic, then one fault (drawn first: [`plan::draw`]), then waits for the group
    /// to be whole.
    pub fn round(&mut self, topo: &Topology, r: &mut Replicas) {
        let witness = r.witness_dir().is_some() || self.etcd.is_some();
        let round = plan::draw(&mut self.rng, self.n, witness, self.wipe, &self.mix);
        std::thread::sleep(round.quiet);
        // The victim: the primary when the draw says so and there is one, else `any`.
        let primary = if round.primary { (0..self.n).find(|&i| is_primary(topo, i)) } else { None };
        let v = primary.unwrap_or(round.any);
        let other = |offset: usize| (v + offset) % self.n;
        match round.fault {
            Fault::Kill { down, wipe } => self.kill(topo, r, v, down, wipe),
            Fault::Pause { hold } => self.pause(r, v, hold),
            Fault::Partition { hold, also } => self.partition(topo, v, also.map(other), hold),
            Fault::OneWay { hold, way, peer } => {
                let (me, peer) = (Some(MEMBER_HOSTS[v]), Some(MEMBER_HOSTS[other(peer)]));
                let cut = match way {
                    0 => OneWay { from: me, to: None },
                    1 => OneWay { from: None, to: me },
                    2 => OneWay { from: me, to: peer },
                    _ => OneWay { from: peer, to: me },
                };
                self.one_way(topo, cut, hold)
            }
            Fault::Slow { ms, hold, alt } => {
                // The logging link runs to a follower: not to the primary.
                let v = if is_primary(topo, v) { other(alt) } else { v };
                self.slow(topo, v, ms, hold)
            }
            Fault::Witness { away, kill } => self.witness(topo, r, v, away, kill),
        }
        if !wait_whole(topo, self.n, RECOVERY) {
            self.faults.unrecovered += 1;
            self.note(format!("the group is not whole {RECOVERY:?} after the fault"));
        }
    }

    fn kill(&mut self, topo: &Topology, r: &mut Replicas, v: usize, down: Duration, wipe: bool) {
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

    fn pause(&mut self, r: &mut Replicas, v: usize, hold: Duration) {
        self.note(format!("SIGSTOP member {} for {hold:?}", v + 1));
        let pid = r.members[v].pid();
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(hold);
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        self.faults.pauses += 1;
    }

    fn partition(&mut self, topo: &Topology, v: usize, also: Option<usize>, hold: Duration) {
        let hosts: Vec<usize> = std::iter::once(v).chain(also).collect();
        let names: Vec<String> = hosts.iter().map(|i| format!("{}", i + 1)).collect();
        self.note(format!("partition: member(s) {} cut off for {hold:?}", names.join("+")));
        for &i in &hosts {
            topo.link(MEMBER_HOSTS[i], false);
        }
        std::thread::sleep(hold);
        for &i in &hosts {
            topo.link(MEMBER_HOSTS[i], true);
        }
        self.faults.partitions += 1;
    }

    fn one_way(&mut self, topo: &Topology, cut: OneWay, hold: Duration) {
        self.note(format!("one-way partition for {hold:?}: {}", cut.describe()));
        if let Err(e) = net::cut(topo, cut) {
            return self.fail(e);
        }
        std::thread::sleep(hold);
        net::heal(topo);
        self.faults.one_way += 1;
    }

    fn slow(&mut self, topo: &Topology, v: usize, ms: u64, hold: Duration) {
        if self.slow_works == Some(false) {
            return;
        }
        let host = MEMBER_HOSTS[v];
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

    fn witness(&mut self, topo: &Topology, r: &mut Replicas, v: usize, away: Duration, kill: bool) {
        let with = if kill {
            format!(", member {} killed meanwhile (restarted once it is back)", v + 1)
        } else {
            String::new()
        };
        let dir = r.witness_dir();
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.kill();
            self.note(format!("kill -9 of the etcd witness, restarted on its data after {away:?}{with}"));
        } else if let Some(dir) = &dir {
            self.note(format!("the witness away for {away:?}{with}"));
            if let Err(e) = witness::stop(dir) {
                return self.fail(e);
            }
        } else {
            return;
        }
        if kill {
            r.kill(topo, v);
        }
        std::thread::sleep(away);
        let back = match (self.etcd.as_mut(), &dir) {
            (Some(etcd), _) => etcd.restart(topo),
            (None, Some(dir)) => witness::start(dir),
            (None, None) => Ok(()),
        };
        if let Err(e) = back {
            self.fail(e);
        }
        if kill {
            r.restart(topo, v);
            self.faults.kills += 1;
        }
        self.faults.witness_outages += 1;
    }
}
