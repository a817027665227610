//! String commands: GET, SET and its options, the INCR family, MGET/MSET, APPEND...

use alloc::vec::Vec;
use core::mem;

use crate::commands::{int_arg, is, not_integer, now_i64, out_of_memory, syntax_error, wrong_args, Ctx};
use crate::parse::parse_i64;
use crate::reply;

pub(crate) fn get(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "get");
    };
    reply::opt_bulk(ctx.out, ctx.store.get(key, ctx.now_ms));
}

pub(crate) fn getdel(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "getdel");
    };
    let old = ctx.store.get(key, ctx.now_ms).map(<[u8]>::to_vec);
    ctx.store.delete(key, ctx.now_ms);
    reply::opt_bulk(ctx.out, old.as_deref());
}

/// What `SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]` asked for.
#[derive(Default)]
struct SetOptions {
    only_if_absent: bool,
    only_if_present: bool,
    return_old: bool,
    keep_ttl: bool,
    /// The raw EX/PX argument and its unit in milliseconds.
    expire: Option<(Vec<u8>, i64)>,
}

/// Option parsing as Redis does it: any repeated, conflicting or unknown option is a
/// syntax error, reported before the expire value is even looked at.
fn parse_set_options(opts: &[Vec<u8>]) -> Option<SetOptions> {
    let mut o = SetOptions::default();
    let mut iter = opts.iter();
    while let Some(opt) = iter.next() {
        if is(opt, "NX") && !o.only_if_present {
            o.only_if_absent = true;
        } else if is(opt, "XX") && !o.only_if_absent {
            o.only_if_present = true;
        } else if is(opt, "GET") {
            o.return_old = true;
        } else if is(opt, "KEEPTTL") && o.expire.is_none() {
            o.keep_ttl = true;
        } else if (is(opt, "EX") || is(opt, "PX")) && o.expire.is_none() && !o.keep_ttl {
            let unit = if is(opt, "EX") { 1000 } else { 1 };
            o.expire = Some((iter.next()?.clone(), unit));
        } else {
            return None;
        }
    }
    Some(o)
}

/// Absolute expiry for `amount` units from now, or the Redis error reply.
pub(crate) fn expiry_from(ctx: &mut Ctx, amount: &[u8], unit_ms: i64, command: &str) -> Option<u64> {
    let amount = int_arg(ctx.out, amount)?;
    let at =
        if amount > 0 { amount.checked_mul(unit_ms).and_then(|ms| ms.checked_add(now_i64(ctx.now_ms))) } else { None };
    let at = at.and_then(|at| u64::try_from(at).ok());
    if at.is_none() {
        invalid_expire(ctx.out, command);
    }
    at
}

pub(crate) fn invalid_expire(out: &mut Vec<u8>, command: &str) {
    let mut text = Vec::from(&b"ERR invalid expire time in '"[..]);
    text.extend_from_slice(command.as_bytes());
    text.extend_from_slice(b"' command");
    reply::error(out, &text);
}

pub(crate) fn set(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, value, opts @ ..] = args else {
        return wrong_args(ctx.out, "set");
    };
    let Some(options) = parse_set_options(opts) else {
        return syntax_error(ctx.out);
    };
    let expires_at = match &options.expire {
        Some((amount, unit)) => match expiry_from(ctx, amount, *unit, "set") {
            Some(at) => Some(at),
            None => return,
        },
        None => None,
    };
    // Copy the old value only when asked for it: it may be several MiB.
    let old = if options.return_old { ctx.store.get(key, ctx.now_ms).map(<[u8]>::to_vec) } else { None };
    let exists = ctx.store.contains(key, ctx.now_ms);
    let write = !(options.only_if_absent && exists || options.only_if_present && !exists);
    if write {
        let value = mem::take(value);
        let stored = ctx.store.set(key, value, expires_at, options.keep_ttl, ctx.now_ms);
        if stored.is_err() {
            return out_of_memory(ctx.out);
        }
    }
    match (options.return_old, write) {
        (true, _) => reply::opt_bulk(ctx.out, old.as_deref()),
        (false, true) => reply::ok(ctx.out),
        (false, false) => reply::nil(ctx.out),
    }
}

