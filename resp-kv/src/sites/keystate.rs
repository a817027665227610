//! One key's replicated state and the four conflict policies.
//!
//! A key keeps every write no other write has seen (its *siblings*, at most one per
//! site, because a site's own later write always sees its earlier one), the version
//! vector of everything seen, and, for the `merge` policy, per-site counter totals
//! and add-wins set tags. Applying a write is a pure function of the set of writes
//! delivered, not of their order: a write whose dot is already covered is dropped
//! (it was seen by a write we have), and a new write removes exactly the siblings
//! its context covers. So every site that has received the same writes holds the
//! same state, and the policies below only decide what a *read* returns.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::hlc::Timestamp;
use super::vv::{Dot, SiteId, VersionVector};

/// What happens when writes to one key at two sites conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// Highest HLC timestamp wins, ties by site id; the other writes are lost.
    Lww = 1,
    /// The highest site id's write wins, whatever the time.
    SiteId = 2,
    /// Every concurrent value is kept until a client RESOLVEs the key.
    Manual = 3,
    /// Counters add up, strings are joined, sets are add-wins.
    Merge = 4,
}

impl Policy {
    /// Decode the boot-info / wire number.
    pub fn from_u8(v: u8) -> Option<Policy> {
        match v {
            1 => Some(Policy::Lww),
            2 => Some(Policy::SiteId),
            3 => Some(Policy::Manual),
            4 => Some(Policy::Merge),
            _ => None,
        }
    }

    /// The `--conflict` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Lww => "lww",
            Policy::SiteId => "site-id",
            Policy::Manual => "manual",
            Policy::Merge => "merge",
        }
    }
}

/// Separator between concurrent string values joined by the `merge` policy.
pub const MERGE_SEPARATOR: &[u8] = b"|";

/// A value as a write assigns it or a read sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// Deleted (or never written).
    Absent,
    /// A string (integers are strings, as in Redis).
    Str(Vec<u8>),
    /// A set of members.
    Set(BTreeSet<Vec<u8>>),
}

/// `(site, dot counter, running total)`: one site's counter contribution.
pub type CounterMark = (SiteId, u64, i64);

/// The effect of one write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Replace the value (SET, DEL, RESOLVE, and every write under lww/site-id/manual).
    /// `clear` lists the counter contributions the origin had seen (merge only):
    /// an assignment overrides the counter as the origin saw it.
    Assign { value: Value, clear: Vec<CounterMark> },
    /// Merge only: the origin's new running total of increments to this key.
    /// `clear` is as for `Assign`. With `reset` (a SET of an integer) the write also
    /// replaces the strings and set members its origin had seen, like an assignment.
    Counter { total: i64, clear: Vec<CounterMark>, reset: bool },
    /// Merge only: add members, tagged with this write's dot.
    SetAdd(Vec<Vec<u8>>),
    /// Merge only: remove the tags of these members that the origin had seen.
    SetRem(Vec<Vec<u8>>),
}

/// One replicated write to one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Write {
    /// The key written.
    pub key: Vec<u8>,
    /// Origin site and its per-key write number.
    pub dot: Dot,
    /// The origin's HLC when it accepted the write.
    pub hlc: Timestamp,
    /// The key's version vector at the origin just before the write.
    pub ctx: VersionVector,
    /// What the write does.
    pub op: Op,
}

/// A write no other write has seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sibling {
    /// Which write.
    pub dot: Dot,
    /// When its origin accepted it.
    pub hlc: Timestamp,
    /// The value it assigned.
    pub value: Value,
}

/// How applying a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The write was already covered: a write this key has had seen it.
    pub superseded: bool,
    /// The write is concurrent with at least one other live write: a conflict.
    pub conflict: bool,
}

/// One key's replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct KeyState {
    vv: VersionVector,
    /// Sorted by dot.
    siblings: Vec<Sibling>,
    /// Merge: each site's latest running total, by dot counter.
    counter: BTreeMap<SiteId, (u64, i64)>,
    /// Merge: each site's total as the latest clearing write saw it.
    cleared: BTreeMap<SiteId, (u64, i64)>,
    /// Merge: add-wins set members and the dots of the adds that put them there.
    members: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    /// Join of the contexts of every replacing write: a write inside it was replaced.
    replaced: VersionVector,
    /// Merge: per member, the join of the contexts of the SREMs that removed it.
    removed: BTreeMap<Vec<u8>, VersionVector>,
}

