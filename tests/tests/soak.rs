//! Soak: kill-and-re-pair cycles under INCR load. Each cycle kills the host of
//! the current primary; its backup goes live; a fresh backup joins it on the
//! dead host; repeat. Afterwards the counter must equal the acknowledged INCRs
//! (plus at most those in flight), no connection may have been reset, and no
//! replica may have reported divergence.
//!
//! `SOAK_CYCLES` sets the number of cycles (default 3, the short form that runs
//! in the test suite); `scripts/soak.sh` runs a long one.
use ftvmm_tests::client::get_int;
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, BACKUP_LISTEN, PRIMARY_LISTEN};
use ftvmm_tests::vm::{in_netns, VmProcess};
use std::time::{Duration, Instant};

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
    let load = Load::start(&topo, "soak", 4);
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
    let reports = load.stop();
    no_divergence(&primary);
    no_divergence(&backup);

    let final_value = in_netns(&topo, "client", || get_int("soak"));
    println!("{cycles} cycles");
    assert_exact(&reports, final_value);
}
