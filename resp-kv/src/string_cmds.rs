//! String commands: GET, SET and its options, SETNX/SETEX/PSETEX, GETSET, GETEX,
//! GETDEL, MGET/MSET/MSETNX, APPEND, STRLEN. Option parsing and the order of checks
//! follow Redis 7's `t_string.c`, since that order decides which error a client sees.

use alloc::vec::Vec;
use core::mem;

use crate::commands::{int_arg, is, now_i64, out_of_memory, syntax_error, wrong_args, Ctx};
use crate::reply;
use crate::store::{Enc, Ttl};

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

/// How an expire argument is given: seconds or milliseconds, relative or absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpireKind {
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// SET's and GETEX's options (Redis' `parseExtendedStringArgumentsOrReply` flags).
#[derive(Default)]
struct Extended {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    expire: Option<(ExpireKind, usize)>,
}

/// Parse options starting at `args[first]`. As Redis: a repeated option is fine (the
/// last expire wins) but conflicting ones, a missing value, or an option the command
/// does not take is a syntax error — reported before any value is looked at.
fn parse_extended(args: &[Vec<u8>], first: usize, for_set: bool) -> Option<Extended> {
    let mut o = Extended::default();
    let mut j = first;
    while let Some(opt) = args.get(j) {
        let has_next = j.saturating_add(1) < args.len();
        let other_expire = |k: ExpireKind| o.expire.is_some_and(|(kind, _)| kind != k);
        if is(opt, "NX") && !o.xx && for_set {
            o.nx = true;
        } else if is(opt, "XX") && !o.nx && for_set {
            o.xx = true;
        } else if is(opt, "GET") && for_set {
            o.get = true;
        } else if is(opt, "KEEPTTL") && !o.persist && o.expire.is_none() && for_set {
            o.keep_ttl = true;
        } else if is(opt, "PERSIST") && !for_set && o.expire.is_none() && !o.keep_ttl {
            o.persist = true;
        } else if let Some(kind) = expire_option(opt) {
            if o.keep_ttl || o.persist || other_expire(kind) || !has_next {
                return None;
            }
            j = j.saturating_add(1);
            o.expire = Some((kind, j));
        } else {
            return None;
        }
        j = j.saturating_add(1);
    }
    Some(o)
}

fn expire_option(opt: &[u8]) -> Option<ExpireKind> {
    match () {
        () if is(opt, "EX") => Some(ExpireKind::Ex),
        () if is(opt, "PX") => Some(ExpireKind::Px),
        () if is(opt, "EXAT") => Some(ExpireKind::ExAt),
        () if is(opt, "PXAT") => Some(ExpireKind::PxAt),
        () => None,
    }
}

/// The absolute expiry an expire argument asks for, or the Redis error reply
/// (`getExpireMillisecondsOrReply`): not an integer, not positive, or overflowing.
fn expire_at(ctx: &mut Ctx, amount: &[u8], kind: ExpireKind, command: &str) -> Option<u64> {
    let amount = int_arg(ctx.out, amount)?;
    let seconds = matches!(kind, ExpireKind::Ex | ExpireKind::ExAt);
    let relative = matches!(kind, ExpireKind::Ex | ExpireKind::Px);
    let mut ms = Some(amount).filter(|&a| a > 0);
    if seconds {
        ms = ms.and_then(|a| a.checked_mul(1000));
    }
    if relative {
        ms = ms.and_then(|a| a.checked_add(now_i64(ctx.now_ms)));
    }
    let at = ms.filter(|&a| a > 0).and_then(|a| u64::try_from(a).ok());
    if at.is_none() {
        invalid_expire(ctx.out, command);
    }
    at
}

/// `-ERR invalid expire time in 'command' command`
pub(crate) fn invalid_expire(out: &mut Vec<u8>, command: &str) {
    let mut text = Vec::from(&b"ERR invalid expire time in '"[..]);
    text.extend_from_slice(command.as_bytes());
    text.extend_from_slice(b"' command");
    reply::error(out, &text);
}

pub(crate) fn set(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(o) = parse_extended(args, 3, true) else {
        return syntax_error(ctx.out);
    };
    let expire = o.expire.and_then(|(kind, at)| Some((kind, args.get(at)?.clone())));
    set_generic(ctx, args, &o, expire, "set");
}

/// SET with parsed options (`setGenericCommand`); also SETEX and PSETEX.
fn set_generic(ctx: &mut Ctx, args: &mut [Vec<u8>], o: &Extended, expire: Option<(ExpireKind, Vec<u8>)>, name: &str) {
    let expires_at = match expire {
        Some((kind, amount)) => match expire_at(ctx, &amount, kind, name) {
            Some(at) => Some(at),
            None => return,
        },
        None => None,
    };
    let (key, value) = match args {
        [_, key, value, ..] if name == "set" => (key, value),
        [_, key, _, value] => (key, value),
        _ => return wrong_args(ctx.out, name),
    };
    // Copy the old value only when asked for it: it may be several MiB.
    let old = if o.get { ctx.store.get(key, ctx.now_ms).map(<[u8]>::to_vec) } else { None };
    let exists = ctx.store.contains(key, ctx.now_ms);
    let write = !(o.nx && exists || o.xx && !exists);
    if write {
        let ttl = match (expires_at, o.keep_ttl) {
            (Some(at), _) => Ttl::At(at),
            (None, true) => Ttl::Keep,
            (None, false) => Ttl::Clear,
        };
        let value = mem::take(value);
        let enc = Enc::natural(&value);
        if ctx.store.write(key, value, enc, ttl, ctx.now_ms).is_err() {
            return out_of_memory(ctx.out);
        }
    }
    match (o.get, write) {
        (true, _) => reply::opt_bulk(ctx.out, old.as_deref()),
        (false, true) => reply::ok(ctx.out),
        (false, false) => reply::nil(ctx.out),
    }
}

