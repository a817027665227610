//! `ftvmm-torture`: a seeded fault campaign against a replica group, with a
//! linearizability checker (see `ftvmm_tests::torture` for the design).
//!
//! ```text
//! ftvmm-torture [--members 3|2] [--replication MODE] [--seed N] [--minutes M | --seconds S]
//!               [--ops N] [--clients C] [--history FILE] [--logs FILE] [--member-flag FLAG]...
//!               [--keep-data]                   (no kill loses the member's --data-dir; by
//!                                                default a third of the restarts begin empty)
//!               [--witness file|etcd]           (2 members: the witness; an etcd witness's
//!                                                outages are kill -9 of etcd and a restart)
//!               [--mix kill=7,pause=3,cut=3,one-way=3,slow=2,witness=2]   (the default
//!                                                weights of the fault kinds; name only those
//!                                                to change)
//!               [--unsafe-release-before-ack]   (a broken build: debug builds of ftvmm only)
//! ftvmm-torture --check FILE      recheck a saved history
//! ftvmm-torture --plan [--members M] [--seed N] [--rounds R]   print a seed's schedule
//! ```
//!
//! `NETNS_PREFIX` in the environment names the namespaces (default: a unique prefix).
//! Exit 0 when every check passed, 1 on an anomaly (the history and the members' logs
//! are written), 2 on a usage error. Needs root, KVM and the `ftvmm` binary of the same
//! build (`cargo build --workspace`); it takes the tests' lock /tmp/ftvmm-tests.lock.
use ftvmm_tests::history::parse_line;
use ftvmm_tests::torture::nemesis::plan;
use ftvmm_tests::torture::{check_history, run, Config};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: ftvmm-torture [--members 3|2] [--replication sync|semi-sync|async|quorum:K] [--seed N] \
[--minutes M | --seconds S] [--ops N] [--clients C] [--history FILE] [--logs FILE] [--member-flag FLAG]... \
[--keep-data] [--witness file|etcd] [--mix KIND=WEIGHT,...] [--unsafe-release-before-ack] \
| --check HISTORY-FILE | --plan [--members 3|2] [--seed N] [--rounds R] [--keep-data] [--mix KIND=WEIGHT,...]";

