//! Soak: kill-and-re-pair cycles under INCR load. Each cycle kills the host of
//! the current primary; its backup goes live; a fresh backup joins it on the
//! dead host; repeat. Afterwards the counter must equal the acknowledged INCRs
//! (plus at most those in flight), no connection may have been reset, and no
//! replica may have reported divergence.
//!
//! `SOAK_CYCLES` sets the number of cycles (default 3, the short form that runs
//! in the test suite); `scripts/soak.sh` runs a long one.
use ftvmm_tests::load::run_incr_load;
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, BACKUP_LISTEN, PRIMARY_LISTEN};
use ftvmm_tests::vm::{in_netns, spawn_in_netns, VmProcess};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn no_divergence(vm: &VmProcess) {
    let err = vm.stderr();
    assert!(!err.contains("diverged"), "a replica reported divergence: {err}");
}

#[test]
fn kill_and_rejoin_cycles_under_load_keep_every_acknowledged_write() {
    let _turn = serial();
    let cycles: usize = std::env::var("SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let topo = Topology::up();
    let first = pair::start_with(&topo, &[], &["--listen", BACKUP_LISTEN], None);
    let (mut primary, mut backup) = (first.primary, first.backup);
    let mut primary_host = "host-a";
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let load = spawn_in_netns(&topo, "client", move || run_incr_load(GUEST, "soak", 4, s));
    let started = Instant::now();

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
        let fresh = pair::join(&topo, dead_host, live_addr, &["--listen", rejoin_listen]);
        primary = std::mem::replace(&mut backup, fresh);
        primary_host = live_host;
        println!("cycle {}: primary now on {primary_host} after {:.1} s", cycle + 1, started.elapsed().as_secs_f64());
    }
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    let reports = load.join().expect("load");
    no_divergence(&primary);
    no_divergence(&backup);

    let final_value = in_netns(&topo, "client", || get("soak"));
    for r in &reports {
        assert!(r.error.is_none(), "a client connection failed during the soak: {r:?}");
    }
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let in_flight = reports.iter().filter(|r| r.in_flight).count() as u64;
    println!("{cycles} cycles: acked {acked}, in flight {in_flight}, final {final_value}");
    assert!(final_value as u64 >= acked, "acknowledged writes lost: final {final_value} < acked {acked}");
    assert!(final_value as u64 <= acked + in_flight, "final {final_value} > acked {acked} + in flight {in_flight}");
}
