//! MULTI/EXEC/WATCH with several connections on one store and a settable clock: what
//! the side-by-side comparison cannot time exactly (expiry at a given millisecond,
//! active expiry between two commands), the per-connection limits, and the cleanup
//! when a connection goes away.

mod common;

use common::encode;
use resp_kv::{Conn, Limits, ServerInfo, Store};

struct Clients {
    store: Store,
    conns: Vec<Conn>,
    now_ms: u64,
}

impl Clients {
    fn new(n: usize) -> Self {
        Self::with_limits(n, Limits::default())
    }

    fn with_limits(n: usize, limits: Limits) -> Self {
        Clients { store: Store::new(limits), conns: (0..n).map(|_| Conn::new()).collect(), now_ms: 1_000 }
    }

    fn call(&mut self, conn: usize, args: &[&str]) -> String {
        let mut out = Vec::new();
        self.conns[conn].feed(&encode(args), &mut self.store, self.now_ms, &ServerInfo::default(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[test]
fn exec_runs_the_queue_and_replies_one_array() {
    let mut c = Clients::new(1);
    assert_eq!(c.call(0, &["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(0, &["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(c.call(0, &["INCR", "a"]), "+QUEUED\r\n");
    assert_eq!(c.call(0, &["GET", "a"]), "+QUEUED\r\n");
    assert_eq!(c.call(0, &["EXEC"]), "*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n");
    assert_eq!(c.call(0, &["EXEC"]), "-ERR EXEC without MULTI\r\n");
}

#[test]
fn a_write_from_another_connection_breaks_exec() {
    let mut c = Clients::new(2);
    c.call(0, &["WATCH", "k"]);
    c.call(1, &["SET", "k", "other"]);
    c.call(0, &["MULTI"]);
    c.call(0, &["SET", "k", "mine"]);
    assert_eq!(c.call(0, &["EXEC"]), "*-1\r\n");
    assert_eq!(c.call(0, &["GET", "k"]), "$5\r\nother\r\n");
}

#[test]
fn a_watched_key_reaching_its_ttl_breaks_exec_at_the_exact_millisecond() {
    let mut c = Clients::new(1);
    c.call(0, &["SET", "k", "v", "PX", "100"]); // expires after 1_100
    c.call(0, &["WATCH", "k"]);
    c.now_ms = 1_100; // still alive at its expiry time, as in Redis
    c.call(0, &["MULTI"]);
    c.call(0, &["PING"]);
    assert_eq!(c.call(0, &["EXEC"]), "*1\r\n+PONG\r\n");
    c.call(0, &["WATCH", "k"]);
    c.now_ms = 1_101;
    c.call(0, &["MULTI"]);
    c.call(0, &["PING"]);
    assert_eq!(c.call(0, &["EXEC"]), "*-1\r\n");
}

#[test]
fn active_expiry_of_a_watched_key_breaks_exec() {
    let mut c = Clients::new(1);
    c.call(0, &["SET", "k", "v", "PX", "10"]);
    c.call(0, &["WATCH", "k"]);
    // The guest's main loop sweeps between requests: the key is removed there.
    assert_eq!(c.store.expire_some(2_000, 16), 1);
    c.call(0, &["MULTI"]);
    c.call(0, &["PING"]);
    assert_eq!(c.call(0, &["EXEC"]), "*-1\r\n");
}

#[test]
fn watching_a_key_already_past_its_ttl_sees_it_as_absent() {
    let mut c = Clients::new(1);
    c.call(0, &["SET", "k", "v", "PX", "10"]);
    c.now_ms = 5_000;
    // Not yet swept when watched: nothing changes logically afterwards.
    c.call(0, &["WATCH", "k"]);
    c.store.expire_some(5_000, 16);
    c.call(0, &["MULTI"]);
    c.call(0, &["GET", "k"]);
    assert_eq!(c.call(0, &["EXEC"]), "*1\r\n$-1\r\n");
}

#[test]
fn a_released_connection_leaves_no_watch_behind() {
    let mut c = Clients::new(2);
    c.call(0, &["WATCH", "a", "b"]);
    c.call(1, &["WATCH", "a"]);
    assert_eq!(c.store.watching_clients(), 2);
    let mut gone = std::mem::take(&mut c.conns[0]);
    gone.release(&mut c.store);
    assert_eq!(c.store.watching_clients(), 1);
    c.call(1, &["UNWATCH"]);
    assert_eq!(c.store.watching_clients(), 0);
    // A write flags nobody, and EXEC/DISCARD clean up too.
    c.call(1, &["WATCH", "a"]);
    c.call(1, &["MULTI"]);
    c.call(1, &["EXEC"]);
    assert_eq!(c.store.watching_clients(), 0);
}

#[test]
fn queued_commands_past_the_per_connection_limit_abort_the_transaction() {
    let limits = Limits { max_request_bytes: 4096, ..Limits::default() };
    let mut c = Clients::with_limits(1, limits);
    c.call(0, &["MULTI"]);
    let value = "v".repeat(1000);
    for _ in 0..3 {
        assert_eq!(c.call(0, &["SET", "k", &value]), "+QUEUED\r\n");
    }
    assert!(c.conns[0].buffer_capacity() >= 3000, "the queue counts as the connection's memory");
    let refused = c.call(0, &["SET", "k", &value]);
    assert!(refused.starts_with("-ERR transaction too large"), "{refused}");
    assert_eq!(c.call(0, &["EXEC"]), "-EXECABORT Transaction discarded because of previous errors.\r\n");
    assert_eq!(c.call(0, &["EXISTS", "k"]), ":0\r\n");
    assert!(c.conns[0].buffer_capacity() < 3000, "EXEC frees the queue");
}

#[test]
fn watched_keys_past_the_per_connection_limit_are_refused() {
    let limits = Limits { max_request_bytes: 4096, ..Limits::default() };
    let mut c = Clients::with_limits(1, limits);
    let key = "k".repeat(2000);
    assert_eq!(c.call(0, &["WATCH", &key]), "+OK\r\n");
    assert_eq!(c.call(0, &["WATCH", &key]), "+OK\r\n", "watching a key twice costs nothing");
    let other = "j".repeat(2100);
    let refused = c.call(0, &["WATCH", &other]);
    assert!(refused.starts_with("-ERR too many watched keys"), "{refused}");
    assert_eq!(c.call(0, &["UNWATCH"]), "+OK\r\n");
    assert_eq!(c.call(0, &["WATCH", &other]), "+OK\r\n");
}

#[test]
fn commands_inside_multi_are_checked_when_queued() {
    let mut c = Clients::new(1);
    c.call(0, &["MULTI"]);
    assert_eq!(c.call(0, &["GET"]), "-ERR wrong number of arguments for 'get' command\r\n");
    assert_eq!(c.call(0, &["OBJECT", "NOPE", "k"]), "-ERR unknown subcommand 'NOPE'. Try OBJECT HELP.\r\n");
    assert_eq!(c.call(0, &["SET", "k", "v"]), "+QUEUED\r\n");
    assert_eq!(c.call(0, &["EXEC"]), "-EXECABORT Transaction discarded because of previous errors.\r\n");
    assert_eq!(c.call(0, &["GET", "k"]), "$-1\r\n");
}

#[test]
fn randomkey_and_scan_are_the_same_on_two_replicas_fed_the_same_commands() {
    let mut replicas = [Clients::new(1), Clients::new(1)];
    for r in &mut replicas {
        for i in 0..200 {
            r.call(0, &["SET", &format!("key:{i}"), "v"]);
        }
    }
    let draws: Vec<Vec<String>> = replicas
        .iter_mut()
        .map(|r| {
            let mut seen: Vec<String> = (0..50).map(|_| r.call(0, &["RANDOMKEY"])).collect();
            seen.push(r.call(0, &["SCAN", "0", "COUNT", "7"]));
            seen
        })
        .collect();
    assert_eq!(draws[0], draws[1]);
    let distinct: std::collections::BTreeSet<_> = draws[0].iter().collect();
    assert!(distinct.len() > 30, "RANDOMKEY spreads over the keys: {} distinct of 50", distinct.len());
}