fn max_by_dot(map: &mut BTreeMap<SiteId, (u64, i64)>, (site, dot, total): CounterMark) {
    let e = map.entry(site).or_insert((0, 0));
    if dot > e.0 {
        *e = (dot, total);
    }
}

impl KeyState {
    /// The version vector of every write seen to this key.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The live (unseen-by-others) writes, sorted by dot.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Apply a write from anywhere (local or remote). Idempotent and order-independent:
    /// what survives is decided by the contexts of the *replacing* writes received
    /// (assignments, integer SETs, and SREM for its members), whatever their order.
    pub fn apply(&mut self, w: &Write) -> Applied {
        // Counter parts are state-based (latest total per site): merged unconditionally.
        match &w.op {
            Op::Counter { total, clear, .. } => {
                max_by_dot(&mut self.counter, (w.dot.site, w.dot.counter, *total));
                clear.iter().for_each(|&m| max_by_dot(&mut self.cleared, m));
            }
            Op::Assign { clear, .. } => clear.iter().for_each(|&m| max_by_dot(&mut self.cleared, m)),
            Op::SetAdd(_) | Op::SetRem(_) => {}
        }
        let replaced = self.replaced.contains(w.dot);
        let mut conflict = false;
        match &w.op {
            Op::Assign { value, .. } => {
                self.replace_seen(&w.ctx);
                let known = self.siblings.iter().any(|s| s.dot == w.dot);
                if !replaced && !known {
                    conflict = !self.siblings.is_empty();
                    let at = self.siblings.partition_point(|s| s.dot < w.dot);
                    self.siblings.insert(at, Sibling { dot: w.dot, hlc: w.hlc, value: value.clone() });
                }
            }
            Op::Counter { reset: true, .. } => self.replace_seen(&w.ctx),
            Op::Counter { reset: false, .. } => {}
            Op::SetAdd(elems) => {
                for e in elems {
                    let removed = self.removed.get(e).is_some_and(|r| r.contains(w.dot));
                    if !replaced && !removed {
                        self.members.entry(e.clone()).or_default().insert(w.dot);
                    }
                }
            }
            Op::SetRem(elems) => {
                for e in elems {
                    self.removed.entry(e.clone()).or_default().join(&w.ctx);
                    if let Some(tags) = self.members.get_mut(e) {
                        tags.retain(|t| !w.ctx.contains(*t));
                        // A surviving tag is an add the remover had not seen: add wins.
                        conflict |= !tags.is_empty();
                        if tags.is_empty() {
                            self.members.remove(e);
                        }
                    }
                }
            }
        }
        let superseded = self.vv.contains(w.dot);
        self.vv.join(&w.ctx);
        self.vv.add(w.dot);
        Applied { superseded, conflict }
    }

    /// A replacing write: drop the siblings and set members its origin had seen, and
    /// remember its context so that a late-arriving write it had seen is dropped too.
    fn replace_seen(&mut self, ctx: &VersionVector) {
        self.siblings.retain(|s| !ctx.contains(s.dot));
        self.drop_members_seen(ctx);
        self.replaced.join(ctx);
    }

    /// An assignment replaces the set members its origin had seen (their add dots are in
    /// its context); members added concurrently survive.
    fn drop_members_seen(&mut self, ctx: &VersionVector) {
        self.members.retain(|_, tags| {
            tags.retain(|t| !ctx.contains(*t));
            !tags.is_empty()
        });
    }

    /// Whether the merge counter has live increments.
    pub fn has_counter(&self) -> bool {
        self.counter_value().is_some()
    }

    /// The counter contributions this site has seen (what a clearing write carries).
    pub fn counter_marks(&self) -> Vec<CounterMark> {
        self.counter.iter().map(|(&s, &(d, t))| (s, d, t)).collect()
    }

    /// `site`'s running total of increments to this key (merge).
    pub fn counter_total(&self, site: SiteId) -> i64 {
        self.counter.get(&site).map_or(0, |&(_, t)| t)
    }

