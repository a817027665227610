//! The commands a site serves: strings, counters and sets on the replicated keyspace,
//! plus CONFLICTS, RESOLVE and SITES DIGEST. Every write goes through
//! [`SiteStore::local_write`], which versions it, applies it and queues it for peers.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::keystate::{KeyState, Op, Policy, Value};
use super::store::{SiteError, SiteStore};
use super::MAX_SIBLINGS;
use crate::commands::{int_arg, not_integer, out_of_memory, wrong_args, Ctx};
use crate::parse::parse_i64;
use crate::reply;

type Handler = fn(&mut Ctx, &mut [Vec<u8>]);

/// The handler for `name` when sites are on: `Some(Ok)` a site command, `Some(Err)` a
/// command that exists but is not replicated between sites (refused), `None` the
/// ordinary table (server commands such as PING, HELLO, CONFIG, INFO).
pub(crate) fn lookup(name: &[u8]) -> Option<Result<Handler, ()>> {
    const TABLE: &[(&str, Handler)] = &[
        ("get", get),
        ("mget", mget),
        ("exists", exists),
        ("set", set),
        ("del", del),
        ("append", append),
        ("incr", incr),
        ("decr", decr),
        ("incrby", incrby),
        ("decrby", decrby),
        ("sadd", sadd),
        ("srem", srem),
        ("smembers", smembers),
        ("scard", scard),
        ("sismember", sismember),
        ("conflicts", conflicts),
        ("resolve", resolve),
        ("sites", sites),
        ("dbsize", dbsize),
    ];
    if let Some((_, h)) = TABLE.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name)) {
        return Some(Ok(*h));
    }
    let spec = crate::commands::lookup(name)?;
    // KEYS, SCAN, RANDOMKEY name no key but read the keyspace: refused too.
    let touches_keys = spec.first_key != 0 || spec.flags.contains(&"write") || spec.flags.contains(&"readonly");
    touches_keys.then_some(Err(()))
}

/// The error for a key command that sites mode does not replicate.
pub(crate) fn not_replicated_text(name: &[u8]) -> Vec<u8> {
    let mut text = Vec::from(&b"ERR '"[..]);
    text.extend_from_slice(name.get(..64).unwrap_or(name));
    text.extend_from_slice(
        b"' is not replicated between sites; use GET MGET EXISTS SET DEL APPEND INCR(BY) DECR(BY) SADD SREM SMEMBERS SCARD SISMEMBER CONFLICTS RESOLVE",
    );
    text
}

fn wrong_type(out: &mut Vec<u8>) {
    reply::error(out, b"WRONGTYPE Operation against a key holding the wrong kind of value");
}

/// The site store; sites mode is on whenever these handlers run.
fn store<'a>(ctx: &'a mut Ctx) -> Option<&'a mut SiteStore> {
    ctx.store.sites.as_deref_mut()
}

/// Why a write's op could not be built (replied before anything changes).
enum Refusal {
    NotInteger,
    Overflow,
}

fn refuse(out: &mut Vec<u8>, r: Refusal) {
    match r {
        Refusal::NotInteger => not_integer(out),
        Refusal::Overflow => reply::error(out, b"ERR increment or decrement would overflow"),
    }
}

/// Run a local write; false (with the error replied) if it was refused.
fn write(ctx: &mut Ctx, key: &[u8], make: impl FnOnce(&KeyState, Policy) -> Result<Op, Refusal>) -> bool {
    let now = ctx.now_ms;
    let Some(s) = ctx.store.sites.as_deref_mut() else {
        return false;
    };
    match s.local_write(key, now, make) {
        Ok(Ok(())) => true,
        Ok(Err(SiteError::OutOfMemory)) => {
            out_of_memory(ctx.out);
            false
        }
        Ok(Err(e)) => {
            let mut text = Vec::from(&b"ERR "[..]);
            text.extend_from_slice(&super::text(format_args!("{e}")));
            reply::error(ctx.out, &text);
            false
        }
        Err(r) => {
            refuse(ctx.out, r);
            false
        }
    }
}

fn read(ctx: &mut Ctx, key: &[u8]) -> Value {
    store(ctx).map_or(Value::Absent, |s| s.read(key))
}

fn get(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else { return wrong_args(ctx.out, "get") };
    match read(ctx, key) {
        Value::Absent => reply::nil(ctx.out),
        Value::Str(v) => reply::bulk(ctx.out, &v),
        Value::Set(_) => wrong_type(ctx.out),
    }
}

fn mget(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    reply::array_header(ctx.out, keys.len());
    for key in keys {
        match read(ctx, key) {
            Value::Str(v) => reply::bulk(ctx.out, &v),
            Value::Absent | Value::Set(_) => reply::nil(ctx.out),
        }
    }
}

fn exists(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    let n = keys.iter().filter(|k| read(ctx, k) != Value::Absent).count();
    reply::int(ctx.out, i64::try_from(n).unwrap_or(i64::MAX));
}

