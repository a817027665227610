//! A VM that boots to serve the guest's address first asks the network whether
//! someone already does (vmm/src/host/address_check.rs): a primary restarted on its
//! old host, next to the backup that went live when that host died, refuses to boot
//! instead of serving beside it — even as a new group the arbiter would let in.
use ftvmm_tests::client;
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, GUEST_CIDR, PRIMARY_LISTEN};
use ftvmm_tests::vm::{in_netns, VmProcess};
use ftvmm_tests::TempDir;
use std::time::{Duration, Instant};

/// `exit_code::ADDRESS_IN_USE` in the monitor.
const ADDRESS_IN_USE: i32 = 8;

fn incr(key: &str) -> String {
    let (mut s, mut r) = client::connect();
    client::command(&mut s, &mut r, &format!("INCR {key}"))
}

#[test]
fn a_primary_restarted_next_to_the_backup_that_replaced_it_refuses_to_boot() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("address-check");
    let arbiter = format!("file:{}", dir.dir("claims").display());
    let mut p = pair::start(&topo, &["--arbiter", &arbiter], None);
    assert_eq!(in_netns(&topo, "client", || incr("k")), ":1");
    topo.kill_all("host-a");
    p.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(10));
    assert_eq!(in_netns(&topo, "client", || incr("k")), ":2", "the backup serves");

    // The supervisor on host-a starts the primary again, as it was first started (a new
    // group: no --group-name), with the same arbiter. The arbiter would let it in.
    let args =
        ["primary", "--listen", PRIMARY_LISTEN, "--tap", "tap0", "--guest-ip", GUEST_CIDR, "--arbiter", &arbiter];
    let t0 = Instant::now();
    let mut again = VmProcess::spawn(&topo, "host-a", &args);
    let status = again.wait(Duration::from_secs(20)).expect("the restarted primary exits instead of serving");
    let took = t0.elapsed();
    let err = again.stderr();
    assert_eq!(status.code(), Some(ADDRESS_IN_USE), "{err}");
    assert!(err.contains("another machine answers for the guest's address 10.77.0.10"), "{err}");
    assert!(err.contains("ftvmm backup --primary"), "it says what to do instead: {err}");
    assert!(!err.contains("kv-server: listening"), "it never booted the guest: {err}");
    println!("refused after {took:?}");

    // The live VM was not disturbed: it serves the same counter, on new connections.
    for want in 3..=5 {
        assert_eq!(in_netns(&topo, "client", || incr("k")), format!(":{want}"));
    }
    assert!(p.backup.wait(Duration::from_millis(100)).is_none(), "the live VM keeps running");

    // Nobody answers once the live VM is gone too: the same command boots.
    topo.kill_all("host-b");
    let mut fresh = VmProcess::spawn(&topo, "host-a", &args);
    fresh.wait_for_line_in_stderr("address check: nobody answers", Duration::from_secs(15));
    let err = fresh.stderr();
    assert!(!err.contains("in use"), "{err}");
}
