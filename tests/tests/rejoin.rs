//! Re-protection: after a failover a new backup joins the new primary by state
//! transfer, and the cycle can go on.
use ftvmm_tests::client::{command, connect, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, BACKUP_LISTEN, PRIMARY_LISTEN};
use ftvmm_tests::vm::in_netns;
use std::time::Duration;

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
    let mut first = pair::start(&topo, &[], None);

    let out = topo
        .command("host-b", ftvmm_tests::ftvmm_bin())
        .args(["backup", "--primary", PRIMARY_LISTEN, "--guest-ip", pair::GUEST_CIDR, "--connect-timeout-secs", "2"])
        .env("FTVMM_LOG", "warn")
        .output()
        .expect("run a second backup");

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
