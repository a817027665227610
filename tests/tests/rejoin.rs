//! Re-protection: after a failover a new backup joins the new primary by state
//! transfer, and the cycle can go on.
use ftvmm_tests::client::{command, connect, fresh_client_check, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, BACKUP_LISTEN, PRIMARY_LISTEN};
use ftvmm_tests::status::{self, field, flag, wait_until, STATUS};
use ftvmm_tests::vm::in_netns;
use std::time::{Duration, Instant};

#[test]
fn a_second_failover_after_rejoining_loses_no_acknowledged_write() {
    let _turn = serial();
    let topo = Topology::up();
    let mut first = pair::start_with(&topo, &[], &["--listen", BACKUP_LISTEN], None);
    let load = Load::start(&topo, "n", 4);
    std::thread::sleep(Duration::from_millis(800));

    // Failover 1: host-a dies, host-b goes live.
    topo.kill_all("host-a");
    first.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    // A new backup on host-a joins the new primary on host-b, under load.
    let mut second = pair::join(&topo, "host-a", BACKUP_LISTEN, &["--listen", PRIMARY_LISTEN]);
    first.backup.wait_for_line_in_stderr("new backup joined", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    // Failover 2: host-b dies, host-a goes live again.
    topo.kill_all("host-b");
    second.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    let reports = load.stop();

    let final_value = in_netns(&topo, "client", || get_int("n"));
    assert_exact(&reports, final_value);
    let pause = first.backup.stderr().lines().find(|l| l.contains("new backup joined")).unwrap_or_default().to_string();
    println!("join: {pause}");
}

#[test]
fn state_transferred_under_load_replays_to_the_primarys_final_digest() {
    let _turn = serial();
    let topo = Topology::up();
    let mut first = pair::start(&topo, &[], None);
    let load = Load::start(&topo, "w", 4);
    std::thread::sleep(Duration::from_millis(500));
    // The backup dies; a new one joins the primary while writes are in flight.
    topo.kill_all("host-b");
    first.primary.wait_for_line_in_stderr("UNPROTECTED", Duration::from_secs(5));
    let mut joined = pair::join(&topo, "host-b", PRIMARY_LISTEN, &[]);
    first.primary.wait_for_line_in_stderr("new backup joined", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    let reports = load.stop();

    // A clean stop ends the log with the primary's final state digest; the joined
    // backup must replay to exactly that state.
    assert!(first.primary.terminate().success(), "{}", first.primary.stderr());
    let status = joined.wait(Duration::from_secs(15)).expect("the joined backup stops with the primary");
    let err = joined.stderr();
    assert!(status.success(), "joined backup: {err}");
    assert!(err.contains("EndOfLog(Shutdown)"), "the joined backup must reach the end record: {err}");
    for r in &reports {
        assert!(r.error.is_none(), "{r:?}");
    }
}

#[test]
fn a_second_backup_is_refused_while_one_is_in_lockstep() {
    let _turn = serial();
    let topo = Topology::up();
    let mut first = pair::start(&topo, &["--max-followers", "1"], None);

    let mut cmd = topo.command("host-b", ftvmm_tests::ftvmm_bin());
    cmd.args(["backup", "--primary", PRIMARY_LISTEN, "--guest-ip", pair::GUEST_CIDR, "--connect-timeout-secs", "2"])
        .env("FTVMM_LOG", "warn");
    let out = ftvmm_tests::output_within(cmd, Duration::from_secs(20));

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("already has a backup"), "{err}");
    let reply = in_netns(&topo, "client", || {
        let (mut s, mut r) = connect();
        command(&mut s, &mut r, "INCR r")
    });
    assert_eq!(reply, ":1", "the pair keeps serving");
    assert!(first.backup.wait(Duration::from_millis(200)).is_none(), "the first backup is undisturbed");
}

/// Issue 18: a backup that joins once the VM has run past the replay-lag limit must
/// re-protect it. With positions starting at 0 the primary's vCPU waited forever for
/// the new backup at the first exit after the join, while heartbeats said all was well.
///
/// `limit: None` is the default limit (1024 exits since issue 14; it was 262,144, and
/// that run's guest is still the exit-storm workload, back-to-back device exits, so that
/// the join comes far past it) instead of the KV server under load.
fn a_join_past_the_replay_lag_limit_reprotects(limit: Option<u64>) {
    let _turn = serial();
    let topo = Topology::up();
    let limit_arg = limit.map(|l| l.to_string());
    let mut args = vec!["--status", STATUS];
    match &limit_arg {
        Some(l) => args.extend(["--max-replay-lag-exits", l]),
        None => args.extend(["--workload", "exit-storm"]),
    }
    let past = limit.unwrap_or(1024) * 5 / 4;
    let mut first = if limit.is_some() { pair::start(&topo, &args, None) } else { pair::start_booted(&topo, &args) };
    let load = limit.map(|_| Load::start(&topo, "late", 4));
    wait_until(&topo, "host-a", Duration::from_secs(240), |s| field(s, "exit_index") > Some(past));

    topo.kill_all("host-b");
    first.primary.wait_for_line_in_stderr("UNPROTECTED", Duration::from_secs(5));
    let joined_from = Instant::now();
    let _joined = pair::join(&topo, "host-b", PRIMARY_LISTEN, &args);
    let (at_join, _) = wait_until(&topo, "host-a", Duration::from_secs(5), |s| flag(s, "protected") == Some(true));
    let join_exit = field(&at_join, "exit_index").expect("exit_index");
    // Protected means the backup replays: its position moves past the join, and the
    // primary's vCPU keeps going.
    let (moved, _) = wait_until(&topo, "host-a", Duration::from_secs(5), |s| {
        field(s, "replayed_through") > Some(join_exit) && field(s, "exit_index") > Some(join_exit + 1000)
    });
    let reprotected_in = joined_from.elapsed();
    println!("joined at exit {join_exit}; backup replaying after {reprotected_in:?}: {moved}");
    assert_eq!(field(&moved, "watchdog_trips"), Some(0), "{moved}");
    assert!(reprotected_in < Duration::from_secs(3), "re-protection took {reprotected_in:?}");
    if let Some(load) = load {
        fresh_client_check(&topo).unwrap_or_else(|e| panic!("after the join: {e}"));
        let reports = load.stop();
        let final_value = in_netns(&topo, "client", || get_int("late"));
        assert_exact(&reports, final_value);
    }
    assert!(status::fetch(&topo, "host-a").is_some_and(|s| flag(&s, "protected") == Some(true)));
}

#[test]
fn a_join_past_a_small_replay_lag_limit_reprotects_instead_of_freezing_the_primary() {
    a_join_past_the_replay_lag_limit_reprotects(Some(2000));
}

#[test]
fn a_join_past_the_default_replay_lag_limit_reprotects_instead_of_freezing_the_primary() {
    a_join_past_the_replay_lag_limit_reprotects(None);
}
