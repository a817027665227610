//! The command table and dispatch: arity and subcommand checks, Redis-style errors,
//! MULTI queueing, and shared helpers for the handlers in the `*_cmds` modules.

use alloc::vec::Vec;

use crate::parse::parse_i64;
use crate::tx::{self, TxState};
use crate::{
    counter_cmds, expire_cmds, introspect_cmds, key_cmds, range_cmds, reply, scan_cmds, server_cmds, string_cmds,
    ServerInfo, Store,
};

/// Per-connection state that commands may read or change.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientState {
    pub(crate) id: Option<u64>,
    pub(crate) name: Option<Vec<u8>>,
    /// MULTI queue and WATCHed keys.
    pub(crate) tx: TxState,
}

/// Everything a command handler works with.
pub(crate) struct Ctx<'a, 'i> {
    pub(crate) store: &'a mut Store,
    pub(crate) now_ms: u64,
    pub(crate) info: &'a ServerInfo<'i>,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) client: &'a mut ClientState,
    /// Set by QUIT: the connection closes once this reply is written.
    pub(crate) close: bool,
}

impl Ctx<'_, '_> {
    /// This connection's id, allocated from the store on first use.
    pub(crate) fn client_id(&mut self) -> u64 {
        match self.client.id {
            Some(id) => id,
            None => {
                let id = self.store.allocate_client_id();
                self.client.id = Some(id);
                id
            }
        }
    }
}

/// A handler gets the whole argument vector (name first) and may move arguments out.
pub(crate) type Handler = fn(&mut Ctx, &mut [Vec<u8>]);

/// One command, described the way `COMMAND INFO` reports it.
pub(crate) struct Spec {
    /// Lower-case name, as used in error messages.
    pub(crate) name: &'static str,
    /// Exact argument count (name included) when positive, minimum when negative.
    pub(crate) arity: i64,
    pub(crate) flags: &'static [&'static str],
    pub(crate) first_key: i64,
    pub(crate) last_key: i64,
    pub(crate) step: i64,
    /// A container command's subcommands (lower case) and their arities, checked before
    /// the command runs or is queued, as Redis does; empty for plain commands.
    pub(crate) subs: &'static [(&'static str, i64)],
    run: Handler,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    run: Handler,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2, subs: &[], run }
}

