//! Flow control and ack checking on loopback connections (TLS, as in production),
//! with the test playing the follower: no KVM.
use super::*;
use crate::ft::flow::DEFAULT_MAX_REPLAY_LAG;
use crate::ft::group::GroupConfig;
use crate::ft::output_rule::ReplicationMode;
use crate::ft::release::Policy;
use crate::host::status::Role;
use crate::host::tls::{self, Channel};
use logging_channel::channel::{self, Ack};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

/// How the pretend follower acks: as far as it was told (healthy), never replaying
/// past where it joined (frozen), or claiming an exit it was never sent (a liar).
#[derive(Clone, Copy)]
enum Acks {
    AsToldComplete,
    NeverReplays,
    Lies(u64),
    /// Sends bytes that are no message at all after its first ack.
    Garbage,
    /// Acks where it joined every 50 ms and never reads a byte: a follower whose
    /// socket takes nothing while its acks say it lives.
    NeverReads,
    /// Reads nothing for a while after its first ack, then as told.
    NapsFirst(Duration),
}

struct Rig {
    link: Arc<FollowerLink>,
    group: Arc<Group>,
    stats: Arc<Stats>,
}

fn group() -> Arc<Group> {
    group_in(ReplicationMode::Sync)
}

fn group_in(mode: ReplicationMode) -> Arc<Group> {
    let config = GroupConfig { mode, max_followers: 4, arbiter: None, scope: Default::default(), election: None };
    let (events, _rx) = crossbeam_channel::unbounded();
    Group::new(config, Stats::new(Role::Primary), Arc::new(AtomicU64::new(0)), events)
}

fn rig(group: &Arc<Group>, joined_at: u64, max_replay_lag: u64, acks: Acks) -> Rig {
    rig_ticking(group, joined_at, max_replay_lag, acks, 0)
}

fn rig_ticking(group: &Arc<Group>, joined_at: u64, max_replay_lag: u64, acks: Acks, tick_hz: u32) -> Rig {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let (_certs, ids) = tls::tests::group(2);
    let follower_id = ids[1].clone();
    let follower_socket = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    std::thread::spawn(move || {
        let follower_end = follower_id.client(follower_socket, tls::HANDSHAKE_TIMEOUT).expect("follower's handshake");
        pretend_follower(follower_end, joined_at, acks)
    });
    let (primary_socket, _) = listener.accept().expect("accept");
    let primary_end = ids[0].server(primary_socket, tls::HANDSHAKE_TIMEOUT).expect("primary's handshake");
    let stats = Stats::new(Role::Primary);
    let releaser = SharedReleaser::new(Policy::Primary(group.clone()), None, stats.clone());
    let timing = Timing {
        heartbeat: Duration::from_millis(5),
        failover_timeout: Duration::from_millis(300),
        max_replay_lag,
        backlog_bytes: 1 << 20,
        precopy: true,
        reconnect: Duration::ZERO,
    };
    let follower = group.add_follower("pretend", joined_at);
    let link =
        FollowerLink::start(primary_end, timing, tick_hz, follower, group.clone(), releaser, stats.clone(), None)
            .expect("start");
    Rig { link, group: group.clone(), stats }
}

fn pretend_follower(mut stream: Channel, joined_at: u64, acks: Acks) {
    let ack = |stream: &mut Channel, received: u64| {
        let (received, replayed) = match acks {
            Acks::AsToldComplete | Acks::NapsFirst(_) => (received, received),
            Acks::NeverReads => (joined_at, joined_at),
            Acks::NeverReplays => (received, joined_at),
            Acks::Lies(claim) => (claim, joined_at),
            Acks::Garbage => (received, received),
        };
        let mut out = Vec::new();
        channel::encode(&Message::Ack(Ack { received_through: received, replayed_through: replayed }), &mut out);
        stream.write_all(&out)
    };
    if ack(&mut stream, joined_at).is_err() {
        return;
    }
    match acks {
        Acks::NeverReads => loop {
            std::thread::sleep(Duration::from_millis(50));
            if ack(&mut stream, joined_at).is_err() {
                return;
            }
        },
        Acks::NapsFirst(nap) => std::thread::sleep(nap),
        _ => {}
    }
    if let Acks::Garbage = acks {
        let _ = stream.write_all(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
        let _ = stream.read(&mut [0u8; 1]);
        return;
    }
    let (mut buf, mut chunk, mut covered) = (Vec::new(), [0u8; 4096], joined_at);
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((record, used))) = codec::decode(&buf) {
            buf.drain(..used);
            if let Record::Progress { exit_index } = record {
                covered = covered.max(exit_index);
            }
        }
        if ack(&mut stream, covered).is_err() {
            return;
        }
    }
}