    /// Merge: the counter's value, if any site's increments are live.
    fn counter_value(&self) -> Option<i64> {
        let mut live = false;
        let mut sum = 0i64;
        for (site, &(dot, total)) in &self.counter {
            let (cdot, ctotal) = self.cleared.get(site).copied().unwrap_or((0, 0));
            if dot > cdot {
                live = true;
                sum = sum.wrapping_add(total.wrapping_sub(ctotal));
            }
        }
        live.then_some(sum)
    }

    /// The sibling a deterministic pick favours under `policy` (manual picks as lww).
    pub fn winner(&self, policy: Policy) -> Option<&Sibling> {
        match policy {
            Policy::SiteId => self.siblings.iter().max_by_key(|s| (s.dot.site, s.hlc)),
            _ => self.siblings.iter().max_by_key(|s| (s.hlc, s.dot.site)),
        }
    }

    /// Whether the key holds concurrent values (manual: needs RESOLVE).
    pub fn conflicted(&self) -> bool {
        self.siblings.len() > 1
    }

    /// What a read returns under `policy`.
    pub fn read(&self, policy: Policy) -> Value {
        if policy != Policy::Merge {
            return self.winner(policy).map_or(Value::Absent, |s| s.value.clone());
        }
        if !self.members.is_empty() {
            return Value::Set(self.members.keys().cloned().collect());
        }
        if let Some(n) = self.counter_value() {
            let mut digits = Vec::new();
            crate::reply::push_i64(&mut digits, n);
            return Value::Str(digits);
        }
        let mut joined: Option<Vec<u8>> = None;
        // Siblings are sorted by dot: site order, a fixed order every site agrees on.
        for s in &self.siblings {
            if let Value::Str(v) = &s.value {
                match joined.as_mut() {
                    Some(j) => {
                        j.extend_from_slice(MERGE_SEPARATOR);
                        j.extend_from_slice(v);
                    }
                    None => joined = Some(v.clone()),
                }
            }
        }
        joined.map_or(Value::Absent, Value::Str)
    }

    /// Bytes this key roughly costs, for the memory limit.
    pub fn approx_bytes(&self) -> usize {
        let values: usize = self
            .siblings
            .iter()
            .map(|s| match &s.value {
                Value::Absent => 0,
                Value::Str(v) => v.len(),
                Value::Set(m) => m.iter().map(|e| e.len().saturating_add(32)).sum(),
            })
            .sum();
        let members: usize = self.members.iter().map(|(e, t)| e.len().saturating_add(t.len().saturating_mul(48))).sum();
        let removed: usize = self.removed.keys().map(|e| e.len().saturating_add(64)).sum();
        let members = members.saturating_add(removed);
        values.saturating_add(members).saturating_add(self.vv.len().saturating_mul(24)).saturating_add(96)
    }

    /// Feed the whole state into `h` (for the keyspace digest).
    pub fn digest(&self, h: &mut super::Fnv) {
        digest_vv(h, &self.vv);
        for s in &self.siblings {
            h.byte(s.dot.site);
            h.u64(s.dot.counter);
            h.u64(s.hlc.wall_ms);
            h.u64(u64::from(s.hlc.logical));
            digest_value(h, &s.value);
        }
        h.byte(0xfe);
        for map in [&self.counter, &self.cleared] {
            for (&s, &(d, t)) in map {
                h.byte(s);
                h.u64(d);
                h.u64(t as u64);
            }
            h.byte(0xfd);
        }
        for (e, tags) in &self.members {
            h.bytes(e);
            for t in tags {
                h.byte(t.site);
                h.u64(t.counter);
            }
        }
        h.byte(0xfc);
        digest_vv(h, &self.replaced);
        for (e, vv) in &self.removed {
            h.bytes(e);
            digest_vv(h, vv);
        }
    }
}

fn digest_vv(h: &mut super::Fnv, vv: &VersionVector) {
    for (s, n) in vv.entries() {
        h.byte(s);
        h.u64(n);
    }
    h.byte(0xff);
}

fn digest_value(h: &mut super::Fnv, v: &Value) {
    match v {
        Value::Absent => h.byte(0),
        Value::Str(s) => {
            h.byte(1);
            h.bytes(s);
        }
        Value::Set(m) => {
            h.byte(2);
            h.u64(m.len() as u64);
            m.iter().for_each(|e| h.bytes(e));
        }
    }
}