struct Args {
    config: Config,
    history: Option<String>,
    logs: Option<String>,
    check: Option<String>,
    /// `--plan`: print this many rounds of the seed's schedule and stop.
    plan: Option<usize>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { config: Config::default(), history: None, logs: None, check: None, plan: None };
    let mut limit_set = false;
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v:?}"));
        match flag.as_str() {
            "--members" => {
                a.config.members = match num(value()?)? {
                    n @ (2 | 3) => n as usize,
                    n => return Err(format!("--members {n}: 3, or 2 with a witness")),
                }
            }
            "--replication" => a.config.replication = value()?,
            "--seed" => a.config.seed = num(value()?)?,
            "--minutes" => {
                a.config.duration = Some(Duration::from_secs(num(value()?)? * 60));
                limit_set = true;
            }
            "--seconds" => {
                a.config.duration = Some(Duration::from_secs(num(value()?)?));
                limit_set = true;
            }
            "--ops" => {
                a.config.ops = Some(num(value()?)?);
                if !limit_set {
                    a.config.duration = None;
                }
            }
            "--clients" => a.config.clients = num(value()?)?.clamp(1, 64) as usize,
            "--history" => a.history = Some(value()?),
            "--logs" => a.logs = Some(value()?),
            "--member-flag" => a.config.extra.push(value()?),
            // A third of the kills restart without the --data-dir unless told otherwise
            // (--wipe-data, the old switch, is the default now).
            "--wipe-data" => a.config.wipe = true,
            "--keep-data" => a.config.wipe = false,
            "--mix" => a.config.mix = value()?.parse()?,
            "--witness" => {
                a.config.etcd_witness = match value()?.as_str() {
                    "etcd" => true,
                    "file" => false,
                    w => return Err(format!("--witness {w:?}: file (a shared directory) or etcd")),
                }
            }
            "--check" => a.check = Some(value()?),
            "--plan" => a.plan = Some(a.plan.unwrap_or(30)),
            "--rounds" => a.plan = Some(num(value()?)?.clamp(1, 100_000) as usize),
            // A broken build, to show the checker catches one: members release output
            // before the ack. Honoured by debug builds of ftvmm only (see vmm's group.rs).
            "--unsafe-release-before-ack" => {
                a.config.env.push(("FTVMM_UNSAFE_RELEASE_BEFORE_ACK".into(), "1".into()));
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.config.etcd_witness && a.config.members != 2 {
        return Err("--witness etcd: only a group of 2 members has a witness (add --members 2)".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(rounds) = args.plan {
        // The draws only: which member is primary at each round is the run's to decide.
        let c = &args.config;
        for (k, round) in plan::plan(c.seed, c.members, c.members == 2, c.wipe, &c.mix, rounds).iter().enumerate() {
            println!("round {k}: {round}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(file) = args.check {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let ops: Result<Vec<_>, _> = text.lines().filter(|l| !l.trim().is_empty()).map(parse_line).collect();
        let ops = match ops {
            Ok(ops) => ops,
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        };
        let mut f = check_history(&ops);
        f.whole_at_end = true; // a saved history says nothing about the group's end
        println!("{}: {} ops, {}", file, ops.len(), f.summary());
        print!("{}", f.reports());
        return if f.anomalies() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    let mut config = args.config.clone();
    // NETNS_PREFIX names the namespaces (a long run on a shared machine); else a unique prefix.
    config.netns_prefix = std::env::var("NETNS_PREFIX").ok().filter(|p| !p.is_empty());
    let _turn = ftvmm_tests::pair::serial();
    let report = run(&config);
    let ok = report.ok();
    if !ok || args.history.is_some() {
        let path = args.history.clone().unwrap_or_else(|| format!("torture-seed{}.history", args.config.seed));
        let text: String = report.history.iter().map(|o| format!("{o}\n")).collect();
        match std::fs::write(&path, text) {
            Ok(()) => eprintln!("history: {path}"),
            Err(e) => eprintln!("cannot write the history to {path}: {e}"),
        }
    }
    if !ok || args.logs.is_some() {
        let path = args.logs.clone().unwrap_or_else(|| format!("torture-seed{}.logs", args.config.seed));
        let mut text = report.faults.log.join("\n");
        text.push_str("\n\n");
        text.push_str(&report.findings.reports());
        text.push_str(&report.findings.client_errors.join("\n"));
        text.push_str("\n\n");
        text.push_str(&report.member_logs.join("\n"));
        match std::fs::write(&path, text) {
            Ok(()) => eprintln!("faults, reports and member logs: {path}"),
            Err(e) => eprintln!("cannot write the logs to {path}: {e}"),
        }
    }
    if !ok {
        eprint!("{}", report.findings.reports());
    }
    println!("{}", report.summary());
    let (f, keys) = (&report.faults, report.findings.keys.len());
    // Stand-downs whose member sealed its log on its disk (and so kept its vote).
    let sealed: usize = report
        .member_logs
        .iter()
        .map(|l| l.matches("this member's log is sealed on its disk through exit").count())
        .sum();
    println!(
        "figures: ops={} kills={} pauses={} partitions={} one_way={} slow_links={} witness_outages={} wipes={} unrecovered={} \
         nemesis_failures={} cas_ok={} histories={keys} anomalies={} lost={} sealed={sealed}",
        report.history.len(),
        f.kills,
        f.pauses,
        f.partitions,
        f.one_way,
        f.slow_links,
        f.witness_outages,
        f.wipes,
        f.unrecovered,
        f.failures.len(),
        report.history.iter().filter(|o| o.outcome == ftvmm_tests::history::Outcome::Cas(true)).count(),
        report.findings.anomalies(),
        report.findings.lost
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_set_the_campaign_and_mistakes_are_refused() {
        let a =
            args("--members 2 --replication semi-sync --seed 9 --minutes 3 --history h --unsafe-release-before-ack")
                .expect("valid");
        assert_eq!((a.config.members, a.config.replication.as_str(), a.config.seed), (2, "semi-sync", 9));
        assert_eq!(a.config.duration, Some(Duration::from_secs(180)));
        assert_eq!(a.history.as_deref(), Some("h"));
        assert_eq!(a.config.env, vec![("FTVMM_UNSAFE_RELEASE_BEFORE_ACK".to_string(), "1".to_string())]);
        let ops = args("--ops 5000").expect("valid");
        assert_eq!((ops.config.ops, ops.config.duration), (Some(5000), None), "--ops alone has no time limit");
        assert!(args("").expect("defaults").config.env.is_empty(), "the sabotage is off by default");
        assert!(args("").expect("defaults").config.wipe, "kills restart without the --data-dir now and then");
        assert!(!args("--keep-data").expect("valid").config.wipe);
        assert_eq!(args("--mix kill=14,cut=1").expect("valid").config.mix.kill, 14);
        assert!(args("--mix kill=-1").is_err());
        assert!(args("--mix").is_err());
        assert!(args("--members 2 --witness etcd").expect("valid").config.etcd_witness);
        assert!(args("--witness etcd").err().is_some_and(|e| e.contains("--members 2")), "3 members have no witness");
        assert!(args("--members 2 --witness zookeeper").is_err());
        assert_eq!(args("--plan --rounds 5").expect("valid").plan, Some(5));
        assert_eq!(args("--plan").expect("valid").plan, Some(30));
        assert!(args("--members 4").is_err());
        assert!(args("--seed").is_err());
        assert!(args("--seed x").is_err());
        assert!(args("--frobnicate").is_err());
    }
}
