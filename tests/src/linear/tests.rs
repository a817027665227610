//! Hand-made histories: linearizable ones pass; a stale read, a lost write and two
//! primaries serving at once fail, naming the operation that gives them away.
use super::*;
use crate::history::{Call, Op, Outcome};

fn get(c: usize, t: (u64, u64), v: Option<i64>) -> Op {
    Op::done(c, "k", Call::Get, Outcome::Read(v), t.0, t.1)
}
fn set(c: usize, t: (u64, u64), v: i64) -> Op {
    Op::done(c, "k", Call::Set(v), Outcome::Written, t.0, t.1)
}
fn incr(c: usize, t: (u64, u64), n: i64) -> Op {
    Op::done(c, "k", Call::Incr, Outcome::Counted(n), t.0, t.1)
}
fn lost(c: usize, at: u64, call: Call) -> Op {
    Op::indeterminate(c, "k", call, at)
}

fn anomaly(ops: &[Op]) -> Anomaly {
    match check(ops) {
        Verdict::NotLinearizable(a) => a,
        v => panic!("expected an anomaly, got {v:?} for {ops:#?}"),
    }
}

#[test]
fn an_empty_history_and_a_sequential_one_are_linearizable() {
    assert_eq!(check(&[]), Verdict::Linearizable);
    let ops =
        [get(0, (0, 1), None), set(0, (2, 3), 1), get(1, (4, 5), Some(1)), incr(0, (6, 7), 2), get(1, (8, 9), Some(2))];
    assert_eq!(check(&ops), Verdict::Linearizable);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    let ops = [set(0, (0, 10), 1), get(1, (2, 3), None), get(2, (4, 12), Some(1)), get(1, (5, 6), Some(1))];
    assert_eq!(check(&ops), Verdict::Linearizable);
    // Concurrent increments may reply in either order.
    let ops = [incr(0, (0, 10), 2), incr(1, (1, 9), 1), get(2, (11, 12), Some(2))];
    assert_eq!(check(&ops), Verdict::Linearizable);
}

#[test]
fn a_stale_read_is_caught_and_named() {
    let ops = [set(0, (0, 1), 1), set(0, (2, 3), 2), get(1, (4, 5), Some(1))];
    let a = anomaly(&ops);
    assert_eq!(a.op, 2, "the read of the overwritten value is the anomaly");
    assert_eq!(a.state, Some(2));
    let report = a.report(&ops);
    assert!(report.contains(">> 1 k 4 5 GET -> 1"), "{report}");
}

#[test]
fn a_read_that_goes_back_in_time_after_a_concurrent_write_is_caught() {
    // The write may land anywhere in [0, 10], but once a read saw it a later read cannot miss it.
    let ops = [set(0, (0, 10), 1), get(1, (2, 3), Some(1)), get(1, (4, 5), None)];
    assert_eq!(anomaly(&ops).op, 2);
}

#[test]
fn a_lost_write_is_caught() {
    // A failover that lost the second INCR: the third one counts from 1 again.
    let ops = [incr(0, (0, 1), 1), incr(1, (2, 3), 2), incr(0, (4, 5), 2)];
    assert_eq!(anomaly(&ops).op, 2);
    // The same with a read.
    let ops = [set(0, (0, 1), 5), set(1, (2, 3), 6), get(2, (4, 5), Some(5))];
    assert_eq!(anomaly(&ops).op, 2);
}

#[test]
fn two_primaries_serving_interleaved_clients_are_caught() {
    // Client 0 talks to one primary, client 1 to another; each sees its own writes only.
    let ops = [
        set(0, (0, 1), 10),
        set(1, (2, 3), 20),
        get(0, (4, 5), Some(10)),
        get(1, (6, 7), Some(20)),
        incr(0, (8, 9), 11),
        incr(1, (10, 11), 21),
    ];
    let a = anomaly(&ops);
    assert_eq!(a.op, 2, "client 0 reads its own write after client 1 overwrote it");
    let ops = [incr(0, (0, 1), 1), incr(1, (2, 3), 1)];
    assert_eq!(anomaly(&ops).op, 1, "two counters that both started from zero");
}

#[test]
fn an_indeterminate_write_may_have_happened_or_not_but_not_both() {
    let maybe = lost(0, 0, Call::Incr);
    assert_eq!(check(&[maybe.clone(), get(1, (5, 6), Some(1))]), Verdict::Linearizable, "it took effect");
    assert_eq!(check(&[maybe.clone(), get(1, (5, 6), None)]), Verdict::Linearizable, "it never did");
    assert_eq!(check(&[maybe.clone(), get(1, (5, 6), None), get(1, (7, 8), Some(1))]), Verdict::Linearizable);
    let flip = [maybe, get(1, (5, 6), Some(1)), get(1, (7, 8), None)];
    assert_eq!(anomaly(&flip).op, 2, "once seen, it cannot be undone");
    // It cannot take effect before it was sent.
    let early = [get(1, (0, 1), Some(7)), lost(0, 5, Call::Set(7))];
    assert_eq!(anomaly(&early).op, 0);
    // An indeterminate read is no evidence of anything.
    assert_eq!(check(&[lost(0, 0, Call::Get), set(1, (1, 2), 3)]), Verdict::Linearizable);
}

#[test]
fn the_budget_bounds_the_search() {
    let ops: Vec<Op> = (0..8).map(|c| incr(c, (0, 100), c as i64 + 1)).collect();
    assert_eq!(check(&ops), Verdict::Linearizable);
    assert!(matches!(check_with_budget(&ops, 3), Verdict::Unknown(_)));
}

/// A small deterministic generator.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = mix(self.0);
        self.0 % n
    }
}

