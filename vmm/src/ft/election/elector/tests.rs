use super::*;
use crate::ft::election::peer::PeerService;
use logging_channel::vote::VoteReply;
use std::sync::atomic::{AtomicBool, Ordering};

struct View {
    position: LogPosition,
    hears: AtomicBool,
}

impl LocalView for View {
    fn position(&self) -> LogPosition {
        self.position
    }
    fn hears_primary(&self) -> bool {
        self.hears.load(Ordering::SeqCst)
    }
}

fn elector(name: &str, position: LogPosition) -> (Arc<Elector>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ftvmm-elector-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    elector_in(&dir, position)
}

fn elector_in(dir: &std::path::Path, position: LogPosition) -> (Arc<Elector>, std::path::PathBuf) {
    let header = logging_channel::LogHeader {
        guest_image_digest: [3; 32],
        mem_size: 64 << 20,
        cpuid_digest: [4; 32],
        tick_hz: 250,
    };
    let group = Membership::parse(
        "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3",
        Rank { id: 3, priority: 1 },
        false,
        &header,
        crate::host::tls::Security::Insecure,
    )
    .expect("membership");
    let timing = ElectionTiming::from(Duration::from_millis(500), Duration::from_millis(20));
    let e = Elector::new(group, timing, None, dir).expect("elector");
    let _ = e.view.set(Arc::new(View { position, hears: AtomicBool::new(false) }));
    (e, dir.to_path_buf())
}

fn ask(e: &Elector, group: u64, epoch: u64, candidate: u64, log: (u64, u64)) -> Option<VoteReply> {
    let request = PeerMessage::VoteRequest(VoteRequest {
        group,
        epoch,
        candidate,
        priority: 1,
        log_epoch: log.0,
        log_exit: log.1,
    });
    match e.answer(request, "127.0.0.1:9".parse().expect("addr")) {
        Some(PeerMessage::VoteReply(r)) => Some(r),
        None => None,
        other => panic!("not a vote reply: {other:?}"),
    }
}