/// Runs `throttle(exit)` on its own thread; `None` if it is still waiting after `limit`.
fn throttle_within(rig: Rig, exit: u64, limit: Duration) -> Option<(Duration, Rig)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        rig.link.throttle(exit);
        let _ = tx.send((t0.elapsed(), rig));
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_follower_that_joined_past_the_lag_limit_does_not_freeze_the_primary() {
    // Issue 18: joined at exit 1,000,000 with positions from 0, the vCPU waited forever.
    let rig = rig(&group(), 1_000_000, DEFAULT_MAX_REPLAY_LAG, Acks::AsToldComplete);
    let (waited, rig) = throttle_within(rig, 1_000_001, Duration::from_secs(2)).expect("throttle returned");
    assert!(waited < Duration::from_millis(50), "waited {waited:?} at the first exit after the join");
    assert!(rig.link.is_live());
}

#[test]
fn a_primary_past_the_limit_tells_the_follower_what_is_complete_and_waits_only_for_its_replay() {
    // Nothing was logged for exits 1..=99 (no events, no output), so only the waiting
    // vCPU can tell the follower they are complete.
    let rig = rig(&group(), 0, 10, Acks::AsToldComplete);
    let (waited, rig) = throttle_within(rig, 100, Duration::from_secs(2)).expect("throttle returned");
    assert!(rig.link.is_live(), "a healthy follower must not be dropped");
    assert!(rig.link.follower().replayed() >= 90);
    assert_eq!(rig.stats.watchdog_trips.load(Ordering::SeqCst), 0);
    assert!(waited < Duration::from_millis(300), "waited {waited:?}");
}

#[test]
fn a_follower_whose_replay_stands_still_is_dropped_by_the_watchdog_instead_of_freezing_the_guest() {
    let rig = rig(&group(), 0, 10, Acks::NeverReplays);
    let (waited, rig) = throttle_within(rig, 100, Duration::from_secs(3)).expect("the watchdog ended the wait");
    assert!(waited >= Duration::from_millis(300), "dropped after {waited:?}, before the failover timeout");
    assert!(rig.link.follower().is_dropped(), "the frozen follower is dropped");
    assert_eq!(rig.stats.watchdog_trips.load(Ordering::SeqCst), 1);
    assert!(rig.stats.snapshot().contains("WATCHDOG"), "status says why");
    assert_eq!(rig.group.follower_count(), 0);
}

#[test]
fn a_follower_that_acks_what_it_was_never_sent_is_dropped_and_releases_nothing_early() {
    let g = group();
    let honest = rig(&g, 0, DEFAULT_MAX_REPLAY_LAG, Acks::NeverReplays);
    let liar = rig(&g, 0, DEFAULT_MAX_REPLAY_LAG, Acks::Lies(1_000));
    let t0 = Instant::now();
    while !liar.link.follower().is_dropped() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(liar.link.follower().is_dropped(), "the liar is dropped");
    assert_eq!(liar.link.follower().acked(), 0, "its claim never counted");
    assert!(honest.link.is_live());
    assert_eq!(g.release_limit(), 0, "output still waits for the honest follower");
}

#[test]
fn a_protected_vcpu_with_a_timer_that_makes_no_exits_is_reported_once_per_stall() {
    // Nothing drives this rig's exit counter: a guest with a 250 Hz timer would have
    // made ~75 exits in the failover timeout (300 ms).
    let rig = rig_ticking(&group(), 0, DEFAULT_MAX_REPLAY_LAG, Acks::AsToldComplete, 250);
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(rig.stats.vcpu_stalls.load(Ordering::SeqCst), 1, "reported once for one long stall");
    assert!(rig.link.is_live(), "a stalled vCPU is reported, not blamed on the follower");
    rig.stats.exit_index.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(rig.stats.vcpu_stalls.load(Ordering::SeqCst), 2, "a new stall after progress is a new report");
}

