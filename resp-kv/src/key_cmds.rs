//! Keyspace commands: DEL/UNLINK, EXISTS/TOUCH, TYPE, RENAME/RENAMENX, COPY, RANDOMKEY,
//! DBSIZE, FLUSHALL/FLUSHDB.

use alloc::vec::Vec;

use crate::commands::{int_arg, is, out_of_memory, syntax_error, wrong_args, Ctx};
use crate::reply;

fn count_reply(out: &mut Vec<u8>, n: usize) {
    reply::int(out, i64::try_from(n).unwrap_or(i64::MAX));
}

/// DEL and UNLINK (which only frees memory in the background in Redis).
pub(crate) fn del(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    let removed = keys.iter().filter(|key| ctx.store.delete(key, ctx.now_ms)).count();
    count_reply(ctx.out, removed);
}

/// EXISTS and TOUCH: count a key once per mention, as Redis does (`EXISTS k k` is 2).
pub(crate) fn exists(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let keys = args.get(1..).unwrap_or(&[]);
    let found = keys.iter().filter(|key| ctx.store.contains(key, ctx.now_ms)).count();
    count_reply(ctx.out, found);
}

/// TYPE: every value is a string here.
pub(crate) fn type_of(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key] = args else {
        return wrong_args(ctx.out, "type");
    };
    let name = if ctx.store.contains(key, ctx.now_ms) { "string" } else { "none" };
    reply::simple(ctx.out, name);
}

pub(crate) fn rename(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    rename_generic(ctx, args, false);
}

pub(crate) fn renamenx(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    rename_generic(ctx, args, true);
}

/// Redis' `renameGenericCommand`: the value keeps its TTL; a missing source is an
/// error even when renaming a key to itself.
fn rename_generic(ctx: &mut Ctx, args: &[Vec<u8>], nx: bool) {
    let [_, src, dst] = args else {
        return wrong_args(ctx.out, if nx { "renamenx" } else { "rename" });
    };
    if !ctx.store.contains(src, ctx.now_ms) {
        return reply::error(ctx.out, b"ERR no such key");
    }
    if nx && (src == dst || ctx.store.contains(dst, ctx.now_ms)) {
        return reply::int(ctx.out, 0);
    }
    ctx.store.rename(src, dst, ctx.now_ms);
    if nx {
        reply::int(ctx.out, 1);
    } else {
        reply::ok(ctx.out);
    }
}

/// COPY source destination [DB n] [REPLACE]; only database 0 exists.
pub(crate) fn copy(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, src, dst, opts @ ..] = args else {
        return wrong_args(ctx.out, "copy");
    };
    let mut replace = false;
    let mut j = 0usize;
    while let Some(opt) = opts.get(j) {
        if is(opt, "REPLACE") {
            replace = true;
        } else if let (true, Some(db)) = (is(opt, "DB"), opts.get(j.saturating_add(1))) {
            let Some(db) = int_arg(ctx.out, db) else {
                return;
            };
            if i32::try_from(db).is_err() {
                return reply::error(
                    ctx.out,
                    b"ERR value is out of range, value must between -2147483648 and 2147483647",
                );
            }
            if db != 0 {
                return reply::error(ctx.out, b"ERR DB index is out of range");
            }
            j = j.saturating_add(1);
        } else {
            return syntax_error(ctx.out);
        }
        j = j.saturating_add(1);
    }
    if src == dst {
        return reply::error(ctx.out, b"ERR source and destination objects are the same");
    }
    if !ctx.store.contains(src, ctx.now_ms) {
        return reply::int(ctx.out, 0);
    }
    if !replace && ctx.store.contains(dst, ctx.now_ms) {
        return reply::int(ctx.out, 0);
    }
    match ctx.store.copy(src, dst, ctx.now_ms) {
        Ok(copied) => reply::int(ctx.out, i64::from(copied)),
        Err(_) => out_of_memory(ctx.out),
    }
}

/// RANDOMKEY: a key drawn deterministically from the store's state (see
/// `Store::random_key`), or nil when the keyspace is empty.
pub(crate) fn randomkey(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    let key = ctx.store.random_key(ctx.now_ms);
    reply::opt_bulk(ctx.out, key.as_deref());
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
