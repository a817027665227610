//! A file witness that goes away stays away: no member re-creates its directory.
//! The long fault campaign's seed 2011 (2 members, semi-sync) found one that did:
//! its follower killed and the witness away, the primary could not keep its
//! majority, stood down, re-executed itself to rejoin — and its launch created the
//! witness directory again, empty: a second witness that remembers no vote.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::replica::Replicas;
use ftvmm_tests::torture::nemesis::witness;
use std::time::{Duration, Instant};

#[test]
fn a_member_that_stands_down_and_rejoins_while_the_witness_is_away_does_not_recreate_it() {
    let _turn = serial();
    let topo = Topology::up();
    let mut r = Replicas::start(&topo, 2, &["--replication", "semi-sync"], &[]);
    let dir = r.witness_dir().expect("a file witness");
    let primary = r.wait_primary(&topo, None, Duration::from_secs(20)).expect("a primary");
    let follower = 1 - primary;

    // The witness goes away and then the follower dies: the primary has no majority
    // left and cannot win the witness's vote to go on alone.
    witness::stop(&dir).expect("take the witness away");
    r.kill(&topo, follower);
    // It stands down and re-executes itself to rejoin (ftvmm's main: rejoin_as_follower).
    let t0 = Instant::now();
    while r.lines("rejoining the group as a follower").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the primary never stood down:\n{}", r.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its new process has launched by now (it says what its ballot holds) ...
    let t0 = Instant::now();
    while r.lines("replica group member; its ballot says").len() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the re-executed member never started:\n{}", r.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // ... and the witness is still away: nobody made an empty one in its place.
    assert!(!dir.exists(), "a member re-created the witness directory:\n{}", r.logs());
    assert!(
        !r.lines("the witness cannot be used now").is_empty(),
        "the re-executed member says why the witness gives no vote:\n{}",
        r.logs()
    );

    // The witness comes back with its record: it is the same witness, which still
    // remembers its vote. (Whether the group comes back depends on what the two
    // members kept: with only their ballots on disk, both restarted without the VM's
    // state — the primary lost it when it re-executed itself — so nobody holds it:
    // README, Limits.)
    witness::start(&dir).expect("the witness comes back, whole");
}
