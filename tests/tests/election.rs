//! The replica group's election (`ftvmm replica`): real processes in namespaces,
//! `kill -9` of whole hosts, links taken down. Each test checks what clients saw
//! (every acknowledged INCR kept, connections alive, a new client served) and
//! what the members logged (never two primaries elected in one epoch).
use ftvmm_tests::client::{fresh_client_check, get_int};
use ftvmm_tests::load::{assert_exact, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::replica::{Replicas, MEMBER_HOSTS};
use ftvmm_tests::vm::in_netns;
use std::time::{Duration, Instant};

/// How many times the kill test kills the primary (FTVMM_ELECTION_KILLS overrides).
fn kills() -> usize {
    std::env::var("FTVMM_ELECTION_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
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
        // follower of the new primary — its disk's log resumed, or a diff of the pages that
        // differ (its history as primary is not the new one's) — never as a primary.
        r.restart(&topo, old[0]);
        r.wait_following(&topo, old[0], Duration::from_secs(20));
        assert_eq!(r.primaries(&topo), vec![new], "kill {kill}: exactly one primary after the restart");
        let restarted = r.members[old[0]].stderr();
        assert!(restarted.contains("backup paired"), "kill {kill}: the restarted member pairs");
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
    r.assert_one_primary_per_epoch();
    gaps.sort();
    println!(
        "{} kills: new primary seen in status after median {:?}, max {:?}; counter {final_value}",
        gaps.len(),
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

#[test]
fn the_follower_that_missed_records_does_not_become_primary_even_with_the_higher_priority() {
    let _turn = serial();
    let topo = Topology::up();
    // Priorities 10, 1, 9: whichever member leads first, of the other two the one with
    // the higher priority would lead on equal logs, and is the one that lags.
    let prio = |p: &'static str| -> [&'static str; 2] { ["--priority", p] };
    let priorities = [10, 1, 9];
    let (p1, p2, p3) = (prio("10"), prio("1"), prio("9"));
    let mut r = Replicas::start(&topo, 3, &["--replication", "sync"], &[&p1, &p2, &p3]);
    let first = r.primaries(&topo);
    assert_eq!(first.len(), 1, "one first primary: {first:?}");
    let old = first[0];
    let mut others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    others.sort_by_key(|&i| std::cmp::Reverse(priorities[i]));
    let (lagging, current) = (others[0], others[1]);
    let load = Load::start(&topo, "lag", 4);
    std::thread::sleep(Duration::from_millis(500));
    // The lagging member's link goes down: records sent to it from now on are lost with
    // the primary.
    topo.link(MEMBER_HOSTS[lagging], false);
    std::thread::sleep(Duration::from_millis(150));
    r.kill(&topo, old);
    std::thread::sleep(Duration::from_millis(300));
    topo.link(MEMBER_HOSTS[lagging], true);
    let new = r.wait_primary(&topo, Some(old), Duration::from_secs(10)).expect("a new primary");
    assert_eq!(
        new,
        current,
        "member {} holds the newer log and must lead, not member {} (priority {} over {}): {:?}",
        current + 1,
        lagging + 1,
        priorities[lagging],
        priorities[current],
        r.lines("election")
    );
    r.wait_following(&topo, lagging, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("lag"));
    assert_exact(&reports, final_value);
    r.assert_one_primary_per_epoch();
    r.restart(&topo, old);
    r.wait_following(&topo, old, Duration::from_secs(20));
}

/// Garbage, a slow peer, and forged vote requests (a non-member with a far-future epoch,
/// a member of another group) on every member's peer port: refused and logged; the
/// primary stays the primary and the epoch does not move.
fn hostile_peers_change_nothing(topo: &Topology, r: &Replicas, members: usize) {
    use logging_channel::vote::{self, PeerMessage, VoteRequest};
    use std::io::{Read, Write};
    let before = r.primaries(topo);
    let epochs_before = r.elected_epochs();
    // The members run TLS: a peer in clear is refused before its request is read
    // ("refused a connection"), and all it gets back is a TLS alert.
    let refused = || {
        r.lines("refused a vote").len()
            + r.lines("refused a malformed").len()
            + r.lines("another group").len()
            + r.lines("peer port: refused a connection").len()
    };
    let refused_before = refused();
    let no_answer = |reply: &[u8]| reply.is_empty() || (reply[0] == 0x15 && reply.len() <= 7);
    for i in 0..members {
        let addr: std::net::SocketAddr =
            format!("10.77.0.{}:{}", i + 1, ftvmm_tests::replica::PEER_PORT).parse().unwrap();
        in_netns(topo, "client", move || {
            let send = |bytes: &[u8]| {
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("peer port");
                s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
                let _ = s.write_all(bytes);
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                reply
            };
            send(b"\x10\x00\x00\x00garbage that is not a frame at all");
            let _slow = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("a silent peer");
            let forged = |group, candidate| {
                let mut out = Vec::new();
                let req = VoteRequest {
                    group,
                    epoch: 1_000_000,
                    candidate,
                    priority: 9,
                    log_epoch: u64::MAX,
                    log_exit: u64::MAX,
                };
                vote::encode(&PeerMessage::VoteRequest(req), &mut out);
                out
            };
            // A non-member of this group (its tag is not secret: learn it from a probe).
            let mut probe = Vec::new();
            vote::encode(&PeerMessage::Probe(vote::Probe { group: 0, from: 1 }), &mut probe);
            let reply = send(&probe);
            assert!(no_answer(&reply), "a probe of another group gets no answer: {reply:?}");
            let reply = send(&forged(0, 9));
            assert!(no_answer(&reply), "a vote request of another group gets no answer: {reply:?}");
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.primaries(topo), before, "hostile peers must not change who is primary");
    assert_eq!(r.elected_epochs(), epochs_before, "hostile peers must not cause an election");
    assert!(refused() > refused_before, "refusals are logged");
}

/// A small deterministic generator, so that a failing schedule can be run again.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Isolates a random member `rounds` times under load (seeded); after each heal the
/// group must have one primary with every member following, and at the end every
/// acknowledged INCR is there. An isolated primary must step down.
fn partitions(members: usize, rounds: usize, seed: u64) {
    let _turn = serial();
    let topo = Topology::up();
    let r = Replicas::start(&topo, members, &["--replication", "sync"], &[]);
    let load = Load::start(&topo, "split", 4);
    let mut rng = Lcg(seed);
    let mut primary_isolations = 0;
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(300));
        let before = r.primaries(&topo);
        assert_eq!(before.len(), 1, "seed {seed} round {round}: one primary before the split: {before:?}");
        let victim = rng.below(members as u64) as usize;
        let stepped_down = r.lines("this primary steps down").len();
        topo.link(MEMBER_HOSTS[victim], false);
        std::thread::sleep(Duration::from_millis(1_500));
        topo.link(MEMBER_HOSTS[victim], true);
        let p = r
            .wait_primary(&topo, None, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("seed {seed} round {round}: no primary after healing"));
        for i in (0..members).filter(|&i| i != p) {
            r.wait_following(&topo, i, Duration::from_secs(30));
        }
        assert_eq!(r.primaries(&topo), vec![p], "seed {seed} round {round}: exactly one primary after healing");
        if victim == before[0] {
            primary_isolations += 1;
            // Three members: the isolated primary has no majority. Two and a shared file
            // witness: the split is symmetric (both reach the witness), and whichever
            // claims it first goes on; the other steps down.
            if members == 3 {
                assert_ne!(p, victim, "seed {seed} round {round}: the isolated primary must not lead after the split");
            }
        }
        if p != before[0] {
            assert!(
                r.lines("this primary steps down").len() > stepped_down,
                "seed {seed} round {round}: the old primary must step down: {:?}",
                r.lines("steps down")
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("split"));
    assert_exact(&reports, final_value);
    fresh_client_check(&topo).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    r.assert_one_primary_per_epoch();
    println!("seed {seed}: {rounds} splits of {members} members ({primary_isolations} of the primary), counter {final_value}");
}

/// How many splits each partition test makes (FTVMM_ELECTION_SPLITS overrides).
fn splits(default: usize) -> usize {
    std::env::var("FTVMM_ELECTION_SPLITS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn three_members_survive_random_partitions_with_one_primary_and_every_write() {
    partitions(3, splits(30), 7);
}

#[test]
fn two_members_and_a_witness_survive_random_partitions_with_one_primary_and_every_write() {
    partitions(2, splits(20), 11);
}

#[test]
fn two_members_and_a_witness_fail_over_when_the_primary_is_killed() {
    let _turn = serial();
    let topo = Topology::up();
    let mut r = Replicas::start(&topo, 2, &["--replication", "sync"], &[]);
    let load = Load::start(&topo, "w", 4);
    hostile_peers_change_nothing(&topo, &r, 2);
    for kill in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        let old = r.primaries(&topo);
        assert_eq!(old.len(), 1, "kill {kill}: {old:?}");
        r.kill(&topo, old[0]);
        let new = r.wait_primary(&topo, Some(old[0]), Duration::from_secs(10)).expect("the follower leads");
        // Holding the witness, it serves alone until its peer is back.
        fresh_client_check(&topo).unwrap_or_else(|e| panic!("kill {kill}: the lone primary must serve: {e}"));
        r.restart(&topo, old[0]);
        r.wait_following(&topo, old[0], Duration::from_secs(20));
        assert_eq!(r.primaries(&topo), vec![new], "kill {kill}");
    }
    assert!(!r.lines("witness: yes").is_empty(), "with its peer dead, a member wins only through the witness");
    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("w"));
    assert_exact(&reports, final_value);
    r.assert_one_primary_per_epoch();
}

#[test]
fn a_hung_primary_is_replaced_and_when_it_wakes_it_steps_down_and_rejoins_as_a_follower() {
    let _turn = serial();
    let topo = Topology::up();
    let r = Replicas::start(&topo, 3, &["--replication", "sync"], &[]);
    let load = Load::start(&topo, "hang", 4);
    std::thread::sleep(Duration::from_millis(500));
    let old = r.primaries(&topo)[0];
    let pid = r.members[old].pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().expect("kill").success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let t0 = Instant::now();
    let new = r.wait_primary(&topo, Some(old), Duration::from_secs(10)).expect("the followers elect a new primary");
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    signal("-CONT");
    // It wakes without a majority: it steps down, and the same process starts over as a
    // follower of the new primary.
    r.wait_following(&topo, old, Duration::from_secs(30));
    assert_eq!(r.primaries(&topo), vec![new]);
    assert!(!r.lines("this primary steps down").is_empty(), "{}", r.members[old].stderr());
    fresh_client_check(&topo).unwrap_or_else(|e| panic!("after the hung primary rejoined, a new client: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("hang"));
    assert_exact(&reports, final_value);
    r.assert_one_primary_per_epoch();
    println!("a hang: new primary in status after {took:?}");
}

#[test]
fn with_mirrored_input_the_elected_follower_answers_the_request_the_dead_primary_never_read() {
    // Mirrored input (host/mirror.rs) on every member: the switch copies the guest's
    // frames to every host. The primary's host is frozen, a request is sent (only the
    // followers' mirror copies are read), and the host is killed: the member elected
    // next injects the request at go-live, on the same connection, with the right value.
    let _turn = serial();
    let topo = Topology::up();
    topo.mirror(true);
    let r = Replicas::start(&topo, 3, &["--replication", "sync", "--mirrored-input"], &[]);
    let old = r.primaries(&topo);
    assert_eq!(old.len(), 1, "{old:?}");
    let host_ns = topo.ns(MEMBER_HOSTS[old[0]]);
    let (reply, waited) = in_netns(&topo, "client", move || {
        let (mut s, mut r) = ftvmm_tests::client::connect();
        for _ in 0..20 {
            assert_eq!(ftvmm_tests::client::command(&mut s, &mut r, "SET m 10"), "+OK");
        }
        ftvmm_tests::client::incr_into_a_dying_primary(&mut s, &mut r, &host_ns, "m")
    });
    println!("after the election the request was answered {} ms after the kill", waited.as_millis());
    assert_eq!(reply, ":11", "the elected member carries on with the same state on the same connection");
    let new = r.wait_primary(&topo, Some(old[0]), Duration::from_secs(10)).expect("a follower leads");
    let injected: Vec<String> = r.lines("did not log goes to the guest");
    assert!(
        injected.iter().any(|l| !l.contains("injected=0")),
        "member {} went live without injecting the mirrored request: {injected:?}\n{}",
        new + 1,
        r.logs()
    );
    r.assert_one_primary_per_epoch();
}
