//! The command table and dispatch: arity checks, Redis-style errors, and shared helpers
//! for the handlers in `string_cmds`, `key_cmds` and `server_cmds`.

use alloc::vec::Vec;

use crate::parse::parse_i64;
use crate::{introspect_cmds, key_cmds, reply, server_cmds, string_cmds, ServerInfo, Store};

/// Per-connection state that commands may read or change.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientState {
    pub(crate) id: Option<u64>,
    pub(crate) name: Option<Vec<u8>>,
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
type Handler = fn(&mut Ctx, &mut [Vec<u8>]);

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
    run: Handler,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    run: Handler,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2, run }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const RF: &[&str] = &["readonly", "fast"];
const WR: &[&str] = &["write"];
const WRF: &[&str] = &["write", "fast"];
const F: &[&str] = &["fast"];
const LOADING: &[&str] = &["loading", "stale", "fast"];

/// Every supported command, in `COMMAND` order.
pub(crate) static COMMANDS: &[Spec] = &[
    spec("ping", -1, F, NO_KEYS, server_cmds::ping),
    spec("echo", 2, F, NO_KEYS, server_cmds::echo),
    spec("get", 2, RF, ONE_KEY, string_cmds::get),
    spec("set", -3, W, ONE_KEY, string_cmds::set),
    spec("setnx", 3, WF, ONE_KEY, string_cmds::setnx),
    spec("getdel", 2, WRF, ONE_KEY, string_cmds::getdel),
    spec("mget", -2, RF, ALL_KEYS, string_cmds::mget),
    spec("mset", -3, W, (1, -1, 2), string_cmds::mset),
    spec("append", 3, WF, ONE_KEY, string_cmds::append),
    spec("strlen", 2, RF, ONE_KEY, string_cmds::strlen),
    spec("incr", 2, WF, ONE_KEY, string_cmds::incr),
    spec("decr", 2, WF, ONE_KEY, string_cmds::decr),
    spec("incrby", 3, WF, ONE_KEY, string_cmds::incrby),
    spec("decrby", 3, WF, ONE_KEY, string_cmds::decrby),
    spec("del", -2, WR, ALL_KEYS, key_cmds::del),
    spec("exists", -2, RF, ALL_KEYS, key_cmds::exists),
    spec("ttl", 2, RF, ONE_KEY, key_cmds::ttl),
    spec("pttl", 2, RF, ONE_KEY, key_cmds::pttl),
    spec("expire", -3, WRF, ONE_KEY, key_cmds::expire),
    spec("pexpire", -3, WRF, ONE_KEY, key_cmds::pexpire),
    spec("persist", 2, WRF, ONE_KEY, key_cmds::persist),
    spec("dbsize", 1, RF, NO_KEYS, key_cmds::dbsize),
    spec("flushall", -1, WR, NO_KEYS, key_cmds::flushall),
    spec("flushdb", -1, WR, NO_KEYS, key_cmds::flushall),
    spec("select", 2, LOADING, NO_KEYS, server_cmds::select),
    spec("quit", -1, LOADING, NO_KEYS, server_cmds::quit),
    spec("auth", -2, LOADING, NO_KEYS, server_cmds::auth),
    spec("hello", -1, LOADING, NO_KEYS, server_cmds::hello),
    spec("info", -1, LOADING, NO_KEYS, introspect_cmds::info),
    spec("command", -1, LOADING, NO_KEYS, introspect_cmds::command),
    spec("config", -2, LOADING, NO_KEYS, server_cmds::config),
    spec("client", -2, LOADING, NO_KEYS, server_cmds::client),
];

/// The spec for a command name, case-insensitively.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Run one complete command (non-empty `args`), writing exactly one reply.
pub(crate) fn execute(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(name) = args.first() else {
        return;
    };
    if ctx.store.sites.is_some() {
        match crate::sites::lookup_command(name) {
            Some(Ok(run)) => return run(ctx, args),
            Some(Err(())) => return crate::sites::not_replicated(ctx.out, name),
            None => {}
        }
    }
    let Some(spec) = lookup(name) else {
        return unknown_command(ctx.out, args);
    };
    if !arity_ok(spec.arity, args.len()) {
        return wrong_args(ctx.out, spec.name);
    }
    (spec.run)(ctx, args);
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
fn unknown_command(out: &mut Vec<u8>, args: &[Vec<u8>]) {
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
    reply::error(out, &text);
}

/// `-ERR wrong number of arguments for 'name' command`
pub(crate) fn wrong_args(out: &mut Vec<u8>, name: &str) {
    let mut text = Vec::from(&b"ERR wrong number of arguments for '"[..]);
    text.extend_from_slice(name.as_bytes());
    text.extend_from_slice(b"' command");
    reply::error(out, &text);
}

/// `-ERR unknown subcommand 'sub'. Try CONTAINER HELP.`
pub(crate) fn unknown_subcommand(out: &mut Vec<u8>, sub: &[u8], container: &str) {
    let mut text = Vec::from(&b"ERR unknown subcommand '"[..]);
    text.extend_from_slice(sub.get(..128).unwrap_or(sub));
    text.extend_from_slice(b"'. Try ");
    text.extend_from_slice(container.as_bytes());
    text.extend_from_slice(b" HELP.");
    reply::error(out, &text);
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
