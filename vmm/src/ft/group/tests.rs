use super::*;
use crate::host::status::{GroupReport, Role};
use logging_channel::GroupName;

fn scope(name: &str) -> Arc<Scope> {
    Arc::new(Scope::given(GroupName::new(name).expect("name")))
}

fn group(mode: ReplicationMode, max: usize) -> (Arc<Group>, crossbeam_channel::Receiver<VmEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = GroupConfig { mode, max_followers: max, arbiter: None, scope: scope("g"), election: None };
    (Group::new(config, Stats::new(Role::Primary), Arc::new(AtomicU64::new(0)), tx), rx)
}

#[test]
fn a_follower_starts_at_the_exit_it_joined_at() {
    let (g, _rx) = group(ReplicationMode::Sync, 4);
    let f = g.add_follower("10.0.0.2:1", 293_643);
    assert_eq!((f.acked(), f.replayed()), (293_643, 293_643));
    assert_eq!(g.release_limit(), 0, "until its first ack it may not have loaded the state: nothing more leaves");
    g.record_ack(&f, 293_643, 293_643);
    assert_eq!(g.release_limit(), 293_643);
}

#[test]
fn sync_output_waits_for_every_follower_and_a_dropped_one_never_holds_it() {
    let (g, _rx) = group(ReplicationMode::Sync, 4);
    let (a, b) = (g.add_follower("a", 0), g.add_follower("b", 0));
    assert!(g.record_ack(&a, 100, 90));
    assert!(g.record_ack(&b, 40, 40));
    assert_eq!(g.release_limit(), 40);
    assert!(g.drop_follower(&b, "silent"));
    assert!(!g.drop_follower(&b, "again"), "a follower is dropped once");
    assert_eq!(g.release_limit(), 100);
    assert!(g.drop_follower(&a, "closed"));
    assert_eq!(g.release_limit(), u64::MAX, "no follower: unprotected, everything leaves");
    assert!(!GroupReport::protected(&*g));
}

#[test]
fn semi_sync_promotes_the_most_advanced_follower_when_the_synchronous_one_drops() {
    let (g, _rx) = group(ReplicationMode::SemiSync, 4);
    let (a, b, c) = (g.add_follower("a", 0), g.add_follower("b", 0), g.add_follower("c", 0));
    g.record_ack(&a, 50, 50);
    g.record_ack(&b, 80, 80);
    g.record_ack(&c, 70, 70);
    assert_eq!(g.release_limit(), 50, "the first follower is synchronous");
    g.drop_follower(&a, "killed");
    assert_eq!(g.release_limit(), 80, "b had acknowledged the most");
    assert!(g.json_fields(100).contains("\"id\":2,\"addr\":\"b\",\"mode\":\"sync\""));
}

#[test]
fn acks_never_move_positions_backwards() {
    let (g, _rx) = group(ReplicationMode::Sync, 4);
    let a = g.add_follower("a", 10);
    assert!(g.record_ack(&a, 20, 15));
    assert!(!g.record_ack(&a, 12, 11), "an old ack is not news");
    assert_eq!((a.acked(), a.replayed()), (20, 15));
}