/// `n` operations by `clients` clients against a real register: each takes effect at a
/// point inside its interval, and the intervals of different clients overlap.
fn simulated(n: usize, clients: usize, seed: u64) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut value: Option<i64> = None;
    let mut free_at = vec![0u64; clients];
    let mut ops = Vec::new();
    let mut now = 0;
    for i in 0..n {
        now += 1 + rng.below(3);
        let c = rng.below(clients as u64) as usize;
        // The op takes effect at `now`; the client's previous op must be over by its call.
        if free_at[c] > now {
            continue;
        }
        let invoke = free_at[c].max(now.saturating_sub(rng.below(20)));
        let complete = now + rng.below(30);
        free_at[c] = complete + 1;
        let (call, outcome) = match rng.below(3) {
            0 => (Call::Get, Outcome::Read(value)),
            1 => {
                value = Some(i as i64 * 100);
                (Call::Set(i as i64 * 100), Outcome::Written)
            }
            _ => {
                value = Some(value.unwrap_or(0) + 1);
                (Call::Incr, Outcome::Counted(value.unwrap_or(0)))
            }
        };
        ops.push(Op::done(c, "k", call, outcome, invoke, complete));
    }
    ops
}

#[test]
fn long_simulated_histories_pass_and_one_corrupted_read_fails() {
    for seed in 0..5 {
        let ops = simulated(20_000, 5, seed);
        assert_eq!(check(&ops), Verdict::Linearizable, "seed {seed}");
        let mut bad = ops.clone();
        let victim = bad.iter().rposition(|o| o.call == Call::Get).expect("a read");
        bad[victim].outcome = Outcome::Read(Some(-1));
        assert_eq!(anomaly(&bad).op, victim, "seed {seed}");
    }
}

fn cas(c: usize, t: (u64, u64), expect: Option<i64>, new: i64, ok: bool) -> Op {
    Op::done(c, "k", Call::Cas(expect, new), Outcome::Cas(ok), t.0, t.1)
}
fn getdel(c: usize, t: (u64, u64), v: Option<i64>) -> Op {
    Op::done(c, "k", Call::GetDel, Outcome::Read(v), t.0, t.1)
}

#[test]
fn a_valid_compare_and_set_history_passes() {
    // Sequential: one CAS from absent wins, the next (expecting absent) fails, a CAS
    // on the value it saw wins, GETDEL empties, and a CAS from absent wins again.
    let ops = [
        cas(0, (0, 1), None, 10, true),
        cas(1, (2, 3), None, 20, false),
        get(1, (4, 5), Some(10)),
        cas(1, (6, 7), Some(10), 11, true),
        getdel(2, (8, 9), Some(11)),
        cas(0, (10, 11), None, 12, true),
        incr(2, (12, 13), 13),
        get(0, (14, 15), Some(13)),
    ];
    assert_eq!(check(&ops), Verdict::Linearizable);
    // Two concurrent CAS from absent: exactly one may win, either one.
    let race = [cas(0, (0, 10), None, 1, true), cas(1, (1, 9), None, 2, false), get(2, (11, 12), Some(1))];
    assert_eq!(check(&race), Verdict::Linearizable);
    let race = [cas(0, (0, 10), None, 1, false), cas(1, (1, 9), None, 2, true), get(2, (11, 12), Some(2))];
    assert_eq!(check(&race), Verdict::Linearizable);
    // A failed CAS concurrent with the write that made it fail.
    let ops = [set(0, (0, 10), 5), cas(1, (2, 3), Some(5), 6, false), cas(1, (11, 12), Some(5), 6, true)];
    assert_eq!(check(&ops), Verdict::Linearizable);
    // An indeterminate CAS may have won (the read sees its value) or not.
    let maybe = [cas(0, (0, 1), None, 1, true), lost(1, 2, Call::Cas(Some(1), 7)), get(2, (5, 6), Some(7))];
    assert_eq!(check(&maybe), Verdict::Linearizable);
    let maybe_not = [cas(0, (0, 1), None, 1, true), lost(1, 2, Call::Cas(Some(1), 7)), get(2, (5, 6), Some(1))];
    assert_eq!(check(&maybe_not), Verdict::Linearizable);
}

#[test]
fn a_stale_compare_and_set_success_is_caught() {
    // The key was written (and the write acknowledged) before the CAS began, yet a CAS
    // expecting the key absent succeeded: a primary that had not seen the write answered.
    let ops = [cas(0, (0, 1), None, 1, true), cas(1, (2, 3), None, 2, true), get(2, (4, 5), Some(2))];
    let a = anomaly(&ops);
    assert_eq!(a.op, 1, "the second CAS from absent is the stale success");
    assert_eq!(a.state, Some(1));
    assert!(a.report(&ops).contains(">> 1 k 2 3 CAS nil 2 -> ok"), "{}", a.report(&ops));
    // A CAS that succeeds on a value already overwritten.
    let ops = [set(0, (0, 1), 5), set(0, (2, 3), 6), cas(1, (4, 5), Some(5), 7, true)];
    assert_eq!(anomaly(&ops).op, 2);
    // A CAS that fails although the value it expected was there all along.
    let ops = [set(0, (0, 1), 5), cas(1, (2, 3), Some(5), 7, false), get(2, (4, 5), Some(5))];
    assert_eq!(anomaly(&ops).op, 1);
    // Two GETDELs both returning the same value: one deleted it, the other read it after.
    let ops = [set(0, (0, 1), 5), getdel(1, (2, 3), Some(5)), getdel(2, (4, 5), Some(5))];
    assert_eq!(anomaly(&ops).op, 2);
}
