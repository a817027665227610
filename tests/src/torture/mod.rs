//! `ftvmm-torture`: a fault campaign against a replica group, checked the way Jepsen
//! checks databases.
//!
//! ```text
//!   client namespace                         host-a / host-b / host-c
//!   +---------------------------+            +-------------------------------+
//!   | clients (N connections)   |  GET/SET/  | ftvmm replica --id 1..3       |
//!   |  record invoke, complete, |  INCR/CAS/ |  (2 members: + file witness)  |
//!   |  result of every op       |  GETDEL -> |  --replication MODE           |
//!   +---------------------------+  guest     +-------------------------------+
//!                 |                                   ^  kill -9 + restart (with or without
//!                 v                                   |  --data-dir), SIGSTOP/CONT, links
//!            history (per key)                   nemesis (seeded)   down, one-way drops,
//!                 |                                                 slow logging link,
//!                 v  at the end, with the group whole again:        witness away
//!   1. linearizable, per key (linear.rs: Wing & Gong / Lowe)
//!   2. no acknowledged INCR of the counter lost: final >= acked, <= acked + indeterminate
//!   3. one primary per epoch: every "ELECTED ... primary of epoch E" names a distinct E
//!   4. no output released by a member in an epoch it did not win (epochs.rs: every
//!      process's GOING LIVE / boot / going-alone against its own wins)
//!   5. SIGTERM to the primary: every follower in sync replays to the end record and has
//!      the primary's final digest (its replay checks it: "EndOfLog(Shutdown)", exit 0)
//! ```
//!
//! [`run`] returns a [`Report`]; the binary (`src/bin/ftvmm-torture.rs`) prints its
//! one-line summary, writes the history on failure and sets the exit code.
pub mod clients;
pub mod epochs;
pub mod nemesis;
pub mod scenario;
mod verdict;

pub use verdict::{check_history, check_members, Findings};

use crate::netns::Topology;
use crate::replica::{Replicas, MEMBER_HOSTS};
use clients::{Clients, Shared};
use nemesis::{plan, Faults, Nemesis};
use std::time::{Duration, Instant};

/// A campaign's settings (the CLI's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// 3, or 2 with a file witness.
    pub members: usize,
    /// `--replication` of every member.
    pub replication: String,
    pub seed: u64,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many operations (whichever comes first).
    pub ops: Option<u64>,
    /// Client connections.
    pub clients: usize,
    /// Extra flags for every member.
    pub extra: Vec<String>,
    /// Environment variables for every member (the test-only sabotage switch).
    pub env: Vec<(String, String)>,
    /// A third of the kills restart the member with an empty `--data-dir` (a new disk:
    /// the member forgets its ballot; on by default, `--keep-data` turns it off).
    pub wipe: bool,
    /// How often each kind of fault is drawn (`--mix`).
    pub mix: plan::Mix,
    /// Two members with an etcd witness (`--witness etcd`) instead of a file witness:
    /// the nemesis's witness outage is then a `kill -9` of etcd and its restart.
    pub etcd_witness: bool,
    /// The namespaces' prefix (`NETNS_PREFIX`); `None`: a unique one per run.
    pub netns_prefix: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            members: 3,
            replication: "sync".into(),
            seed: 1,
            duration: Some(Duration::from_secs(60)),
            ops: None,
            clients: 4,
            extra: Vec::new(),
            env: Vec::new(),
            wipe: true,
            mix: plan::Mix::default(),
            etcd_witness: false,
            netns_prefix: None,
        }
    }
}

/// What a campaign saw.
#[derive(Debug)]
pub struct Report {
    pub config: Config,
    pub faults: Faults,
    pub findings: Findings,
    /// Every operation, in the order the clients recorded them.
    pub history: Vec<crate::history::Op>,
    /// Every member's log, for a failure report.
    pub member_logs: Vec<String>,
    pub elapsed: Duration,
    /// How the clients did compare-and-set (`None`: no campaign ran).
    pub cas: Option<clients::CasMode>,
}