#[test]
fn the_group_has_room_for_max_followers_and_a_second_needs_an_arbiter() {
    let (g, _rx) = group(ReplicationMode::Sync, 2);
    g.add_follower("a", 0);
    assert!(g.refuse_follower().is_some_and(|why| why.contains("needs --arbiter")));

    let dir = std::env::temp_dir().join(format!("ftvmm-group-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let arbiter = crate::host::arbiter::from_spec(&format!("file:{}", dir.display())).expect("arbiter");
    let (tx, _rx) = crossbeam_channel::unbounded();
    let config = GroupConfig {
        mode: ReplicationMode::Sync,
        max_followers: 2,
        arbiter: Some(Arc::from(arbiter)),
        scope: scope("10.0.0.1-0badc0de"),
        election: None,
    };
    let g = Group::new(config, Stats::new(Role::Primary), Arc::new(AtomicU64::new(0)), tx);
    g.add_follower("a", 0);
    assert!(g.has_room());
    g.add_follower("b", 0);
    assert!(g.refuse_follower().is_some_and(|why| why.contains("already has a backup")));
    let _ = std::fs::remove_dir_all(dir);
}

/// A pair-mode group of `name` with a file arbiter in `dir`.
fn with_arbiter(dir: &std::path::Path, scope: Arc<Scope>) -> (Arc<Group>, crossbeam_channel::Receiver<VmEvent>) {
    std::fs::create_dir_all(dir).expect("dir");
    let arbiter = crate::host::arbiter::from_spec(&format!("file:{}", dir.display())).expect("arbiter");
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = GroupConfig {
        mode: ReplicationMode::Sync,
        max_followers: 2,
        arbiter: Some(Arc::from(arbiter)),
        scope,
        election: None,
    };
    (Group::new(config, Stats::new(Role::Primary), Arc::new(AtomicU64::new(0)), tx), rx)
}

#[test]
fn an_old_groups_claims_neither_block_nor_fence_a_new_group_on_the_same_arbiter() {
    let dir = std::env::temp_dir().join(format!("ftvmm-group-scope-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The old deployment: its follower went live (claimed epoch 1), then it was torn down.
    let (old, _rx) = with_arbiter(&dir, scope("10.0.0.1-00000001"));
    let f = old.add_follower("b", 0);
    assert!(old.drop_follower(&f, "partition"), "the old primary won epoch 1");
    assert!(old.refuse_if_stale().is_err_and(|e| e.contains("went on alone in epoch 1")), "its own group: stale");
    // A new deployment of the same guest: a new name, so it starts and can go on alone.
    let (new, rx) = with_arbiter(&dir, Arc::new(Scope::fresh("10.0.0.1").expect("scope")));
    assert_eq!(new.refuse_if_stale(), Ok(()));
    let f = new.add_follower("b", 0);
    assert!(new.drop_follower(&f, "killed"));
    assert!(!new.halted() && rx.try_recv().is_err(), "the new group won its own epoch 1: not fenced");
    assert_eq!(new.epoch(), FIRST_EPOCH + 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_member_that_does_not_know_its_group_name_never_wins_the_arbiter() {
    let dir = std::env::temp_dir().join(format!("ftvmm-group-noname-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (g, rx) = with_arbiter(&dir, Arc::new(Scope::unknown()));
    let f = g.add_follower("b", 0);
    g.drop_follower(&f, "partition");
    assert!(g.halted() && matches!(rx.try_recv(), Ok(VmEvent::Halt(why)) if why.contains("group's name")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_pair_primary_with_no_follower_left_says_it_runs_unprotected_and_status_names_the_group() {
    let (g, _rx) = group(ReplicationMode::Sync, 2);
    assert!(g.alone_message().contains("runs UNPROTECTED"), "{}", g.alone_message());
    assert!(g.json_fields(0).contains("\"group_name\":\"g\""), "{}", g.json_fields(0));
}

#[test]
fn going_on_alone_moves_the_epoch_on() {
    let (g, _rx) = group(ReplicationMode::Sync, 2);
    let a = g.add_follower("a", 0);
    g.drop_follower(&a, "partition");
    assert_eq!(g.epoch(), FIRST_EPOCH + 1);
}

#[test]
fn a_halted_primary_releases_nothing_and_takes_no_follower() {
    let (g, rx) = group(ReplicationMode::Async, 2);
    g.halt("lost the arbiter".into());
    assert_eq!(g.release_limit(), 0);
    assert!(!g.has_room());
    assert!(matches!(rx.try_recv(), Ok(VmEvent::Halt(_))));
}

#[test]
fn a_replica_group_primary_with_no_follower_left_says_it_holds_output_and_steps_down_not_unprotected() {
    use crate::ft::election::elector::{ElectionTiming, Elector};
    use crate::ft::election::peer::Membership;
    use crate::ft::election::rules::Rank;
    let header = logging_channel::LogHeader {
        guest_image_digest: [3; 32],
        mem_size: 64 << 20,
        cpuid_digest: [4; 32],
        tick_hz: 250,
    };
    let message = |mode: ReplicationMode| {
        let dir = std::env::temp_dir().join(format!("ftvmm-group-alone-{mode}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let members = Membership::parse(
            "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3",
            Rank { id: 1, priority: 1 },
            false,
            &header,
            crate::host::tls::Security::Insecure,
        )
        .expect("membership");
        let timing = ElectionTiming::from(std::time::Duration::from_millis(500), std::time::Duration::from_millis(20));
        let elector = Elector::new(members, timing, None, &dir).expect("elector");
        let election = Election { elector, step_down_after: std::time::Duration::from_millis(500) };
        let (tx, _rx) = crossbeam_channel::unbounded();
        let config = GroupConfig { mode, max_followers: 2, arbiter: None, scope: scope("g"), election: Some(election) };
        let g = Group::new(config, Stats::new(Role::Primary), Arc::new(AtomicU64::new(0)), tx);
        let _ = std::fs::remove_dir_all(dir);
        g.alone_message()
    };
    let sync = message(ReplicationMode::Sync);
    assert!(sync.contains("HOLDS all output") && sync.contains("steps down in 500 ms"), "{sync}");
    assert!(!sync.contains("UNPROTECTED"), "{sync}");
    let async_ = message(ReplicationMode::Async);
    assert!(async_.contains("output still leaves (async)") && async_.contains("steps down"), "{async_}");
}
