//! TTLs: TTL/PTTL, EXPIRETIME/PEXPIRETIME, EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT with
//! NX/XX/GT/LT, PERSIST. Times are the guest clock's milliseconds (the `now_ms` the
//! guest passes in), which is what the absolute forms (…AT, …TIME) are measured in.

use alloc::vec::Vec;

use crate::commands::{int_arg, is, now_i64, out_of_memory, wrong_args, Ctx};
use crate::reply;
use crate::string_cmds::invalid_expire;

/// The live key's expiry: Err(-2) when missing, Err(-1) without TTL.
fn expiry(ctx: &mut Ctx, key: &[u8]) -> Result<u64, i64> {
    match ctx.store.expiry(key, ctx.now_ms) {
        None => Err(-2),
        Some(None) => Err(-1),
        Some(Some(at)) => Ok(at),
    }
}

/// Redis' `ttlGenericCommand`: remaining or absolute, in ms or rounded seconds.
fn ttl_generic(ctx: &mut Ctx, args: &[Vec<u8>], ms: bool, absolute: bool, name: &str) {
    let [_, key] = args else {
        return wrong_args(ctx.out, name);
    };
    let value = expiry(ctx, key).map(|at| {
        let t = if absolute { at } else { at.saturating_sub(ctx.now_ms) };
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        if ms {
            t
        } else {
            t.saturating_add(500) / 1000
        }
    });
    reply::int(ctx.out, value.unwrap_or_else(|code| code));
}

pub(crate) fn ttl(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    ttl_generic(ctx, args, false, false, "ttl");
}

pub(crate) fn pttl(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    ttl_generic(ctx, args, true, false, "pttl");
}

pub(crate) fn expiretime(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    ttl_generic(ctx, args, false, true, "expiretime");
}

pub(crate) fn pexpiretime(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    ttl_generic(ctx, args, true, true, "pexpiretime");
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
    let base = now_i64(ctx.now_ms);
    expire_generic(ctx, args, base, 1000, "expire");
}

pub(crate) fn pexpire(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let base = now_i64(ctx.now_ms);
    expire_generic(ctx, args, base, 1, "pexpire");
}

pub(crate) fn expireat(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    expire_generic(ctx, args, 0, 1000, "expireat");
}

pub(crate) fn pexpireat(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    expire_generic(ctx, args, 0, 1, "pexpireat");
}

/// Redis' `expireGenericCommand`: `amount` units after `base` ms.
fn expire_generic(ctx: &mut Ctx, args: &[Vec<u8>], base: i64, unit_ms: i64, name: &str) {
    let [_, key, amount, opts @ ..] = args else {
        return wrong_args(ctx.out, name);
    };
    let Some(condition) = parse_expire_condition(ctx.out, opts) else {
        return;
    };
    let Some(amount) = int_arg(ctx.out, amount) else {
        return;
    };
    let at = amount.checked_mul(unit_ms).and_then(|ms| ms.checked_add(base));
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