pub(crate) fn setnx(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, value] = args else {
        return wrong_args(ctx.out, "setnx");
    };
    if ctx.store.contains(key, ctx.now_ms) {
        return reply::int(ctx.out, 0);
    }
    match ctx.store.set(key, mem::take(value), None, false, ctx.now_ms) {
        Ok(()) => reply::int(ctx.out, 1),
        Err(_) => out_of_memory(ctx.out),
    }
}

pub(crate) fn mget(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    // Repeating one large key could turn a small request into a reply far larger than
    // the whole store; refuse replies bigger than the memory limit instead.
    let mut total = 0usize;
    for key in keys {
        let len = ctx.store.get(key, ctx.now_ms).map_or(0, <[u8]>::len);
        total = total.saturating_add(len);
    }
    if total > ctx.store.limits().max_memory_bytes {
        return reply::error(ctx.out, b"ERR MGET reply would exceed maxmemory");
    }
    reply::array_header(ctx.out, keys.len());
    for key in keys {
        reply::opt_bulk(ctx.out, ctx.store.get(key, ctx.now_ms));
    }
}

pub(crate) fn mset(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let pairs = args.get_mut(1..).unwrap_or(&mut []);
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return wrong_args(ctx.out, "mset");
    }
    let pairs = pairs
        .chunks_exact_mut(2)
        .filter_map(|pair| match pair {
            [key, value] => Some((mem::take(key), mem::take(value))),
            _ => None,
        })
        .collect();
    match ctx.store.set_many(pairs, ctx.now_ms) {
        Ok(()) => reply::ok(ctx.out),
        Err(_) => out_of_memory(ctx.out),
    }
}

pub(crate) fn append(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, suffix] = args else {
        return wrong_args(ctx.out, "append");
    };
    match ctx.store.append(key, suffix, ctx.now_ms) {
        Ok(len) => reply::int(ctx.out, i64::try_from(len).unwrap_or(i64::MAX)),
        Err(_) => out_of_memory(ctx.out),
    }
}

pub(crate) fn strlen(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "strlen");
    };
    let len = ctx.store.get(key, ctx.now_ms).map_or(0, <[u8]>::len);
    reply::int(ctx.out, i64::try_from(len).unwrap_or(i64::MAX));
}

pub(crate) fn incr(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "incr");
    };
    add(ctx, key, 1);
}

pub(crate) fn decr(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "decr");
    };
    add(ctx, key, -1);
}

pub(crate) fn incrby(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, delta] = args else {
        return wrong_args(ctx.out, "incrby");
    };
    if let Some(delta) = int_arg(ctx.out, delta) {
        add(ctx, key, delta);
    }
}

pub(crate) fn decrby(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, delta] = args else {
        return wrong_args(ctx.out, "decrby");
    };
    let Some(delta) = int_arg(ctx.out, delta) else {
        return;
    };
    // -i64::MIN does not exist; Redis reports it with this dedicated message.
    match delta.checked_neg() {
        Some(negated) => add(ctx, key, negated),
        None => reply::error(ctx.out, b"ERR decrement would overflow"),
    }
}

/// Add `delta` to the integer stored at `key` (0 if absent), keeping its TTL.
fn add(ctx: &mut Ctx, key: &[u8], delta: i64) {
    let current = match ctx.store.get(key, ctx.now_ms) {
        None => 0,
        Some(text) => match parse_i64(text) {
            Some(n) => n,
            None => return not_integer(ctx.out),
        },
    };
    let Some(new) = current.checked_add(delta) else {
        return reply::error(ctx.out, b"ERR increment or decrement would overflow");
    };
    let mut text = Vec::new();
    reply::push_i64(&mut text, new);
    match ctx.store.set(key, text, None, true, ctx.now_ms) {
        Ok(()) => reply::int(ctx.out, new),
        Err(_) => out_of_memory(ctx.out),
    }
}
