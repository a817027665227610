//! Connection and server commands: PING, ECHO, SELECT, QUIT, AUTH, HELLO, CLIENT, CONFIG.
//! Just enough for redis-cli, redis-benchmark and common client libraries to connect.

use alloc::vec::Vec;

use crate::commands::{int_arg, is, syntax_error, unknown_subcommand, wrong_args, Ctx};
use crate::glob::glob_match;
use crate::parse::parse_i64;
use crate::reply;

/// Version string shown by INFO and HELLO.
pub(crate) const VERSION: &str = "7.0.0-ftvmm";

pub(crate) fn ping(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    match args {
        [_] => reply::simple(ctx.out, "PONG"),
        [_, message] => reply::bulk(ctx.out, message),
        _ => wrong_args(ctx.out, "ping"),
    }
}

pub(crate) fn echo(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    match args {
        [_, message] => reply::bulk(ctx.out, message),
        _ => wrong_args(ctx.out, "echo"),
    }
}

/// Only database 0 exists.
pub(crate) fn select(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, index] = args else {
        return wrong_args(ctx.out, "select");
    };
    match int_arg(ctx.out, index) {
        Some(0) => reply::ok(ctx.out),
        Some(_) => reply::error(ctx.out, b"ERR DB index is out of range"),
        None => {}
    }
}

pub(crate) fn quit(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    reply::ok(ctx.out);
    ctx.close = true;
}

/// There is no password: behave like Redis with the default `nopass` user.
pub(crate) fn auth(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    match args {
        [_, _password] => reply::error(
            ctx.out,
            b"ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        [_, user, _password] => {
            check_user(ctx.out, user, true);
        }
        _ => syntax_error(ctx.out),
    }
}

/// Only `default` can log in; replies +OK (when `reply_ok`) or WRONGPASS.
fn check_user(out: &mut Vec<u8>, user: &[u8], reply_ok: bool) -> bool {
    if user == b"default" {
        if reply_ok {
            reply::ok(out);
        }
        true
    } else {
        reply::error(out, b"WRONGPASS invalid username-password pair or user is disabled.");
        false
    }
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: only RESP2 is spoken, so protover 3
/// gets NOPROTO, which makes clients fall back to RESP2.
pub(crate) fn hello(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let opts = args.get(1..).unwrap_or(&[]);
    if let Some((version, rest)) = opts.split_first() {
        match parse_i64(version) {
            None => return reply::error(ctx.out, b"ERR Protocol version is not an integer or out of range"),
            Some(2) => {}
            Some(_) => return reply::error(ctx.out, b"NOPROTO unsupported protocol version"),
        }
        if !apply_hello_options(ctx, rest) {
            return;
        }
    }
    hello_reply(ctx);
}

/// Returns false after replying an error.
fn apply_hello_options(ctx: &mut Ctx, mut rest: &[Vec<u8>]) -> bool {
    let mut name = None;
    loop {
        match rest {
            [] => break,
            [opt, user, _pass, tail @ ..] if is(opt, "AUTH") => {
                if !check_user(ctx.out, user, false) {
                    return false;
                }
                rest = tail;
            }
            [opt, new_name, tail @ ..] if is(opt, "SETNAME") => {
                if !valid_client_name(new_name) {
                    client_name_error(ctx.out);
                    return false;
                }
                name = Some(new_name.clone());
                rest = tail;
            }
            [opt, ..] => {
                let mut text = Vec::from(&b"ERR Syntax error in HELLO option '"[..]);
                text.extend_from_slice(opt);
                text.push(b'\'');
                reply::error(ctx.out, &text);
                return false;
            }
        }
    }
    if let Some(name) = name {
        ctx.client.name = Some(name).filter(|n| !n.is_empty());
    }
    true
}

/// The RESP2 rendering of HELLO's map: a flat array of alternating keys and values.
fn hello_reply(ctx: &mut Ctx) {
    let id = ctx.client_id();
    let out = &mut *ctx.out;
    reply::array_header(out, 14);
    reply::bulk(out, b"server");
    reply::bulk(out, b"redis");
    reply::bulk(out, b"version");
    reply::bulk(out, VERSION.as_bytes());
    reply::bulk(out, b"proto");
    reply::int(out, 2);
    reply::bulk(out, b"id");
    reply::int(out, i64::try_from(id).unwrap_or(i64::MAX));
    reply::bulk(out, b"mode");
    reply::bulk(out, b"standalone");
    reply::bulk(out, b"role");
    reply::bulk(out, ctx.info.role.as_bytes());
    reply::bulk(out, b"modules");
    reply::array_header(out, 0);
}

/// Redis refuses names with spaces, newlines or other non-graphic bytes.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn client_name_error(out: &mut Vec<u8>) {
    reply::error(out, b"ERR Client names cannot contain spaces, newlines or special characters.");
}

