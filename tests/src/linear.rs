//! A linearizability checker for one key's history: a register that GET reads, SET
//! writes, INCR counts up (absent = 0), CAS replaces only when it holds the expected
//! value (absent included) and GETDEL reads and empties, by Wing & Gong's search with Lowe's
//! memoization — the algorithm Knossos and Porcupine implement.
//!
//! ```text
//!   events, by time (a call before a return at the same instant: the lenient order):
//!     call(a) call(b) ret(a) call(c) ret(b) ret(c) ...   indeterminate ops return at +inf
//!
//!   scan from the first event left:
//!     call(x): if x may take effect now (the model accepts its result from the current
//!              state) and (linearized set + x, new state) was never tried:
//!              linearize x (push it, remove its call and return), rescan from the start
//!              else: look at the next event
//!     ret(x):  x was not linearized before its reply: undo the last choice
//!              (pop, put its events back, go on after its call); nothing to undo: NOT
//!              linearizable
//!     ret of an indeterminate op: every completed op is linearized: linearizable
//! ```
//!
//! An indeterminate operation (its connection broke) may take effect at any point after
//! its call, or never: its return sits after every other event, and once all completed
//! operations are placed the remaining ones are simply dropped. An indeterminate GET
//! changes nothing and is dropped at once; an indeterminate INCR may return anything.
//!
//! The memo is a set of (linearized set, state); the set is kept as two 64-bit Zobrist
//! hashes (a random word per operation, XORed in and out), so a step costs O(1) and a
//! long history does not need a bitset per cache entry. A collision of both words (2^-128
//! per pair) could only prune a branch, i.e. report a false anomaly, never hide one.
//!
//! On failure the checker names the operation that could not be placed in the deepest
//! partial linearization it found, with the state just before it and the operations
//! around it: the Knossos/Porcupine report.
use crate::history::{Call, Op, Outcome};
use std::collections::HashSet;

/// The register's state: the key's integer value, or absent.
pub type State = Option<i64>;

/// Applies `op` to `state`; `None` if the op's result could not have come from it.
pub fn step(state: State, op: &Op) -> Option<State> {
    match (op.call, op.outcome) {
        (Call::Get, Outcome::Read(v)) => (v == state).then_some(state),
        (Call::Get, _) => Some(state),
        (Call::Set(v), Outcome::Written | Outcome::Unknown) => Some(Some(v)),
        (Call::Set(_), _) => None,
        (Call::Incr, Outcome::Counted(n)) => (state.unwrap_or(0).checked_add(1) == Some(n)).then_some(Some(n)),
        (Call::Incr, Outcome::Unknown) => Some(Some(state.unwrap_or(0).wrapping_add(1))),
        (Call::Incr, _) => None,
        (Call::Cas(expect, new), Outcome::Cas(true)) => (state == expect).then_some(Some(new)),
        (Call::Cas(expect, _), Outcome::Cas(false)) => (state != expect).then_some(state),
        // If it took effect, it did so at a point where it either matched or not.
        (Call::Cas(expect, new), Outcome::Unknown) => Some(if state == expect { Some(new) } else { state }),
        (Call::Cas(..), _) => None,
        (Call::GetDel, Outcome::Read(v)) => (v == state).then_some(None),
        (Call::GetDel, Outcome::Unknown) => Some(None),
        (Call::GetDel, _) => None,
    }
}

/// The checker's verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, each within its interval, explains every result.
    Linearizable,
    /// None does; `op` (an index into the history) is the first one that cannot be placed.
    NotLinearizable(Anomaly),
    /// The search gave up after this many steps (a history too concurrent to settle).
    Unknown(u64),
}

/// Where the search got stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The operation whose reply came before it could take effect (index into the history).
    pub op: usize,
    /// The state before it, in the deepest partial linearization.
    pub state: State,
    /// How many operations that partial linearization placed.
    pub placed: usize,
    /// The operations around it (indices, by invocation time).
    pub around: Vec<usize>,
}

impl Anomaly {
    /// A report: the stuck operation, the state it met and the history around it.
    pub fn report(&self, ops: &[Op]) -> String {
        let state = self.state.map_or("nil".to_string(), |v| v.to_string());
        let mut s = format!(
            "not linearizable: after {} operations placed (value {state}), no order explains\n  >> {}\n  history around it:\n",
            self.placed, ops[self.op]
        );
        for &i in &self.around {
            let mark = if i == self.op { ">>" } else { "  " };
            s.push_str(&format!("  {mark} {}\n", ops[i]));
        }
        s
    }
}

