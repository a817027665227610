//! Keyspace commands: DEL, EXISTS, TTL/PTTL, EXPIRE/PEXPIRE/PERSIST, DBSIZE, FLUSHALL.

use alloc::vec::Vec;

use crate::commands::{int_arg, is, now_i64, out_of_memory, syntax_error, wrong_args, Ctx};
use crate::reply;
use crate::string_cmds::invalid_expire;

fn count_reply(out: &mut Vec<u8>, n: usize) {
    reply::int(out, i64::try_from(n).unwrap_or(i64::MAX));
}

pub(crate) fn del(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    let removed = keys.iter().filter(|key| ctx.store.delete(key, ctx.now_ms)).count();
    count_reply(ctx.out, removed);
}

/// Counts a key once per mention, as Redis does (`EXISTS k k` is 2).
pub(crate) fn exists(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    let found = keys.iter().filter(|key| ctx.store.contains(key, ctx.now_ms)).count();
    count_reply(ctx.out, found);
}

/// Remaining lifetime in ms: -2 for a missing key, -1 for one without TTL.
fn remaining_ms(ctx: &mut Ctx, key: &[u8]) -> Result<u64, i64> {
    match ctx.store.expiry(key, ctx.now_ms) {
        None => Err(-2),
        Some(None) => Err(-1),
        Some(Some(at)) => Ok(at.saturating_sub(ctx.now_ms)),
    }
}

pub(crate) fn ttl(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "ttl");
    };
    // Rounded to the nearest second, like Redis.
    let value = remaining_ms(ctx, key).map(|ms| i64::try_from(ms.saturating_add(500) / 1000).unwrap_or(i64::MAX));
    reply::int(ctx.out, value.unwrap_or_else(|code| code));
}

pub(crate) fn pttl(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "pttl");
    };
    let value = remaining_ms(ctx, key).map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    reply::int(ctx.out, value.unwrap_or_else(|code| code));
}

/// EXPIRE's NX / XX / GT / LT conditions.
#[derive(Default)]
struct ExpireCondition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_expire_condition(out: &mut Vec<u8>, opts: &[Vec<u8>]) -> Option<ExpireCondition> {
    let mut c = ExpireCondition::default();
    for opt in opts {
        let flag = match () {
            () if is(opt, "NX") => &mut c.nx,
            () if is(opt, "XX") => &mut c.xx,
            () if is(opt, "GT") => &mut c.gt,
            () if is(opt, "LT") => &mut c.lt,
            () => {
                let mut text = Vec::from(&b"ERR Unsupported option "[..]);
                text.extend_from_slice(opt);
                reply::error(out, &text);
                return None;
            }
        };
        *flag = true;
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        reply::error(out, b"ERR NX and XX, GT or LT options at the same time are not compatible");
        return None;
    }
    if c.gt && c.lt {
        reply::error(out, b"ERR GT and LT options at the same time are not compatible");
        return None;
    }
    Some(c)
}

impl ExpireCondition {
    /// Whether the new expiry `at` may replace `current` (`None` = no TTL = forever).
    fn allows(&self, current: Option<u64>, at: i64) -> bool {
        let current = current.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.is_none_or(|c| at <= c)
            || self.lt && current.is_some_and(|c| at >= c))
    }
}

pub(crate) fn expire(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    expire_in(ctx, args, 1000, "expire");
}

pub(crate) fn pexpire(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    expire_in(ctx, args, 1, "pexpire");
}

fn expire_in(ctx: &mut Ctx, args: &[Vec<u8>], unit_ms: i64, name: &str) {
    let [_, key, amount, opts @ ..] = args else {
        return wrong_args(ctx.out, name);
    };
    let Some(condition) = parse_expire_condition(ctx.out, opts) else {
        return;
    };
    let Some(amount) = int_arg(ctx.out, amount) else {
        return;
    };
    let at = amount.checked_mul(unit_ms).and_then(|ms| ms.checked_add(now_i64(ctx.now_ms)));
    let Some(at) = at else {
        return invalid_expire(ctx.out, name);
    };
    let Some(current) = ctx.store.expiry(key, ctx.now_ms) else {
        return reply::int(ctx.out, 0);
    };
    if !condition.allows(current, at) {
        return reply::int(ctx.out, 0);
    }
    // A time already passed deletes the key, as in Redis.
    let Some(at) = u64::try_from(at).ok().filter(|&at| at > ctx.now_ms) else {
        ctx.store.delete(key, ctx.now_ms);
        return reply::int(ctx.out, 1);
    };
    match ctx.store.set_expiry(key, Some(at), ctx.now_ms) {
        Ok(changed) => reply::int(ctx.out, i64::from(changed)),
        Err(_) => out_of_memory(ctx.out),
    }
}

pub(crate) fn persist(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "persist");
    };
    let had_ttl = matches!(ctx.store.expiry(key, ctx.now_ms), Some(Some(_)));
    if had_ttl {
        // Removing a TTL only shrinks memory use, so it cannot fail.
        let _ = ctx.store.set_expiry(key, None, ctx.now_ms);
    }
    reply::int(ctx.out, i64::from(had_ttl));
}

pub(crate) fn dbsize(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    ctx.store.expire_all(ctx.now_ms);
    count_reply(ctx.out, ctx.store.len());
}

/// FLUSHALL / FLUSHDB [ASYNC|SYNC]: both modes are synchronous here.
pub(crate) fn flushall(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let mode_ok = match args {
        [_] => true,
        [_, mode] => is(mode, "ASYNC") || is(mode, "SYNC"),
        _ => false,
    };
    if !mode_ok {
        return syntax_error(ctx.out);
    }
    ctx.store.clear();
    reply::ok(ctx.out);
}
