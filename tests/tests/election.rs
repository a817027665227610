//! The replica group's election (`ftvmm replica`): real processes in namespaces,
//! `kill -9` of whole hosts, links taken down. Each test checks what clients saw
//! (every acknowledged INCR kept, connections alive, a new client served) and
//! what the members logged (never two primaries elected in one epoch).
use ftvmm_tests::client::{fresh_client_check, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::replica::Replicas;
use ftvmm_tests::vm::in_netns;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How many times the kill test kills the primary (FTVMM_ELECTION_KILLS overrides).
fn kills() -> usize {
    std::env::var("FTVMM_ELECTION_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn assert_one_primary_per_epoch(r: &Replicas) {
    let epochs = r.elected_epochs();
    let unique: BTreeSet<u64> = epochs.iter().copied().collect();
    assert_eq!(unique.len(), epochs.len(), "two members were elected in one epoch: {:?}", r.lines("ELECTED"));
}

#[test]
fn sync_three_members_lose_their_primary_twenty_times_and_keep_every_acknowledged_write() {
    let _turn = serial();
    let topo = Topology::up();
    let mut r = Replicas::start(&topo, 3, &["--replication", "sync"], &[]);
    let load = Load::start(&topo, "e", 4);
    let mut gaps = Vec::new();
    for kill in 0..kills() {
        std::thread::sleep(Duration::from_millis(400));
        let old = r.primaries(&topo);
        assert_eq!(old.len(), 1, "kill {kill}: exactly one primary before the kill: {old:?}");
        let resumed_before = r.lines("resumed the log from the primary's backlog").len();
        let t0 = Instant::now();
        r.kill(&topo, old[0]);
        let new = r
            .wait_primary(&topo, Some(old[0]), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("kill {kill}: no new primary: {:?}", r.lines("election")));
        gaps.push(t0.elapsed());
        // The killed member restarts with its old data directory and must come back as a
        // follower of the new primary, by state transfer, never as a primary.
        r.restart(&topo, old[0]);
        r.wait_following(&topo, old[0], Duration::from_secs(20));
        assert_eq!(r.primaries(&topo), vec![new], "kill {kill}: exactly one primary after the restart");
        let restarted = r.members[old[0]].stderr();
        assert!(restarted.contains("backup paired"), "kill {kill}: the restarted member joins by state transfer");
        assert!(!restarted.contains("ELECTED"), "kill {kill}: a restarted member never leads at once");
        // The third member resumed from the new primary's log: no state transfer.
        let resumed_now = r.lines("resumed the log from the primary's backlog").len();
        assert!(resumed_now > resumed_before, "kill {kill}: the other follower must resume, not get the state");
    }
    std::thread::sleep(Duration::from_millis(500));
    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("e"));
    assert_exact(&reports, final_value);
    fresh_client_check(&topo).unwrap_or_else(|e| panic!("after {} kills: {e}", kills()));
    assert_one_primary_per_epoch(&r);
    gaps.sort();
    println!(
        "{} kills: new primary seen in status after median {:?}, max {:?}; counter {final_value}",
        gaps.len(),
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}