/// The default step budget of [`check`].
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Checks the history of one key (every op on the same key).
pub fn check(ops: &[Op]) -> Verdict {
    check_with_budget(ops, DEFAULT_BUDGET)
}

const NIL: usize = usize::MAX;

/// One event in the doubly linked list the search lifts operations out of.
#[derive(Clone, Copy)]
struct Node {
    op: usize,
    call: bool,
    /// A call's return node.
    ret: usize,
    prev: usize,
    next: usize,
}

struct Events {
    nodes: Vec<Node>,
}

impl Events {
    /// Node 0 is the head sentinel; then every event of `ops` (by index list `live`) in time order.
    fn new(ops: &[Op], live: &[usize]) -> Events {
        let mut ev: Vec<(u64, u8, usize)> = Vec::with_capacity(live.len() * 2);
        for &i in live {
            ev.push((ops[i].invoke, 0, i));
            ev.push((ops[i].complete.unwrap_or(u64::MAX), 1, i));
        }
        ev.sort_unstable();
        let mut nodes = vec![Node { op: NIL, call: false, ret: NIL, prev: NIL, next: NIL }];
        let mut ret_of = std::collections::HashMap::new();
        for (k, &(_, kind, op)) in ev.iter().enumerate() {
            let id = k + 1;
            nodes.push(Node { op, call: kind == 0, ret: NIL, prev: id - 1, next: NIL });
            nodes[id - 1].next = id;
            if kind == 1 {
                ret_of.insert(op, id);
            }
        }
        for n in nodes.iter_mut().skip(1).filter(|n| n.call) {
            n.ret = ret_of[&n.op];
        }
        Events { nodes }
    }

    fn unlink(&mut self, id: usize) {
        let Node { prev, next, .. } = self.nodes[id];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, id: usize) {
        let Node { prev, next, .. } = self.nodes[id];
        self.nodes[prev].next = id;
        if next != NIL {
            self.nodes[next].prev = id;
        }
    }

    /// Removes a call and its return (the return first, so that undoing in reverse restores both).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].ret);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].ret);
        self.relink(call);
    }
}

/// SplitMix64: the per-operation Zobrist words, fixed so that runs are reproducible.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// [`check`] with an explicit budget of search steps.
pub fn check_with_budget(ops: &[Op], budget: u64) -> Verdict {
    // An indeterminate GET cannot have changed anything: leave it out.
    let live: Vec<usize> = (0..ops.len()).filter(|&i| !(ops[i].call == Call::Get && ops[i].is_unknown())).collect();
    let mut ev = Events::new(ops, &live);
    let zobrist = |op: usize| (mix(op as u64 * 2), mix(op as u64 * 2 + 1));
    let mut cache: HashSet<(u64, u64, State)> = HashSet::new();
    let (mut h1, mut h2) = (0u64, 0u64);
    let mut state: State = None;
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut deepest: Option<(usize, usize, State)> = None;
    let mut steps = 0u64;
    let mut entry = ev.nodes[0].next;
    while entry != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown(steps);
        }
        let node = ev.nodes[entry];
        if node.call {
            let op = &ops[node.op];
            if let Some(next) = step(state, op) {
                let (z1, z2) = zobrist(node.op);
                if cache.insert((h1 ^ z1, h2 ^ z2, next)) {
                    stack.push((entry, state));
                    (h1, h2, state) = (h1 ^ z1, h2 ^ z2, next);
                    ev.lift(entry);
                    entry = ev.nodes[0].next;
                    continue;
                }
            }
            entry = node.next;
        } else if ops[node.op].is_unknown() {
            // Every completed operation comes before this return, so all are placed.
            return Verdict::Linearizable;
        } else {
            if deepest.is_none_or(|(placed, _, _)| stack.len() > placed) {
                deepest = Some((stack.len(), node.op, state));
            }
            let Some((call, before)) = stack.pop() else {
                let (placed, op, state) = deepest.unwrap_or((0, node.op, state));
                return Verdict::NotLinearizable(Anomaly { op, state, placed, around: around(ops, op, 6) });
            };
            let (z1, z2) = zobrist(ev.nodes[call].op);
            (h1, h2, state) = (h1 ^ z1, h2 ^ z2, before);
            ev.unlift(call);
            entry = ev.nodes[call].next;
        }
    }
    // The list is empty: every operation is placed.
    Verdict::Linearizable
}

/// Up to `n` operations on each side of `op`, by invocation time.
fn around(ops: &[Op], op: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].invoke, i));
    let at = order.iter().position(|&i| i == op).unwrap_or(0);
    order[at.saturating_sub(n)..(at + n + 1).min(order.len())].to_vec()
}

#[cfg(test)]
mod tests;