#[test]
fn a_grant_is_on_disk_before_it_is_sent_and_a_restarted_member_keeps_it() {
    let (e, dir) = elector("grant", LogPosition { epoch: 1, exit: 50 });
    let tag = e.membership().tag;
    let r = ask(&e, tag, 2, 1, (1, 60)).expect("a reply");
    assert!(r.granted, "{r:?}");
    drop(e);
    let (file, ballot) = BallotFile::open(&dir).expect("reopens");
    drop(file);
    assert_eq!(ballot, Ballot { epoch: 2, voted_for: Some(1) });
    // The restarted member has lost its log, but not its vote: it votes for nobody
    // until a state transfer gives it a log again, and then not twice in epoch 2.
    let (e, _) = elector_in(&dir, LogPosition::default());
    let amnesiac = ask(&e, tag, 3, 2, (9, 9)).expect("a reply");
    assert!(!amnesiac.granted && amnesiac.why.contains("without its log"), "{amnesiac:?}");
    e.received_state();
    let again = ask(&e, tag, 2, 2, (9, 9)).expect("a reply");
    assert!(!again.granted && again.why.contains("already voted for member 1"), "{again:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hostile_vote_requests_are_refused_and_change_nothing() {
    let (e, dir) = elector("hostile", LogPosition { epoch: 4, exit: 900 });
    let tag = e.membership().tag;
    // A non-member with a far-future epoch, and a candidate of another group.
    let r = ask(&e, tag, u64::MAX, 77, (u64::MAX, u64::MAX)).expect("a reply");
    assert!(!r.granted && r.why.contains("not a member"), "{r:?}");
    assert_eq!(ask(&e, tag ^ 1, 9, 1, (9, 9)), None, "another group's request gets no answer");
    assert_eq!(e.epoch(), 0, "neither moved the epoch");
    // A real candidate behind this member's log moves the epoch on but gets no vote.
    let r = ask(&e, tag, 5, 1, (4, 899)).expect("a reply");
    assert!(!r.granted && r.why.contains("behind"), "{r:?}");
    // A stale epoch now.
    let r = ask(&e, tag, 3, 2, (9, 9)).expect("a reply");
    assert!(!r.granted && r.why.contains("stale"), "{r:?}");
    assert_eq!(*e.lock_ballot(), Ballot { epoch: 5, voted_for: None });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_member_that_hears_its_primary_votes_for_nobody() {
    let (e, dir) = elector("sticky", LogPosition { epoch: 1, exit: 10 });
    let view = Arc::new(View { position: LogPosition { epoch: 1, exit: 10 }, hears: AtomicBool::new(true) });
    let e = Elector::new(e.membership().clone(), e.timing, None, &dir).expect("elector");
    let _ = e.view.set(view.clone());
    e.following(1);
    let tag = e.membership().tag;
    let r = ask(&e, tag, 2, 2, (1, 20)).expect("a reply");
    assert!(!r.granted && r.why.contains("still hears"), "{r:?}");
    assert_eq!(e.epoch(), 0, "a disruptive request does not move the epoch");
    view.hears.store(false, Ordering::SeqCst);
    assert!(ask(&e, tag, 2, 2, (1, 20)).expect("a reply").granted, "once the primary is gone, it votes");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_member_backs_the_candidate_it_voted_for_until_it_had_the_time_to_take_its_followers() {
    // Found when a fresh group's losing candidate stood again 2 ms after losing, and
    // the voter that had not yet heard from the winner deposed it.
    let (e, dir) = elector("backing", LogPosition { epoch: 0, exit: 0 });
    let tag = e.membership().tag;
    assert!(ask(&e, tag, 1, 1, (0, 0)).expect("a reply").granted, "the first candidate gets the vote");
    let probe = |e: &Elector| match e
        .answer(PeerMessage::Probe(Probe { group: tag, from: 2 }), "127.0.0.1:9".parse().expect("addr"))
    {
        Some(PeerMessage::ProbeReply(r)) => r,
        other => panic!("not a probe reply: {other:?}"),
    };
    assert_eq!(probe(&e).primary, 1, "a pre-vote probe hears the candidate it backs");
    let rival = ask(&e, tag, 2, 2, (0, 0)).expect("a reply");
    assert!(!rival.granted && rival.why.contains("still hears"), "{rival:?}");
    assert!(ask(&e, tag, 2, 1, (0, 0)).expect("a reply").granted, "the backed candidate may stand again");
    std::thread::sleep(e.timing.backing);
    assert_eq!(probe(&e).primary, 0, "backing lapses");
    assert!(ask(&e, tag, 3, 2, (0, 0)).expect("a reply").granted, "after the backing time the rival gets the vote");
    let _ = std::fs::remove_dir_all(dir);
}

/// A member restarted on its `--data-dir` has restored its checkpoint and replays its
/// disk: it must neither vote nor count as following until its primary has answered
/// (a resume accepted or a state restored). Said earlier, the group killed its primary
/// next and had no member able to lead (election.rs, with replica members' disks on).
#[test]
fn a_member_restarted_on_its_disk_votes_and_follows_only_once_its_primary_answers() {
    use crate::ft::election::rejoining::Rejoining;
    use crate::ft::follower::Upstream;
    let (e, dir) = elector("rejoining", LogPosition { epoch: 1, exit: 50 });
    let tag = e.membership().tag;
    assert!(ask(&e, tag, 2, 1, (1, 60)).expect("a reply").granted, "it was in the group: its ballot says epoch 2");
    drop(e);
    let (e, _) = elector_in(&dir, LogPosition { epoch: 2, exit: 40 });
    let upstream = Upstream::new(30);
    upstream.alive.store(false, Ordering::SeqCst);
    *upstream.rejoining.lock().expect("lock") = Some(Rejoining { elector: e.clone(), primary: 1 });
    assert_eq!(e.local().role, PeerRole::Rejoining, "replaying its own disk");
    let early = ask(&e, tag, 3, 2, (2, 90)).expect("a reply");
    assert!(!early.granted && early.why.contains("without its log"), "{early:?}");
    upstream.rejoined();
    assert!(upstream.alive.load(Ordering::SeqCst), "it hears its primary now");
    assert!(e.has_log(), "it holds the primary's log again");
    let local = e.local();
    assert_eq!((local.role, local.primary), (PeerRole::Follower, 1));
    assert!(ask(&e, tag, 3, 2, (2, 90)).expect("a reply").granted, "it votes again");
    upstream.rejoined();
    assert_eq!(e.local().primary, 1, "reported once");
    let _ = std::fs::remove_dir_all(dir);
}