const fn container(name: &'static str, arity: i64, subs: &'static [(&'static str, i64)], run: Handler) -> Spec {
    Spec { name, arity, flags: LOADING, first_key: 0, last_key: 0, step: 0, subs, run }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const TWO_KEYS: (i64, i64, i64) = (1, 2, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const PAIRS: (i64, i64, i64) = (1, -1, 2);
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const WR: &[&str] = &["write"];
const WRF: &[&str] = &["write", "fast"];
const F: &[&str] = &["fast"];
const LOADING: &[&str] = &["loading", "stale", "fast"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

/// Every supported command, in `COMMAND` order.
pub(crate) static COMMANDS: &[Spec] = &[
    spec("ping", -1, F, NO_KEYS, server_cmds::ping),
    spec("echo", 2, F, NO_KEYS, server_cmds::echo),
    spec("get", 2, RF, ONE_KEY, string_cmds::get),
    spec("set", -3, W, ONE_KEY, string_cmds::set),
    spec("setnx", 3, WF, ONE_KEY, string_cmds::setnx),
    spec("setex", 4, W, ONE_KEY, string_cmds::setex),
    spec("psetex", 4, W, ONE_KEY, string_cmds::psetex),
    spec("getset", 3, WF, ONE_KEY, string_cmds::getset),
    spec("getex", -2, WRF, ONE_KEY, string_cmds::getex),
    spec("getdel", 2, WRF, ONE_KEY, string_cmds::getdel),
    spec("mget", -2, RF, ALL_KEYS, string_cmds::mget),
    spec("mset", -3, W, PAIRS, string_cmds::mset),
    spec("msetnx", -3, W, PAIRS, string_cmds::msetnx),
    spec("append", 3, WF, ONE_KEY, string_cmds::append),
    spec("strlen", 2, RF, ONE_KEY, string_cmds::strlen),
    spec("getrange", 4, R, ONE_KEY, range_cmds::getrange),
    spec("substr", 4, R, ONE_KEY, range_cmds::getrange),
    spec("setrange", 4, W, ONE_KEY, range_cmds::setrange),
    spec("incr", 2, WF, ONE_KEY, counter_cmds::incr),
    spec("decr", 2, WF, ONE_KEY, counter_cmds::decr),
    spec("incrby", 3, WF, ONE_KEY, counter_cmds::incrby),
    spec("decrby", 3, WF, ONE_KEY, counter_cmds::decrby),
    spec("incrbyfloat", 3, WF, ONE_KEY, counter_cmds::incrbyfloat),
    spec("del", -2, WR, ALL_KEYS, key_cmds::del),
    spec("unlink", -2, WRF, ALL_KEYS, key_cmds::del),
    spec("exists", -2, RF, ALL_KEYS, key_cmds::exists),
    spec("touch", -2, RF, ALL_KEYS, key_cmds::exists),
    spec("type", 2, RF, ONE_KEY, key_cmds::type_of),
    spec("rename", 3, WR, TWO_KEYS, key_cmds::rename),
    spec("renamenx", 3, WRF, TWO_KEYS, key_cmds::renamenx),
    spec("copy", -3, W, TWO_KEYS, key_cmds::copy),
    spec("randomkey", 1, R, NO_KEYS, key_cmds::randomkey),
    spec("keys", 2, R, NO_KEYS, scan_cmds::keys),
    spec("scan", -2, R, NO_KEYS, scan_cmds::scan),
    container("object", -2, &[("encoding", 3)], scan_cmds::object),
    spec("ttl", 2, RF, ONE_KEY, expire_cmds::ttl),
    spec("pttl", 2, RF, ONE_KEY, expire_cmds::pttl),
    spec("expiretime", 2, RF, ONE_KEY, expire_cmds::expiretime),
    spec("pexpiretime", 2, RF, ONE_KEY, expire_cmds::pexpiretime),
    spec("expire", -3, WRF, ONE_KEY, expire_cmds::expire),
    spec("pexpire", -3, WRF, ONE_KEY, expire_cmds::pexpire),
    spec("expireat", -3, WRF, ONE_KEY, expire_cmds::expireat),
    spec("pexpireat", -3, WRF, ONE_KEY, expire_cmds::pexpireat),
    spec("persist", 2, WRF, ONE_KEY, expire_cmds::persist),
    spec("dbsize", 1, RF, NO_KEYS, key_cmds::dbsize),
    spec("flushall", -1, WR, NO_KEYS, key_cmds::flushall),
    spec("flushdb", -1, WR, NO_KEYS, key_cmds::flushall),
    spec("multi", 1, TX, NO_KEYS, tx::multi),
    spec("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], NO_KEYS, tx::exec),
    spec("discard", 1, TX, NO_KEYS, tx::discard),
    spec("watch", -2, TX, ALL_KEYS, tx::watch),
    spec("unwatch", 1, TX, NO_KEYS, tx::unwatch),
    spec("select", 2, LOADING, NO_KEYS, server_cmds::select),
    spec("quit", -1, LOADING, NO_KEYS, server_cmds::quit),
    spec("auth", -2, LOADING, NO_KEYS, server_cmds::auth),
    spec("hello", -1, LOADING, NO_KEYS, server_cmds::hello),
    spec("info", -1, LOADING, NO_KEYS, introspect_cmds::info),
    container("command", -1, &[("count", 2), ("docs", -2), ("info", -2), ("list", -2)], introspect_cmds::command),
    container("config", -2, &[("get", -3), ("set", -4), ("resetstat", 2)], server_cmds::config),
    container("client", -2, &[("setname", 3), ("getname", 2), ("setinfo", 4), ("id", 2)], server_cmds::client),
];

/// The spec for a command name, case-insensitively.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Run one complete command (non-empty `args`), writing exactly one reply; inside
/// MULTI, queue it instead (after the checks Redis makes at queueing time).
pub(crate) fn execute(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(name) = args.first() else {
        return;
    };
    let in_multi = ctx.client.tx.in_multi();
    match resolve(ctx.store.sites.is_some(), args) {
        // Rejected: inside MULTI that aborts the transaction, and a malformed EXEC
        // answers EXECABORT even outside one (Redis' `rejectCommand`).
        Err(text) if in_multi || name.eq_ignore_ascii_case(b"exec") => {
            tx::reject(ctx, name.eq_ignore_ascii_case(b"exec"), &text)
        }
        Err(text) => reply::error(ctx.out, &text),
        Ok(_) if in_multi && !tx::runs_inside_multi(name) => tx::queue(ctx, args),
        Ok(handler) => handler(ctx, args),
    }
}

/// Run one command now (EXEC runs its queue through this).
pub(crate) fn run(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    match resolve(ctx.store.sites.is_some(), args) {
        Ok(handler) => handler(ctx, args),
        Err(text) => reply::error(ctx.out, &text),
    }
}

/// The handler that would run `args`, or the error Redis replies before running or
/// queueing anything: unknown command, wrong arity, unknown subcommand.
pub(crate) fn resolve(sites: bool, args: &[Vec<u8>]) -> Result<Handler, Vec<u8>> {
    let Some(name) = args.first() else {
        return Err(Vec::from(&b"ERR empty command"[..]));
    };
    if sites {
        match crate::sites::lookup_command(name) {
            Some(Ok(run)) => return Ok(run),
            Some(Err(())) => return Err(crate::sites::not_replicated_text(name)),
            None => {}
        }
    }
    let Some(spec) = lookup(name) else {
        return Err(unknown_command_text(args));
    };
    if !arity_ok(spec.arity, args.len()) {
        return Err(wrong_args_text(spec.name));
    }
    if let (false, Some(sub)) = (spec.subs.is_empty(), args.get(1)) {
        let Some((sub_name, arity)) = spec.subs.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(sub)) else {
            return Err(unknown_subcommand_text(sub, spec.name));
        };
        if !arity_ok(*arity, args.len()) {
            let mut full = alloc::string::String::from(spec.name);
            full.push('|');
            full.push_str(sub_name);
            return Err(wrong_args_text(&full));
        }
    }
    Ok(spec.run)
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= arity.saturating_neg()
    }
}

/// Redis: `unknown command 'X', with args beginning with: 'a' 'b' ` — the quoted
/// arguments are cut off once their text reaches 128 bytes.
fn unknown_command_text(args: &[Vec<u8>]) -> Vec<u8> {
    let (name, rest) = args.split_first().map_or((&[][..], &[][..]), |(n, r)| (n.as_slice(), r));
    let mut text = Vec::from(&b"ERR unknown command '"[..]);
    text.extend_from_slice(name.get(..128).unwrap_or(name));
    text.extend_from_slice(b"', with args beginning with: ");
    let mut listed: Vec<u8> = Vec::new();
    for arg in rest {
        let room = 128usize.saturating_sub(listed.len());
        if room == 0 {
            break;
        }
        listed.push(b'\'');
        listed.extend_from_slice(arg.get(..room).unwrap_or(arg));
        listed.extend_from_slice(b"' ");
    }
    text.extend_from_slice(&listed);
    text
}

/// `-ERR wrong number of arguments for 'name' command`
pub(crate) fn wrong_args(out: &mut Vec<u8>, name: &str) {
    reply::error(out, &wrong_args_text(name));
}

fn wrong_args_text(name: &str) -> Vec<u8> {
    let mut text = Vec::from(&b"ERR wrong number of arguments for '"[..]);
    text.extend_from_slice(name.as_bytes());
    text.extend_from_slice(b"' command");
    text
}

/// `-ERR unknown subcommand 'sub'. Try CONTAINER HELP.`
pub(crate) fn unknown_subcommand(out: &mut Vec<u8>, sub: &[u8], container: &str) {
    reply::error(out, &unknown_subcommand_text(sub, container));
}

fn unknown_subcommand_text(sub: &[u8], container: &str) -> Vec<u8> {
    let mut text = Vec::from(&b"ERR unknown subcommand '"[..]);
    text.extend_from_slice(sub.get(..128).unwrap_or(sub));
    text.extend_from_slice(b"'. Try ");
    text.extend(container.bytes().map(|b| b.to_ascii_uppercase()));
    text.extend_from_slice(b" HELP.");
    text
}

pub(crate) fn syntax_error(out: &mut Vec<u8>) {
    reply::error(out, b"ERR syntax error");
}

pub(crate) fn not_integer(out: &mut Vec<u8>) {
    reply::error(out, b"ERR value is not an integer or out of range");
}

pub(crate) fn out_of_memory(out: &mut Vec<u8>) {
    reply::error(out, b"OOM command not allowed when used memory > 'maxmemory'.");
}

/// Parse an integer argument, replying the Redis error when it is not one.
pub(crate) fn int_arg(out: &mut Vec<u8>, arg: &[u8]) -> Option<i64> {
    let value = parse_i64(arg);
    if value.is_none() {
        not_integer(out);
    }
    value
}

/// Case-insensitive keyword comparison for options such as `NX` or `ASYNC`.
pub(crate) fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

/// `now_ms` as the signed time Redis computes expiries in.
pub(crate) fn now_i64(now_ms: u64) -> i64 {
    i64::try_from(now_ms).unwrap_or(i64::MAX)
}
