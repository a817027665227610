//! Soak: kill-and-re-pair cycles under INCR load. Each cycle kills the host of
//! the current primary; its backup goes live; a fresh backup joins it on the
//! dead host; repeat. Afterwards the counter must equal the acknowledged INCRs
//! (plus at most those in flight), no connection may have been reset, and no
//! replica may have reported divergence.
//!
//! After **every** cycle a brand-new client, with its ARP cache emptied, must
//! resolve the guest's address and get an answer on a new connection, and the
//! new primary must be protected again with its backup replaying past the join:
//! a VM that keeps old connections but answers nobody new (issue 18) fails here.
//!
//! `SOAK_CYCLES` sets the number of cycles (default 5, the short form that runs
//! in the test suite); `SOAK_MAX_REPLAY_LAG` the flow-control limit (default
//! 1024 here, so even the short form crosses it many times; `scripts/soak.sh`
//! runs a long soak at the monitor's default limit).
use ftvmm_tests::client::{fresh_client_check, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, BACKUP_LISTEN, PRIMARY_LISTEN};
use ftvmm_tests::status::{field, flag, wait_until_or, STATUS};
use ftvmm_tests::vm::{in_netns, VmProcess};
use std::time::{Duration, Instant};

/// The last lines of both VMMs' logs, for a failure message.
fn logs(primary: &VmProcess, backup: &VmProcess) -> String {
    let tail = |v: &VmProcess| {
        let err = v.stderr();
        let lines: Vec<&str> = err.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    format!("primary's log:\n{}\nbackup's log:\n{}", tail(primary), tail(backup))
}

fn no_divergence(vm: &VmProcess) {
    let err = vm.stderr();
    assert!(!err.contains("diverged"), "a replica reported divergence: {err}");
}

#[test]
fn kill_and_rejoin_cycles_under_load_keep_every_acknowledged_write() {
    let _turn = serial();
    let cycles: usize = std::env::var("SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let lag = std::env::var("SOAK_MAX_REPLAY_LAG").unwrap_or_else(|_| "1024".into());
    // A long soak on a machine shared with other work may want a longer failover timeout,
    // so that scheduling stalls are not taken for dead peers (SOAK_FAILOVER_TIMEOUT_MS).
    let timeout = std::env::var("SOAK_FAILOVER_TIMEOUT_MS").unwrap_or_else(|_| "500".into());
    let flags = ["--status", STATUS, "--max-replay-lag-exits", &lag, "--failover-timeout-ms", &timeout];
    let topo = Topology::up();
    let first = pair::start_with(&topo, &flags, &["--listen", BACKUP_LISTEN], None);
    let (mut primary, mut backup) = (first.primary, first.backup);
    let mut primary_host = "host-a";
    let load = Load::start(&topo, "soak", 4);
    let started = Instant::now();
    let mut join_times = Vec::new();
    let mut last_exit = 0;

    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(600));
        let (dead_host, live_host) = if primary_host == "host-a" { ("host-a", "host-b") } else { ("host-b", "host-a") };
        topo.kill_all(dead_host);
        no_divergence(&primary);
        backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
        no_divergence(&backup);
        // The survivor is the primary now; a fresh backup joins it from the dead host.
        let (live_addr, rejoin_listen) =
            if live_host == "host-b" { (BACKUP_LISTEN, PRIMARY_LISTEN) } else { (PRIMARY_LISTEN, BACKUP_LISTEN) };
        let join_started = Instant::now();
        let mut join_flags = flags.to_vec();
        join_flags.extend(["--listen", rejoin_listen]);
        let fresh = pair::join(&topo, dead_host, live_addr, &join_flags);
        primary = std::mem::replace(&mut backup, fresh);
        primary_host = live_host;
        // Protected again: the new backup holds the state and its replay moves past the join.
        let (joined, _) = wait_until_or(
            &topo,
            primary_host,
            Duration::from_secs(10),
            |s| flag(s, "protected") == Some(true),
            || logs(&primary, &backup),
        );
        let join_exit = field(&joined, "exit_index").unwrap_or(0);
        let (now, _) = wait_until_or(
            &topo,
            primary_host,
            Duration::from_secs(10),
            |s| field(s, "replayed_through") > Some(join_exit) && field(s, "exit_index") > Some(join_exit),
            || logs(&primary, &backup),
        );
        let reprotected = join_started.elapsed();
        join_times.push(reprotected);
        if let Err(e) = fresh_client_check(&topo) {
            panic!("cycle {}: a new client cannot reach the guest: {e}\nprimary status: {now}", cycle + 1);
        }
        assert_eq!(field(&now, "watchdog_trips"), Some(0), "cycle {}: {now}", cycle + 1);
        last_exit = field(&now, "exit_index").unwrap_or(0);
        println!(
            "cycle {}: primary now on {primary_host} after {:.1} s; joined at exit {join_exit}, re-protected in {} ms; \
             new client OK",
            cycle + 1,
            started.elapsed().as_secs_f64(),
            reprotected.as_millis()
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    let reports = load.stop();
    no_divergence(&primary);
    no_divergence(&backup);

    let final_value = in_netns(&topo, "client", || get_int("soak"));
    join_times.sort();
    let pct = |p: usize| join_times.get((join_times.len().saturating_sub(1)) * p / 100).map_or(0, |d| d.as_millis());
    println!(
        "soak: {cycles} cycles in {:.0} s, final exit index {last_exit}, max replay lag {lag} exits, failover \
         timeout {timeout} ms; \
         join to re-protected p50 {} ms, p99 {} ms, max {} ms; counter {final_value}",
        started.elapsed().as_secs_f64(),
        pct(50),
        pct(99),
        pct(100)
    );
    assert_exact(&reports, final_value);
    fresh_client_check(&topo).unwrap_or_else(|e| panic!("after the soak: {e}"));
}
