//! Re-protection: after a failover a new backup joins the new primary by state
//! transfer, and the cycle can go on.
use ftvmm_tests::load::{run_incr_load, ConnReport};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, BACKUP_LISTEN, PRIMARY_LISTEN};
use ftvmm_tests::vm::{in_netns, spawn_in_netns};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const GUEST: &str = "10.77.0.10:6379";

fn get(key: &str) -> i64 {
    let mut s = TcpStream::connect(GUEST).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(format!("GET {key}\r\n").as_bytes()).expect("send");
    let mut r = BufReader::new(s);
    let (mut header, mut value) = (String::new(), String::new());
    r.read_line(&mut header).expect("header");
    r.read_line(&mut value).expect("value");
    value.trim_end().parse().expect("integer")
}

fn check_exact(reports: &[ConnReport], final_value: i64) {
    for r in reports {
        assert!(r.error.is_none(), "a client connection failed: {r:?}");
    }
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let in_flight = reports.iter().filter(|r| r.in_flight).count() as u64;
    println!("acked {acked}, in flight {in_flight}, final {final_value}");
    assert!(acked > 100, "the load did not run");
    assert!(final_value as u64 >= acked, "acknowledged writes lost: final {final_value} < acked {acked}");
    assert!(final_value as u64 <= acked + in_flight, "final {final_value} > acked {acked} + in flight {in_flight}");
}

#[test]
fn a_second_failover_after_rejoining_loses_no_acknowledged_write() {
    let _turn = serial();
    let topo = Topology::up();
    let mut first = pair::start_with(&topo, &[], &["--listen", BACKUP_LISTEN], None);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let load = spawn_in_netns(&topo, "client", move || run_incr_load(GUEST, "n", 4, s));
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
    stop.store(true, Ordering::Relaxed);
    let reports = load.join().expect("load");

    let final_value = in_netns(&topo, "client", || get("n"));
    check_exact(&reports, final_value);
    let pause = first.backup.stderr().lines().find(|l| l.contains("new backup joined")).unwrap_or_default().to_string();
    println!("join: {pause}");
}

#[test]
fn state_transferred_under_load_replays_to_the_primarys_final_digest() {
    let _turn = serial();
    let topo = Topology::up();
    let mut first = pair::start(&topo, &[], None);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let load = spawn_in_netns(&topo, "client", move || run_incr_load(GUEST, "w", 4, s));
    std::thread::sleep(Duration::from_millis(500));
    // The backup dies; a new one joins the primary while writes are in flight.
    topo.kill_all("host-b");
    first.primary.wait_for_line_in_stderr("UNPROTECTED", Duration::from_secs(5));
    let mut joined = pair::join(&topo, "host-b", PRIMARY_LISTEN, &[]);
    first.primary.wait_for_line_in_stderr("new backup joined", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let reports = load.join().expect("load");

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
    assert_eq!(in_netns(&topo, "client", || incr_once("r")), 1, "the pair keeps serving");
    assert!(first.backup.wait(Duration::from_millis(200)).is_none(), "the first backup is undisturbed");
}

fn incr_once(key: &str) -> i64 {
    let mut s = TcpStream::connect(GUEST).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(format!("INCR {key}\r\n").as_bytes()).expect("send");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("reply");
    line.trim_end().trim_start_matches(':').parse().expect("integer")
}