fn dbsize(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    let n = store(ctx).map_or(0, |s| s.live_len());
    reply::int(ctx.out, i64::try_from(n).unwrap_or(i64::MAX));
}

/// An assignment of `value`, clearing (merge) the counter as this site sees it.
fn assign(state: &KeyState, value: Value) -> Op {
    Op::Assign { value, clear: state.counter_marks() }
}

fn set(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, value] = args else {
        return reply::error(ctx.out, b"ERR SET options are not replicated between sites; use SET key value");
    };
    let value = core::mem::take(value);
    let me = store(ctx).map_or(0, |s| s.config().site_id);
    let ok = write(ctx, key, |state, policy| {
        Ok(match (policy, parse_i64(&value)) {
            // Under merge an integer SET resets the counter (clearing every total this
            // site has seen) and adds the value, so later INCRs from any site add to it.
            (Policy::Merge, Some(n)) => {
                let total = state.counter_total(me).checked_add(n).ok_or(Refusal::Overflow)?;
                Op::Counter { total, clear: state.counter_marks(), reset: true }
            }
            _ => assign(state, Value::Str(value)),
        })
    });
    if ok {
        reply::ok(ctx.out);
    }
}

fn del(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let mut removed = 0i64;
    for key in args.get(1..).unwrap_or(&[]) {
        if read(ctx, key) == Value::Absent {
            continue;
        }
        if !write(ctx, key, |state, _| Ok(assign(state, Value::Absent))) {
            return;
        }
        removed = removed.saturating_add(1);
    }
    reply::int(ctx.out, removed);
}

fn append(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, suffix] = args else { return wrong_args(ctx.out, "append") };
    let mut value = match read(ctx, key) {
        Value::Absent => Vec::new(),
        Value::Str(v) => v,
        Value::Set(_) => return wrong_type(ctx.out),
    };
    value.extend_from_slice(suffix);
    let len = i64::try_from(value.len()).unwrap_or(i64::MAX);
    if write(ctx, key, |state, _| Ok(assign(state, Value::Str(value)))) {
        reply::int(ctx.out, len);
    }
}

fn incr(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else { return wrong_args(ctx.out, "incr") };
    add(ctx, &key.clone(), 1);
}

fn decr(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else { return wrong_args(ctx.out, "decr") };
    add(ctx, &key.clone(), -1);
}

fn incrby(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, by] = args else { return wrong_args(ctx.out, "incrby") };
    if let Some(by) = int_arg(ctx.out, by) {
        add(ctx, &key.clone(), by);
    }
}

fn decrby(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, by] = args else { return wrong_args(ctx.out, "decrby") };
    match int_arg(ctx.out, by).map(i64::checked_neg) {
        Some(Some(by)) => add(ctx, &key.clone(), by),
        Some(None) => refuse(ctx.out, Refusal::Overflow),
        None => {}
    }
}

/// INCRBY: under merge an increment of this site's own counter total (so concurrent
/// increments at other sites add up); otherwise an assignment of the new number.
fn add(ctx: &mut Ctx, key: &[u8], by: i64) {
    let current = match read(ctx, key) {
        Value::Absent => 0,
        Value::Str(v) => match parse_i64(&v) {
            Some(n) => n,
            None => return refuse(ctx.out, Refusal::NotInteger),
        },
        Value::Set(_) => return wrong_type(ctx.out),
    };
    let Some(new) = current.checked_add(by) else { return refuse(ctx.out, Refusal::Overflow) };
    let me = store(ctx).map_or(0, |s| s.config().site_id);
    let ok = write(ctx, key, |state, policy| {
        if policy != Policy::Merge {
            return Ok(assign(state, Value::Str(number(new))));
        }
        if state.has_counter() || current == 0 {
            let total = state.counter_total(me).checked_add(by).ok_or(Refusal::Overflow)?;
            Ok(Op::Counter { total, clear: Vec::new(), reset: false })
        } else {
            // A plain string integer becomes a counter holding its value.
            let total = state.counter_total(me).checked_add(new).ok_or(Refusal::Overflow)?;
            Ok(Op::Counter { total, clear: state.counter_marks(), reset: true })
        }
    });
    if ok {
        reply::int(ctx.out, new);
    }
}

fn number(n: i64) -> Vec<u8> {
    let mut v = Vec::new();
    reply::push_i64(&mut v, n);
    v
}

fn members_of(ctx: &mut Ctx, key: &[u8]) -> Result<BTreeSet<Vec<u8>>, ()> {
    match read(ctx, key) {
        Value::Absent => Ok(BTreeSet::new()),
        Value::Set(m) => Ok(m),
        Value::Str(_) => Err(()),
    }
}

