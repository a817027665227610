//! resp-kv against a real `redis-server` (Debian's 7.0), side by side: every script
//! in `compat/` goes to both, and the replies must be byte-identical (see
//! `compat/harness.rs` for the few directives that relax that, each for a reason).
//!
//! The store here runs on the wall clock (Unix milliseconds), as Redis does, so even
//! the absolute-time commands (EXPIREAT, PXAT, EXPIRETIME) are compared.

#[path = "compat/harness.rs"]
mod harness;
#[path = "compat/redis.rs"]
mod redis;

use harness::Endpoint;
use resp_kv::{Conn, Limits, ServerInfo, Store};
use std::time::{SystemTime, UNIX_EPOCH};

/// resp-kv in-process: one store, eight connections.
struct InProcess {
    store: Store,
    conns: Vec<Conn>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

impl Endpoint for InProcess {
    fn call(&mut self, conn: usize, args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        let now = unix_ms();
        // Active expiry, as the guest's main loop does between requests.
        self.store.expire_some(now, 16);
        self.conns[conn].feed(&harness::encode(args), &mut self.store, now, &ServerInfo::default(), &mut out);
        out
    }
}

fn compare(script: &str) {
    let server = redis::RedisServer::start();
    let mut theirs = harness::Tcp::new(&server.addr());
    let mut ours = InProcess { store: Store::new(Limits::default()), conns: (0..8).map(|_| Conn::new()).collect() };
    let outcome = harness::run(script, &mut theirs, &mut ours, true);
    assert!(outcome.compared > 10, "the script compared only {} commands", outcome.compared);
    assert!(
        outcome.differences.is_empty(),
        "{} of {} replies differ from redis-server's:\n{}",
        outcome.differences.len(),
        outcome.compared,
        outcome.differences.join("\n")
    );
}

#[test]
fn strings_match_redis() {
    compare(include_str!("compat/strings.txt"));
}

#[test]
fn keyspace_and_ttls_match_redis() {
    compare(include_str!("compat/keyspace.txt"));
}

#[test]
fn transactions_match_redis() {
    compare(include_str!("compat/transactions.txt"));
}

#[test]
fn errors_and_unknown_commands_match_redis() {
    compare(include_str!("compat/errors.txt"));
}

/// The comparison is not vacuous: a server that answers differently is caught.
#[test]
fn a_different_reply_is_reported() {
    let server = redis::RedisServer::start();
    let mut theirs = harness::Tcp::new(&server.addr());
    let mut ours = InProcess { store: Store::new(Limits::default()), conns: (0..8).map(|_| Conn::new()).collect() };
    // DBSIZE counts the key that only Redis was given.
    theirs.call(0, &[b"SET".to_vec(), b"only-redis".to_vec(), b"1".to_vec()]);
    let outcome = harness::run("DBSIZE\nGET only-redis\nPING", &mut theirs, &mut ours, true);
    assert_eq!(outcome.compared, 3);
    assert_eq!(outcome.differences.len(), 2, "{:?}", outcome.differences);
}
