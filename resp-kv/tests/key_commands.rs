//! DEL, EXISTS, TTL/PTTL, EXPIRE/PEXPIRE/PERSIST, DBSIZE, FLUSHALL.

mod common;
use common::Server;

#[test]
fn del_counts_only_existing_keys() {
    let mut s = Server::new();
    s.call(&["MSET", "a", "1", "b", "2"]);
    assert_eq!(s.call(&["DEL", "a", "b", "c", "a"]), ":2\r\n");
    assert_eq!(s.call(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn exists_counts_every_mention() {
    let mut s = Server::new();
    s.call(&["SET", "a", "1"]);
    assert_eq!(s.call(&["EXISTS", "a", "a", "b"]), ":2\r\n");
}

#[test]
fn ttl_reports_missing_and_persistent_keys() {
    let mut s = Server::new();
    assert_eq!(s.call(&["TTL", "none"]), ":-2\r\n");
    assert_eq!(s.call(&["PTTL", "none"]), ":-2\r\n");
    s.call(&["SET", "k", "v"]);
    assert_eq!(s.call(&["TTL", "k"]), ":-1\r\n");
}

#[test]
fn ttl_rounds_to_nearest_second() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v", "PX", "1499"]);
    assert_eq!(s.call(&["TTL", "k"]), ":1\r\n");
    s.call(&["SET", "k", "v", "PX", "1500"]);
    assert_eq!(s.call(&["TTL", "k"]), ":2\r\n");
}

#[test]
fn expire_sets_ttl_and_key_disappears_later() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v"]);
    assert_eq!(s.call(&["EXPIRE", "k", "2"]), ":1\r\n");
    assert_eq!(s.call(&["PTTL", "k"]), ":2000\r\n");
    s.now_ms += 2_001;
    assert_eq!(s.call(&["GET", "k"]), "$-1\r\n");
}

#[test]
fn expire_of_missing_key_returns_zero() {
    let mut s = Server::new();
    assert_eq!(s.call(&["EXPIRE", "none", "5"]), ":0\r\n");
}

#[test]
fn expire_in_the_past_deletes_the_key() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v"]);
    assert_eq!(s.call(&["PEXPIRE", "k", "-1"]), ":1\r\n");
    assert_eq!(s.call(&["EXISTS", "k"]), ":0\r\n");
}

#[test]
fn expire_conditions_follow_redis() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v"]);
    assert_eq!(s.call(&["EXPIRE", "k", "10", "XX"]), ":0\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "10", "GT"]), ":0\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "10", "NX"]), ":1\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "20", "NX"]), ":0\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "5", "GT"]), ":0\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "5", "LT"]), ":1\r\n");
    assert_eq!(s.call(&["TTL", "k"]), ":5\r\n");
}

#[test]
fn expire_rejects_bad_options_and_values() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v"]);
    assert_eq!(
        s.call(&["EXPIRE", "k", "10", "NX", "XX"]),
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        s.call(&["EXPIRE", "k", "10", "GT", "LT"]),
        "-ERR GT and LT options at the same time are not compatible\r\n"
    );
    assert_eq!(s.call(&["EXPIRE", "k", "10", "ZZ"]), "-ERR Unsupported option ZZ\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "soon"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(s.call(&["EXPIRE", "k", "9223372036854775807"]), "-ERR invalid expire time in 'expire' command\r\n");
    assert_eq!(s.call(&["TTL", "k"]), ":-1\r\n");
}

#[test]
fn persist_removes_the_ttl() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v", "EX", "10"]);
    assert_eq!(s.call(&["PERSIST", "k"]), ":1\r\n");
    assert_eq!(s.call(&["PERSIST", "k"]), ":0\r\n");
    assert_eq!(s.call(&["TTL", "k"]), ":-1\r\n");
}

#[test]
fn dbsize_excludes_expired_keys() {
    let mut s = Server::new();
    s.call(&["SET", "a", "1", "PX", "10"]);
    s.call(&["SET", "b", "1"]);
    assert_eq!(s.call(&["DBSIZE"]), ":2\r\n");
    s.now_ms += 11;
    assert_eq!(s.call(&["DBSIZE"]), ":1\r\n");
}

#[test]
fn expire_some_sweeps_within_budget() {
    let mut s = Server::new();
    for i in 0..10 {
        s.call(&["SET", &format!("k{i}"), "v", "PX", "1"]);
    }
    let later = s.now_ms + 2;
    assert_eq!(s.store.expire_some(later, 4), 4);
    assert_eq!(s.store.len(), 6);
    assert_eq!(s.store.expire_some(later, 100), 6);
    assert_eq!(s.store.used_bytes(), 0);
}

#[test]
fn flushall_empties_the_store_in_either_mode() {
    let mut s = Server::new();
    s.call(&["MSET", "a", "1", "b", "2"]);
    assert_eq!(s.call(&["FLUSHALL"]), "+OK\r\n");
    s.call(&["SET", "a", "1"]);
    assert_eq!(s.call(&["FLUSHALL", "ASYNC"]), "+OK\r\n");
    assert_eq!(s.call(&["FLUSHDB", "sync"]), "+OK\r\n");
    assert_eq!(s.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(s.store.used_bytes(), 0);
}

#[test]
fn flushall_with_bad_mode_is_a_syntax_error() {
    let mut s = Server::new();
    s.call(&["SET", "a", "1"]);
    assert_eq!(s.call(&["FLUSHALL", "NOW"]), "-ERR syntax error\r\n");
    assert_eq!(s.call(&["DBSIZE"]), ":1\r\n");
}