fn sadd(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some((key, elems)) = args.split_first_mut().and_then(|(_, rest)| rest.split_first_mut()) else {
        return wrong_args(ctx.out, "sadd");
    };
    if elems.is_empty() {
        return wrong_args(ctx.out, "sadd");
    }
    let Ok(mut members) = members_of(ctx, key) else { return wrong_type(ctx.out) };
    let fresh: Vec<Vec<u8>> =
        elems.iter().filter(|e| !members.contains(*e)).cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let added = i64::try_from(fresh.len()).unwrap_or(i64::MAX);
    let all: Vec<Vec<u8>> = elems.iter_mut().map(core::mem::take).collect();
    let ok = write(ctx, key, |state, policy| {
        if policy == Policy::Merge {
            // Every add gets a tag, even of a present member: a concurrent SREM that
            // did not see this add must not remove it (add wins).
            return Ok(Op::SetAdd(all));
        }
        members.extend(fresh);
        Ok(assign(state, Value::Set(members)))
    });
    if ok {
        reply::int(ctx.out, added);
    }
}

fn srem(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some((key, elems)) = args.split_first_mut().and_then(|(_, rest)| rest.split_first_mut()) else {
        return wrong_args(ctx.out, "srem");
    };
    if elems.is_empty() {
        return wrong_args(ctx.out, "srem");
    }
    let Ok(mut members) = members_of(ctx, key) else { return wrong_type(ctx.out) };
    let gone: BTreeSet<Vec<u8>> = elems.iter().filter(|e| members.contains(*e)).cloned().collect();
    if gone.is_empty() {
        return reply::int(ctx.out, 0);
    }
    let removed = i64::try_from(gone.len()).unwrap_or(i64::MAX);
    let ok = write(ctx, key, |state, policy| {
        if policy == Policy::Merge {
            return Ok(Op::SetRem(gone.into_iter().collect()));
        }
        members.retain(|m| !gone.contains(m));
        let value = if members.is_empty() { Value::Absent } else { Value::Set(members) };
        Ok(assign(state, value))
    });
    if ok {
        reply::int(ctx.out, removed);
    }
}

fn smembers(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else { return wrong_args(ctx.out, "smembers") };
    let Ok(members) = members_of(ctx, key) else { return wrong_type(ctx.out) };
    reply::array_header(ctx.out, members.len());
    members.iter().for_each(|m| reply::bulk(ctx.out, m));
}

fn scard(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else { return wrong_args(ctx.out, "scard") };
    let Ok(members) = members_of(ctx, key) else { return wrong_type(ctx.out) };
    reply::int(ctx.out, i64::try_from(members.len()).unwrap_or(i64::MAX));
}

fn sismember(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, member] = args else { return wrong_args(ctx.out, "sismember") };
    let Ok(members) = members_of(ctx, key) else { return wrong_type(ctx.out) };
    reply::int(ctx.out, i64::from(members.contains(member.as_slice())));
}

/// `CONFLICTS key`: the key's live writes, newest first, as
/// `[origin site, "wall_ms.logical", value or nil if deleted]`; at most MAX_SIBLINGS.
fn conflicts(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else { return wrong_args(ctx.out, "conflicts") };
    let mut siblings = store(ctx).and_then(|s| s.key(key)).map_or(Vec::new(), |k| k.siblings().to_vec());
    siblings.sort_by_key(|s| core::cmp::Reverse((s.hlc, s.dot.site)));
    siblings.truncate(MAX_SIBLINGS);
    reply::array_header(ctx.out, siblings.len());
    for s in siblings {
        reply::array_header(ctx.out, 3);
        reply::int(ctx.out, i64::from(s.dot.site));
        let stamp = super::text(format_args!("{}.{}", s.hlc.wall_ms, s.hlc.logical));
        reply::bulk(ctx.out, &stamp);
        match &s.value {
            Value::Absent => reply::nil(ctx.out),
            Value::Str(v) => reply::bulk(ctx.out, v),
            Value::Set(m) => {
                let joined: Vec<u8> = m.iter().flat_map(|e| e.iter().copied().chain(*b",")).collect();
                reply::bulk(ctx.out, joined.strip_suffix(b",").unwrap_or(&joined));
            }
        }
    }
}

/// `RESOLVE key value`: a write that has seen every sibling, so it supersedes them all.
fn resolve(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, value] = args else { return wrong_args(ctx.out, "resolve") };
    let value = core::mem::take(value);
    if write(ctx, key, |state, _| Ok(assign(state, Value::Str(value)))) {
        reply::ok(ctx.out);
    }
}

/// `SITES DIGEST`: hex digest of the replicated keyspace (equal at converged sites).
fn sites(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, sub] = args else { return wrong_args(ctx.out, "sites") };
    if !sub.eq_ignore_ascii_case(b"digest") {
        return crate::commands::unknown_subcommand(ctx.out, sub, "SITES");
    }
    let digest = store(ctx).map_or(0, |s| s.digest());
    reply::bulk(ctx.out, &super::text(format_args!("{digest:016x}")));
}
