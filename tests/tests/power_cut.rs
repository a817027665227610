//! A power cut: every member of a replica group killed at once (`kill -9` of all
//! three hosts), then started again on its `--data-dir`. With `--fsync always` a
//! member acknowledges, and a primary sends, only what is on its disk, so each one
//! restarts holding everything it acknowledged and keeps its vote: the group elects
//! the most up-to-date member, which goes live on its disk's log, and every write a
//! client was told of is there — the clients' connections too. (Without it, a
//! restarted member may lack what it acknowledged and votes only once a primary
//! has answered it, so a group whose members all restart cannot elect anyone:
//! README, Limits; the election model's `with_fsync_always_*` checks.)
use ftvmm_tests::client::{fresh_client_check, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::replica::Replicas;
use ftvmm_tests::vm::in_netns;
use std::time::{Duration, Instant};

#[test]
fn with_fsync_always_a_group_killed_all_at_once_comes_back_with_every_acknowledged_write() {
    let _turn = serial();
    let topo = Topology::up();
    let flags = ["--replication", "sync", "--fsync", "always", "--checkpoint-secs", "1"];
    let mut r = Replicas::start(&topo, 3, &flags, &[]);
    let primary = r.wait_primary(&topo, None, Duration::from_secs(20)).expect("a primary");
    for i in (0..3).filter(|&i| i != primary) {
        r.wait_following(&topo, i, Duration::from_secs(20));
    }
    let load = Load::start(&topo, "power", 2);
    std::thread::sleep(Duration::from_secs(3));

    // The power goes: every host at once, the load still running.
    for i in 0..3 {
        r.kill(&topo, i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    for i in 0..3 {
        r.restart(&topo, i);
    }
    let again = r.wait_primary(&topo, None, Duration::from_secs(40)).unwrap_or_else(|| {
        panic!("the group never elected a primary after the power cut:\n{}", r.logs());
    });
    let elected_after = t0.elapsed();
    for i in (0..3).filter(|&i| i != again) {
        r.wait_following(&topo, i, Duration::from_secs(40));
    }
    let kept = r.lines("everything this member acknowledged is on its disk, so it keeps its vote").len();
    assert_eq!(kept, 3, "every member kept its vote:\n{}", r.logs());
    assert!(!r.lines("going live on it").is_empty(), "the winner went live on its disk's log:\n{}", r.logs());

    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("power"));
    assert_exact(&reports, final_value);
    fresh_client_check(&topo).unwrap_or_else(|e| panic!("a new client after the power cut: {e}"));
    r.assert_one_primary_per_epoch();
    println!("power cut: member {} elected {:?} after the restart; counter {final_value}", again + 1, elected_after);
}