pub(crate) fn setex(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    setex_generic(ctx, args, ExpireKind::Ex, "setex");
}

pub(crate) fn psetex(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    setex_generic(ctx, args, ExpireKind::Px, "psetex");
}

fn setex_generic(ctx: &mut Ctx, args: &mut [Vec<u8>], kind: ExpireKind, name: &str) {
    let Some(amount) = args.get(2).cloned() else {
        return wrong_args(ctx.out, name);
    };
    set_generic(ctx, args, &Extended::default(), Some((kind, amount)), name);
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

/// GETSET: the old value (or nil), then the new one, without TTL.
pub(crate) fn getset(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, value] = args else {
        return wrong_args(ctx.out, "getset");
    };
    let old = ctx.store.get(key, ctx.now_ms).map(<[u8]>::to_vec);
    match ctx.store.set(key, mem::take(value), None, false, ctx.now_ms) {
        Ok(()) => reply::opt_bulk(ctx.out, old.as_deref()),
        Err(_) => out_of_memory(ctx.out),
    }
}

/// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]
pub(crate) fn getex(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(o) = parse_extended(args, 2, false) else {
        return syntax_error(ctx.out);
    };
    let Some(key) = args.get(1) else {
        return wrong_args(ctx.out, "getex");
    };
    let Some(value) = ctx.store.get(key, ctx.now_ms).map(<[u8]>::to_vec) else {
        return reply::nil(ctx.out);
    };
    let at = match o.expire {
        Some((kind, i)) => {
            let amount = args.get(i).cloned().unwrap_or_default();
            match expire_at(ctx, &amount, kind, "getex") {
                Some(at) => Some((kind, at)),
                None => return,
            }
        }
        None => None,
    };
    // An absolute time already past deletes the key (after the value is read).
    let result = match at {
        Some((ExpireKind::ExAt | ExpireKind::PxAt, at)) if at <= ctx.now_ms => {
            ctx.store.delete(key, ctx.now_ms);
            Ok(true)
        }
        Some((_, at)) => ctx.store.set_expiry(key, Some(at), ctx.now_ms),
        // Only a TTL actually removed is a change (WATCH would see it).
        None if o.persist && matches!(ctx.store.expiry(key, ctx.now_ms), Some(Some(_))) => {
            ctx.store.set_expiry(key, None, ctx.now_ms)
        }
        None => Ok(true),
    };
    match result {
        Ok(_) => reply::bulk(ctx.out, &value),
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

fn take_pairs(args: &mut [Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    args.get_mut(1..)
        .unwrap_or(&mut [])
        .chunks_exact_mut(2)
        .filter_map(|pair| match pair {
            [key, value] => Some((mem::take(key), mem::take(value))),
            _ => None,
        })
        .collect()
}

pub(crate) fn mset(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    if args.len().is_multiple_of(2) {
        return wrong_args(ctx.out, "mset");
    }
    match ctx.store.set_many(take_pairs(args), ctx.now_ms) {
        Ok(()) => reply::ok(ctx.out),
        Err(_) => out_of_memory(ctx.out),
    }
}

/// MSETNX: all keys or none, and none when any of them exists.
pub(crate) fn msetnx(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    if args.len().is_multiple_of(2) {
        return wrong_args(ctx.out, "msetnx");
    }
    let keys = args.get(1..).unwrap_or(&[]);
    let any_exists = keys.iter().step_by(2).any(|key| ctx.store.contains(key, ctx.now_ms));
    if any_exists {
        return reply::int(ctx.out, 0);
    }
    match ctx.store.set_many(take_pairs(args), ctx.now_ms) {
        Ok(()) => reply::int(ctx.out, 1),
        Err(_) => out_of_memory(ctx.out),
    }
}

/// `-ERR string exceeds maximum allowed size (proto-max-bulk-len)` unless
/// `size + extra` fits the value limit (APPEND, SETRANGE).
pub(crate) fn length_ok(ctx: &mut Ctx, size: usize, extra: usize) -> bool {
    let fits = size.checked_add(extra).is_some_and(|total| total <= ctx.store.limits().max_bulk_bytes);
    if !fits {
        reply::error(ctx.out, b"ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    fits
}

pub(crate) fn append(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, suffix] = args else {
        return wrong_args(ctx.out, "append");
    };
    if let Some(len) = ctx.store.get(key, ctx.now_ms).map(<[u8]>::len) {
        if !length_ok(ctx, len, suffix.len()) {
            return;
        }
    }
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
