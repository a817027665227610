//! A file witness that goes away stays away: no member re-creates its directory.
//! The long fault campaign's seed 2011 (2 members, semi-sync) found one that did:
//! its follower killed and the witness away, the primary could not keep its
//! majority, stood down, re-executed itself to rejoin — and its launch created the
//! witness directory again, empty: a second witness that remembers no vote.
//!
//! The same campaign found the group of two then stayed down for good: the
//! re-executed primary counted as restarted, and so did the killed follower, so no
//! member could vote or stand though the state was on the primary's disk. Now the
//! primary seals its log on its disk when it stands down and keeps its vote: once
//! the witness is back it leads again, on its log, and every acknowledged write is
//! there.
use ftvmm_tests::client::{fresh_client_check, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::replica::Replicas;
use ftvmm_tests::torture::nemesis::witness;
use ftvmm_tests::vm::in_netns;
use std::time::{Duration, Instant};

#[test]
fn a_member_that_stands_down_while_the_witness_is_away_does_not_recreate_it_and_leads_again_on_its_sealed_log() {
    let _turn = serial();
    let topo = Topology::up();
    let mut r = Replicas::start(&topo, 2, &["--replication", "semi-sync"], &[]);
    let dir = r.witness_dir().expect("a file witness");
    let primary = r.wait_primary(&topo, None, Duration::from_secs(20)).expect("a primary");
    let follower = 1 - primary;
    r.wait_following(&topo, follower, Duration::from_secs(20));
    // Writes are acknowledged before the faults and while they begin.
    let load = Load::start(&topo, "away", 2);
    std::thread::sleep(Duration::from_secs(2));

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

    // It sealed its log before it started over, and holds it whole again.
    assert_eq!(r.lines("this member's log is sealed on its disk through exit").len(), 1, "{}", r.logs());
    let t0 = Instant::now();
    while r.lines("holds it whole: it keeps its vote").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the re-executed member never read its seal:\n{}", r.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The witness comes back with its record: it is the same witness, which still
    // remembers its vote. The follower comes back too, without what it acknowledged
    // (killed, it counts as restarted). The old primary alone holds the log: with the
    // witness's vote it leads again, on its log, and the follower rejoins it.
    witness::start(&dir).expect("the witness comes back, whole");
    r.restart(&topo, follower);
    let again = r.wait_primary(&topo, None, Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("the group of two never elected a primary again:\n{}", r.logs());
    });
    assert_eq!(again, primary, "only the member that sealed its log may lead:\n{}", r.logs());
    assert!(!r.lines("won epoch").is_empty(), "it won on its sealed log:\n{}", r.logs());
    r.wait_following(&topo, follower, Duration::from_secs(30));
    let reports = load.stop();
    if std::env::var_os("FTVMM_SHOW_LOGS").is_some() {
        println!("{}", r.logs());
    }
    let final_value = in_netns(&topo, "client", || get_int("away"));
    assert_exact(&reports, final_value);
    fresh_client_check(&topo).unwrap_or_else(|e| panic!("a new client after the group came back: {e}"));
    r.assert_one_primary_per_epoch();
}
