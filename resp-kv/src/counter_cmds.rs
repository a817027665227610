//! Counters: INCR, DECR, INCRBY, DECRBY and INCRBYFLOAT. Each keeps the key's TTL.

use alloc::vec::Vec;

use crate::commands::{int_arg, not_integer, out_of_memory, wrong_args, Ctx};
use crate::longdouble::{self, LongDouble};
use crate::parse::parse_i64;
use crate::reply;
use crate::store::{Enc, Ttl};

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
    match ctx.store.write(key, text, Enc::Int, Ttl::Keep, ctx.now_ms) {
        Ok(()) => reply::int(ctx.out, new),
        Err(_) => out_of_memory(ctx.out),
    }
}

/// INCRBYFLOAT: Redis adds in C `long double` (x87 80-bit on x86-64) and prints the
/// sum with `%.17Lf`, trailing zeros cut. The guest computes the same bits exactly with
/// integers (`longdouble.rs`), so every reply and stored value is byte-identical to
/// Redis', and no floating-point instruction is involved.
pub(crate) fn incrbyfloat(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, incr] = args else {
        return wrong_args(ctx.out, "incrbyfloat");
    };
    let current = match ctx.store.get(key, ctx.now_ms) {
        None => Some(LongDouble::ZERO),
        Some(text) => longdouble::parse(text),
    };
    let (Some(current), Some(incr)) = (current, longdouble::parse(incr)) else {
        return reply::error(ctx.out, b"ERR value is not a valid float");
    };
    let Some(sum) = longdouble::add(current, incr) else {
        return reply::error(ctx.out, b"ERR increment would produce NaN or Infinity");
    };
    let text = longdouble::format_human(sum);
    let enc = Enc::created(&text);
    match ctx.store.write(key, text.clone(), enc, Ttl::Keep, ctx.now_ms) {
        Ok(()) => reply::bulk(ctx.out, &text),
        Err(_) => out_of_memory(ctx.out),
    }
}
