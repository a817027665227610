//! Model check of the replica group's election and Output Rule (issue 10) with
//! `stateright`: the model (state, actions, properties, what is abstracted away) is
//! drawn in `model.rs`; these are the checks. Each exhaustive check prints its state
//! count; each expected counterexample is printed step by step (members by index,
//! id = index + 1). `cargo test -p vmm --test election_model -- --nocapture`, and
//! `-- --ignored` for the deeper bounds.
mod model;

use model::{Group, Role, State, Witness};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::{HashSet, VecDeque};
use vmm::ft::election::rules::majority;

/// Runs the check (to the end, or until the discoveries `until` asks for)
/// and prints what it saw.
fn check(group: Group, until: Option<HasDiscoveries>) -> impl Checker<Group> {
    let started = std::time::Instant::now();
    let label = format!("{group:?}");
    let mut builder = group.checker().threads(1);
    if let Some(until) = until {
        builder = builder.finish_when(until);
    }
    let checker = builder.spawn_bfs().join();
    println!(
        "{label}: {} states ({} unique), depth {}, {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

const ONE_PRIMARY: &str = "at most one primary per epoch";
const KEPT: &str = "released output is in every later primary's log";

/// Asserts a counterexample for `property`, prints it and returns its length.
fn counterexample(checker: &impl Checker<Group>, property: &'static str) -> usize {
    let path = checker.discovery(property).unwrap_or_else(|| panic!("no counterexample for {property:?}"));
    let model = checker.model();
    let holds = model.properties().into_iter().find(|p| p.name == property).expect("a property").condition;
    let states = path.clone().into_states();
    let actions = path.into_actions();
    let fails = states.iter().position(|s| !holds(model, s)).expect("the path ends in a counterexample");
    println!("counterexample for {property:?} ({fails} steps):");
    for a in &actions[..fails] {
        println!("  {a:?}");
    }
    println!("  => {:?}", states[fails]);
    fails
}

/// Sync, semi-sync (n = 3), quorum:1: one failover, a restart, loss and reordering.
#[test]
fn three_members_keep_one_primary_and_released_output() {
    check(Group::three(), None).assert_properties();
}

/// Two failovers (epochs up to 3), no restart: the older-epoch cases (Raft's figure 8).
/// About 4 M states: `cargo test -p vmm --test election_model -- --ignored`.
#[test]
#[ignore = "deeper bound: about 4 M states, 15-20 s of CPU"]
fn three_members_over_two_failovers() {
    let group = Group { max_epoch: 3, max_restarts: 0, ..Group::three() };
    check(group, None).assert_properties();
}

/// The design as first written: a restarted member votes with position (0, 0).
/// Primary 1 released an entry that only follower 3 had acked; 3 restarted and voted
/// for 2, which never had it. Fixed by `Voter::lost_log` (rules.rs).
#[test]
fn a_restarted_member_that_votes_loses_released_output() {
    let checker = check(Group { lost_log_abstains: false, ..Group::three() }, Some(HasDiscoveries::AnyFailures));
    counterexample(&checker, KEPT);
}

/// What no rule can fix (Raft's stable storage assumption): a member restarted on an
/// emptied or replaced disk has forgotten its ballot, so it may vote twice in an epoch,
/// or stand again for one it already led, and released output can be lost. Nothing it
/// holds tells it from a new group's member, so ftvmm cannot refuse it: a member must
/// restart on its own `--data-dir` (README, Limits).
#[test]
fn a_member_restarted_on_an_emptied_disk_can_lose_what_the_group_promised() {
    let checker = check(Group { wipes: true, ..Group::three() }, Some(HasDiscoveries::AnyFailures));
    let found: Vec<&str> = [KEPT, ONE_PRIMARY].into_iter().filter(|p| checker.discovery(p).is_some()).collect();
    assert!(!found.is_empty(), "no counterexample with an emptied disk");
    counterexample(&checker, found[0]);
}

/// Not vacuous: voters that skip the up-to-date check elect a log without the output.
#[test]
fn without_the_log_check_released_output_is_lost() {
    let checker =
        check(Group { skip_log_check: true, max_restarts: 0, ..Group::three() }, Some(HasDiscoveries::AnyFailures));
    counterexample(&checker, KEPT);
}

/// Expected: async releases before any follower holds the entry, so a failover loses it.
#[test]
fn async_loses_released_output_as_expected() {
    let checker =
        check(Group { async_release: true, max_restarts: 0, ..Group::three() }, Some(HasDiscoveries::AnyFailures));
    counterexample(&checker, KEPT);
}

/// The design's witness, a test-and-set keyed by the candidate's log epoch, elects two
/// primaries in one epoch, even when no candidate has an empty log: 1 won epoch 2 by
/// 2's vote (key 1 stays free), 2 never got 1's standing entry, so 2 (log epoch 1)
/// wins key 1 and epoch 3 while 1, going on alone, wins key 2 and moves to epoch 3.
#[test]
fn a_witness_keyed_by_log_epoch_elects_two_primaries() {
    let group = Group { empty_log_claims: false, ..Group::two_with(Witness::KeyedByLogEpoch) };
    let checker = check(group, Some(HasDiscoveries::AnyFailures));
    counterexample(&checker, ONE_PRIMARY);
}

/// The same witness loses released output without two primaries in an epoch: 1 won
/// epoch 1 by 2's vote, went on alone (key 1, epoch 2) and released; 2, whose log is
/// still empty, claims the free key 0 and wins epoch 3 without that output.
#[test]
fn a_witness_keyed_by_log_epoch_loses_output_without_a_split() {
    let checker = check(
        Group { past_split: false, ..Group::two_with(Witness::KeyedByLogEpoch) },
        Some(HasDiscoveries::AnyFailures),
    );
    counterexample(&checker, KEPT);
}

/// The primary counts a state transfer as acked when it sends the snapshot
/// (attach.rs `send_state`: `add_follower(addr, at.index)`): it may release output
/// that no follower holds, and a member whose transfer never arrived elects a log
/// without it. Count it when the follower reports the snapshot loaded.
#[test]
fn a_state_transfer_counted_as_sent_loses_released_output() {
    let group = Group { ack_state_at_send: true, max_epoch: 3, max_restarts: 0, ..Group::three() };
    let checker = check(group, Some(HasDiscoveries::AnyFailures));
    counterexample(&checker, KEPT);
}

/// The proposed witness: a Raft voter (one vote per epoch, `decide` against a floor).
#[test]
fn two_members_with_a_voting_witness_are_safe() {
    check(Group::two_with(Witness::Voter), None).assert_properties();
}

/// The same over three failovers (epochs up to 4).
#[test]
#[ignore = "deeper bound: about 4 M states, 15-20 s of CPU"]
fn two_members_with_a_voting_witness_over_three_failovers() {
    check(Group { max_epoch: 4, ..Group::two_with(Witness::Voter) }, None).assert_properties();
}

/// The fault campaign's finding (issue 16, tests/tests/witness_away.rs): in a group of
/// two, the primary's follower crashes while the witness is away, so the primary
/// stands down. If it started over without its log, as it did, no member held a log
/// and nobody could ever lead again, though nothing was lost: the state was on the
/// primary's disk. Sealed on its disk, its log elects it once the witness answers.
#[test]
fn a_primary_that_seals_its_log_when_it_stands_down_can_lead_again() {
    use model::Action::{Restart, StepDown};
    let sealed = Group::two_with(Witness::Voter);
    let unsealed = Group { stand_down_loses_log: true, ..sealed.clone() };
    for (group, can_lead) in [(sealed, true), (unsealed, false)] {
        // The follower crashes (its log is gone); the witness is away: no majority.
        let s = released_then(&group, &[Restart(1), StepDown(0)]);
        let fair = Group { faults: false, ..group.clone() };
        assert_eq!(elects(&fair, s), can_lead, "stand_down_loses_log: {}, from {s:?}", group.stand_down_loses_log);
    }
}

/// `--fsync always`: every member that crashes restarts with its whole log and keeps
/// its vote. Exhaustive, three members (up to two crashes) and two with a witness.
#[test]
fn with_fsync_always_crashed_members_keep_their_votes_safely() {
    for group in [Group::three(), Group::two_with(Witness::Voter)] {
        check(Group { durable: true, max_restarts: 2, ..group }, None).assert_properties();
    }
}

/// And the group comes back after every member crashed at once (a power cut), where
/// without it the state is gone with them.
#[test]
fn with_fsync_always_a_group_whose_members_all_crashed_elects_a_primary() {
    use model::Action::Restart;
    for durable in [true, false] {
        let group = Group { durable, max_restarts: 3, ..Group::three() };
        let s = released_then(&group, &[Restart(0), Restart(1), Restart(2)]);
        let fair = Group { faults: false, ..group.clone() };
        assert_eq!(elects(&fair, s), durable, "durable: {durable}, from {s:?}");
    }
}

/// (3), bounded: from reachable states without a primary in which a majority holds
/// logs, a fault-free schedule (no loss, crash or spurious timeout) elects one. The
/// states come from random walks that alternate fault-free steps with faults (a
/// primary steps down or restarts, a follower times out, a message is lost), so
/// most of them follow one or more failovers.
#[test]
fn with_a_majority_up_a_primary_is_elected() {
    for group in [Group::three(), Group::two_with(Witness::Voter)] {
        // Walks go past the exhaustive bound; an election may take two more epochs.
        let group = Group { max_epoch: 5, max_log: 4, ..group };
        let fair = Group { faults: false, max_epoch: 7, ..group.clone() };
        // With a witness, a member alone may rightly be refused (the other may have
        // released output alone and crashed): ask for every member's log there.
        let quorum = if group.has_witness() { group.n } else { majority(group.n, false) };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut pick = |len: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % len
        };
        let (mut checked, mut after_failover) = (0, 0);
        for _walk in 0..400 {
            let mut s = group.init_states().remove(0);
            for step in 0..40 {
                let mut actions = Vec::new();
                (if step % 8 == 7 { &group } else { &fair }).actions(&s, &mut actions);
                let steps: Vec<State> = actions.into_iter().filter_map(|a| group.next_state(&s, a)).collect();
                if steps.is_empty() {
                    break;
                }
                s = steps[pick(steps.len())];
                let members = &s.m[..group.n];
                let leaderless = members.iter().all(|m| !matches!(m.role, Role::Primary { .. }));
                let holding = members.iter().filter(|m| !m.lost_log).count();
                let headroom = members.iter().all(|m| m.ballot.epoch < group.max_epoch);
                if leaderless && holding >= quorum && headroom && s.live().count() >= 1 {
                    checked += 1;
                    after_failover += usize::from(s.live().count() >= 2);
                    assert!(elects(&fair, s), "no primary is ever elected from {s:#?}");
                }
            }
        }
        println!(
            "{} members: a primary is reachable from all {checked} sampled leaderless states \
             ({after_failover} after a failover)",
            group.n
        );
        assert!(after_failover > 20, "too few leaderless states after a failover ({after_failover})");
    }
}

/// Member 1 wins epoch 1 with member 2's vote, logs an entry, streams its log to
/// member 2 and releases the entry; then `faults`, in order.
fn released_then(group: &Group, faults: &[model::Action]) -> State {
    use model::{Action, Msg};
    let delivered_to_1 =
        |a: &Action| matches!(a, Action::Deliver(Msg::Request { to: 1, .. } | Msg::Append { to: 1, .. }));
    let send = |a: &Action| *a == Action::Send(0, 1);
    let prefix: [&dyn Fn(&Action) -> bool; 7] = [
        &|a| *a == Action::Stand(0),
        &delivered_to_1,
        &|a| *a == Action::Append(0),
        &send,
        &delivered_to_1,
        &send,
        &delivered_to_1,
    ];
    // The first action of the state it is in that `want` matches.
    let step = |s: State, want: &dyn Fn(&Action) -> bool| {
        let mut actions = Vec::new();
        group.actions(&s, &mut actions);
        let a = actions.into_iter().find(|a| want(a)).unwrap_or_else(|| panic!("no such step in {s:?}"));
        group.next_state(&s, a).expect("the step changes the state")
    };
    let mut s = prefix.iter().fold(group.init_states().remove(0), |s, want| step(s, want));
    assert!(s.released.iter().any(Option::is_some), "output was released before the faults: {s:?}");
    for fault in faults {
        s = step(s, &|a| a == fault);
    }
    s
}

/// Whether some schedule of `group` reaches a state with a primary from `from`.
fn elects(group: &Group, from: State) -> bool {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        if s.m.iter().any(|m| matches!(m.role, Role::Primary { .. })) {
            return true;
        }
        for next in group.next_states(&s) {
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    false
}