impl Report {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.findings.ok()
    }

    /// `N ops, K faults (..), linearizable, 0 lost` and the seed.
    pub fn summary(&self) -> String {
        let f = &self.faults;
        format!(
            "{} ops, {} faults ({} kills ({} restarted without their --data-dir), {} pauses, {} partitions, {} one-way, \
             {} slow links, {} witness outages{}{}), {}; {} members{}, {}, CAS by {}, seed {}, {:.0} s",
            self.history.len(),
            f.total(),
            f.kills,
            f.wipes,
            f.pauses,
            f.partitions,
            f.one_way,
            f.slow_links,
            f.witness_outages,
            if f.unrecovered > 0 { format!(", {} not recovered", f.unrecovered) } else { String::new() },
            if f.failures.is_empty() { String::new() } else { format!(", NEMESIS FAILED {} times", f.failures.len()) },
            self.findings.summary(),
            self.config.members,
            match (self.config.members, self.config.etcd_witness) {
                (2, true) => " and an etcd witness",
                (2, false) => " and a file witness",
                _ => "",
            },
            self.config.replication,
            match self.cas {
                Some(clients::CasMode::SetNx) => "SET NX",
                Some(clients::CasMode::Watch) => "WATCH/MULTI/EXEC",
                None => "-",
            },
            self.config.seed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs one campaign: the caller holds the test lock ([`crate::pair::serial`]).
pub fn run(cfg: &Config) -> Report {
    let t_start = Instant::now();
    crate::require_tool("nft");
    crate::require_tool("tc");
    let topo = match &cfg.netns_prefix {
        Some(p) => Topology::up_with_prefix(p),
        None => Topology::up(),
    };
    let mut extra: Vec<&str> = vec!["--replication", &cfg.replication];
    extra.extend(cfg.extra.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let etcd = (cfg.etcd_witness && cfg.members == 2).then(|| crate::etcd::start(&topo));
    let mut r = match etcd {
        Some(_) => {
            let spec = format!("etcd:{}", crate::etcd::url());
            Replicas::launch_on_witness(&topo, cfg.members, &extra, &env, &spec)
        }
        None => Replicas::launch(&topo, cfg.members, &extra, &[], &env),
    };
    if !nemesis::wait_whole(&topo, cfg.members, FORMING) {
        // No campaign without a group; what the members logged is the finding.
        let status: Vec<String> =
            MEMBER_HOSTS.iter().take(cfg.members).map(|h| crate::status::fetch(&topo, h).unwrap_or_default()).collect();
        let findings = Findings {
            not_formed: Some(format!("not whole {FORMING:?} after the start; status:\n{}", status.join("\n"))),
            ..Findings::default()
        };
        let member_logs = member_logs(&r);
        return Report {
            config: cfg.clone(),
            faults: Faults::default(),
            findings,
            history: Vec::new(),
            member_logs,
            elapsed: t_start.elapsed(),
            cas: None,
        };
    }
    let shared = Shared::new();
    let clients = Clients::start(&topo, cfg.clients, cfg.seed, shared.clone());
    let cas = Some(clients.cas);
    let mut nemesis = Nemesis::new(cfg.seed, cfg.members, shared.t0);
    nemesis.wipe = cfg.wipe;
    nemesis.mix = cfg.mix;
    nemesis.etcd = etcd;
    let t0 = Instant::now();
    let done = |shared: &Shared| {
        cfg.duration.is_some_and(|d| t0.elapsed() >= d)
            || cfg.ops.is_some_and(|n| shared.ops.load(std::sync::atomic::Ordering::Relaxed) >= n)
    };
    while !done(&shared) {
        nemesis.round(&topo, &mut r);
    }
    // Heal whatever is left (every fault heals itself; this is for safety) and settle.
    nemesis::heal_all(&topo, &r, cfg.members);
    let whole_at_end = nemesis::wait_whole(&topo, cfg.members, nemesis::RECOVERY);
    std::thread::sleep(Duration::from_millis(500));
    let logs = clients.stop();
    let mut history: Vec<_> = logs.iter().flat_map(|l| l.ops.iter().cloned()).collect();
    let client_errors: Vec<String> = logs.iter().flat_map(|l| l.errors.iter().cloned()).collect();
    // The final reads: one more client, after every other one stopped.
    let finals = crate::vm::in_netns(&topo, "client", {
        let shared = shared.clone();
        let id = cfg.clients;
        move || final_reads(id, &shared)
    });
    history.extend(finals);
    let mut findings = check_history(&history);
    findings.client_errors = client_errors;
    findings.whole_at_end = whole_at_end;
    verdict::check_members(&mut findings, &topo, &mut r, cfg.members);
    let member_logs = member_logs(&r);
    let (faults, elapsed) = (nemesis.faults, t_start.elapsed());
    Report { config: cfg.clone(), faults, findings, history, member_logs, elapsed, cas }
}

/// How long a new group may take to elect a primary and have every other member follow.
pub const FORMING: Duration = Duration::from_secs(60);

/// Every member process's log (the ones running, then the dead).
fn member_logs(r: &Replicas) -> Vec<String> {
    r.members
        .iter()
        .chain(r.graveyard.iter())
        .enumerate()
        .map(|(k, m)| format!("=== process {k} (pid {}) ===\n{}", m.pid(), m.stderr()))
        .collect()
}

/// A GET of every key on a fresh connection, recorded like any other op.
pub fn final_reads(id: usize, shared: &Shared) -> Vec<crate::history::Op> {
    use crate::history::{Call, Op};
    let mut ops = Vec::new();
    let mut conn = clients::Conn::open(crate::client::GUEST).ok();
    for key in clients::keys() {
        let invoke = shared.t0.elapsed().as_micros() as u64;
        let got = conn.as_mut().map(|c| c.run(key, Call::Get));
        let complete = shared.t0.elapsed().as_micros() as u64;
        ops.push(match got {
            Some(Ok(Some(outcome))) => Op::done(id, key, Call::Get, outcome, invoke, complete),
            _ => Op::indeterminate(id, key, Call::Get, invoke),
        });
    }
    ops
}