#[test]
fn a_vcpu_without_a_timer_may_rest() {
    let rig = rig(&group(), 0, DEFAULT_MAX_REPLAY_LAG, Acks::AsToldComplete);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(rig.stats.vcpu_stalls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_follower_that_sends_garbage_is_dropped_and_releases_nothing_early() {
    let g = group();
    let honest = rig(&g, 0, DEFAULT_MAX_REPLAY_LAG, Acks::NeverReplays);
    let garbage = rig(&g, 0, DEFAULT_MAX_REPLAY_LAG, Acks::Garbage);
    let t0 = Instant::now();
    while !garbage.link.follower().is_dropped() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(garbage.link.follower().is_dropped(), "garbage on the ack path drops the follower");
    assert_eq!(garbage.link.follower().acked(), 0);
    assert!(honest.link.is_live());
    assert_eq!(g.release_limit(), 0, "output still waits for the honest follower");
}

/// Appends `n` progress records for exits `from+1..=from+n`, padded to `bytes` each
/// with no-op marks, flushing every one as output would.
fn append_progress(link: &FollowerLink, from: u64, n: u64, bytes: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for exit in from + 1..=from + n {
        let mut chunk = Vec::with_capacity(bytes);
        while chunk.len() + 16 < bytes {
            codec::encode(&Record::Progress { exit_index: exit - 1 }, &mut chunk);
        }
        codec::encode(&Record::Progress { exit_index: exit }, &mut chunk);
        let t0 = Instant::now();
        link.append_encoded(&chunk, Some(exit), true);
        slowest = slowest.max(t0.elapsed());
    }
    slowest
}

#[test]
fn an_async_primary_does_not_wait_for_a_follower_whose_socket_takes_nothing_until_it_trails_too_far() {
    let rig = rig(&group_in(ReplicationMode::Async), 0, u64::MAX, Acks::NeverReads);
    std::thread::sleep(Duration::from_millis(50));
    // Half the limit: far more than the kernel's buffers take, so a blocking send
    // would wait here for the send timeout (the failover timeout, 300 ms).
    let chunk = 64 * 1024;
    let half = (wire::MAX_ASYNC_PENDING / 2 / chunk) as u64;
    let slowest = append_progress(&rig.link, 0, half, chunk);
    assert!(rig.link.is_live(), "dropped before it trailed by the limit");
    assert!(slowest < Duration::from_millis(150), "an append waited {slowest:?} for the follower's socket");
    // On past the limit plus what the kernel's buffers may hold (loopback grows them
    // to several MiB).
    let (mut at, cap) = (half, 4 * half);
    while !rig.link.follower().is_dropped() && at < cap {
        let slowest = append_progress(&rig.link, at, 8, chunk);
        assert!(slowest < Duration::from_millis(150), "an append waited {slowest:?} for the follower's socket");
        at += 8;
    }
    assert!(rig.link.follower().is_dropped(), "a follower trailing by more than the limit is dropped");
    assert!(at * chunk as u64 > wire::MAX_ASYNC_PENDING as u64, "dropped after {at} chunks, before the limit");
    assert_eq!(rig.group.follower_count(), 0);
}

#[test]
fn an_async_follower_that_falls_behind_and_catches_up_gets_every_record_intact() {
    // Appends while the follower naps fill the kernel's buffers and end in the middle
    // of frames; the marks the link adds must still fall between frames.
    let rig = rig(&group_in(ReplicationMode::Async), 0, u64::MAX, Acks::NapsFirst(Duration::from_millis(200)));
    let n = 400;
    append_progress(&rig.link, 0, n, 7 * 1024 + 3);
    let t0 = Instant::now();
    while rig.link.follower().acked() < n && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(rig.link.is_live());
    assert_eq!(rig.link.follower().acked(), n, "the follower decoded every record through the last");
}