pub(crate) fn client(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(sub) = args.get(1) else {
        return wrong_args(ctx.out, "client");
    };
    let (name, arity): (&str, usize) = match () {
        () if is(sub, "SETNAME") => ("client|setname", 3),
        () if is(sub, "GETNAME") => ("client|getname", 2),
        () if is(sub, "SETINFO") => ("client|setinfo", 4),
        () if is(sub, "ID") => ("client|id", 2),
        () => return unknown_subcommand(ctx.out, sub, "CLIENT"),
    };
    if args.len() != arity {
        return wrong_args(ctx.out, name);
    }
    match args {
        [_, _, new_name] => {
            if !valid_client_name(new_name) {
                return client_name_error(ctx.out);
            }
            ctx.client.name = Some(new_name.clone()).filter(|n| !n.is_empty());
            reply::ok(ctx.out);
        }
        [_, _, _, _] => reply::ok(ctx.out),
        [_, sub] if is(sub, "ID") => {
            let id = ctx.client_id();
            reply::int(ctx.out, i64::try_from(id).unwrap_or(i64::MAX));
        }
        _ => reply::opt_bulk(ctx.out, ctx.client.name.as_deref()),
    }
}

/// CONFIG GET answers from a small fixed table (what redis-benchmark and clients probe);
/// nothing can be changed at run time.
pub(crate) fn config(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(sub) = args.get(1) else {
        return wrong_args(ctx.out, "config");
    };
    if is(sub, "GET") {
        match args.get(2..) {
            Some(patterns) if !patterns.is_empty() => config_get(ctx, patterns),
            _ => wrong_args(ctx.out, "config|get"),
        }
    } else if is(sub, "SET") {
        match args.get(2) {
            Some(param) if args.len() >= 4 => {
                let mut text = Vec::from(&b"ERR Unknown option or number of arguments for CONFIG SET - '"[..]);
                text.extend_from_slice(param);
                text.push(b'\'');
                reply::error(ctx.out, &text);
            }
            _ => wrong_args(ctx.out, "config|set"),
        }
    } else if is(sub, "RESETSTAT") {
        reply::ok(ctx.out);
    } else {
        unknown_subcommand(ctx.out, sub, "CONFIG");
    }
}

fn config_get(ctx: &mut Ctx, patterns: &[Vec<u8>]) {
    let limits = *ctx.store.limits();
    let mut max_memory = Vec::new();
    reply::push_u64(&mut max_memory, limits.max_memory_bytes as u64);
    let mut max_bulk = Vec::new();
    reply::push_u64(&mut max_bulk, limits.max_bulk_bytes as u64);
    let params: [(&str, &[u8]); 7] = [
        ("save", b""),
        ("appendonly", b"no"),
        ("maxmemory", &max_memory),
        ("maxmemory-policy", b"noeviction"),
        ("databases", b"1"),
        ("proto-max-bulk-len", &max_bulk),
        ("timeout", b"0"),
    ];
    let matching: Vec<&(&str, &[u8])> =
        params.iter().filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes(), true))).collect();
    reply::array_header(ctx.out, matching.len().saturating_mul(2));
    for (name, value) in matching {
        reply::bulk(ctx.out, name.as_bytes());
        reply::bulk(ctx.out, value);
    }
}
