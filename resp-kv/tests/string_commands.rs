//! GET / SET and the other string commands, happy paths and error replies.

mod common;
use common::Server;

#[test]
fn get_of_missing_key_returns_nil() {
    let mut s = Server::new();
    assert_eq!(s.call(&["GET", "nope"]), "$-1\r\n");
}

#[test]
fn set_then_get_returns_the_value() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SET", "k", "hello"]), "+OK\r\n");
    assert_eq!(s.call(&["get", "k"]), "$5\r\nhello\r\n");
}

#[test]
fn binary_values_round_trip() {
    let mut s = Server::new();
    let value: Vec<u8> = (0u8..=255).collect();
    s.feed(&common::encode_bytes(&[b"SET", b"bin", &value]));
    let (out, _) = s.feed(&common::encode(&["GET", "bin"]));
    let mut expected = b"$256\r\n".to_vec();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(out, expected);
}

#[test]
fn get_with_wrong_arity_names_the_command_in_lower_case() {
    let mut s = Server::new();
    assert_eq!(s.call(&["GET"]), "-ERR wrong number of arguments for 'get' command\r\n");
    assert_eq!(s.call(&["GET", "a", "b"]), "-ERR wrong number of arguments for 'get' command\r\n");
}

#[test]
fn set_nx_only_writes_absent_keys() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SET", "k", "1", "NX"]), "+OK\r\n");
    assert_eq!(s.call(&["SET", "k", "2", "nx"]), "$-1\r\n");
    assert_eq!(s.call(&["GET", "k"]), "$1\r\n1\r\n");
}

#[test]
fn set_xx_only_writes_present_keys() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SET", "k", "1", "XX"]), "$-1\r\n");
    s.call(&["SET", "k", "1"]);
    assert_eq!(s.call(&["SET", "k", "2", "XX"]), "+OK\r\n");
    assert_eq!(s.call(&["GET", "k"]), "$1\r\n2\r\n");
}

#[test]
fn set_get_returns_the_previous_value() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SET", "k", "1", "GET"]), "$-1\r\n");
    assert_eq!(s.call(&["SET", "k", "2", "GET"]), "$1\r\n1\r\n");
    assert_eq!(s.call(&["SET", "k", "3", "NX", "GET"]), "$1\r\n2\r\n");
    assert_eq!(s.call(&["GET", "k"]), "$1\r\n2\r\n");
}

#[test]
fn set_ex_expires_the_key_after_its_ttl() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SET", "k", "v", "EX", "10"]), "+OK\r\n");
    s.now_ms += 10_000;
    assert_eq!(s.call(&["GET", "k"]), "$1\r\nv\r\n");
    s.now_ms += 1;
    assert_eq!(s.call(&["GET", "k"]), "$-1\r\n");
    assert_eq!(s.call(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn set_px_expires_in_milliseconds() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v", "PX", "5"]);
    assert_eq!(s.call(&["PTTL", "k"]), ":5\r\n");
    s.now_ms += 6;
    assert_eq!(s.call(&["EXISTS", "k"]), ":0\r\n");
}

#[test]
fn plain_set_clears_ttl_and_keepttl_keeps_it() {
    let mut s = Server::new();
    s.call(&["SET", "k", "v", "EX", "100"]);
    s.call(&["SET", "k", "w", "KEEPTTL"]);
    assert_eq!(s.call(&["TTL", "k"]), ":100\r\n");
    s.call(&["SET", "k", "x"]);
    assert_eq!(s.call(&["TTL", "k"]), ":-1\r\n");
}

#[test]
fn set_rejects_conflicting_or_unknown_options() {
    let mut s = Server::new();
    for args in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "EX", "1", "PX", "1"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "KEEPTTL", "EX", "1"],
        &["SET", "k", "v", "BOGUS"],
    ] {
        assert_eq!(s.call(args), "-ERR syntax error\r\n", "{args:?}");
    }
    assert_eq!(s.call(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn set_rejects_bad_expire_values() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SET", "k", "v", "EX", "ten"]), "-ERR value is not an integer or out of range\r\n");
    for bad in ["0", "-5", "9223372036854775807"] {
        assert_eq!(s.call(&["SET", "k", "v", "EX", bad]), "-ERR invalid expire time in 'set' command\r\n");
    }
    assert_eq!(s.call(&["EXISTS", "k"]), ":0\r\n");
}

#[test]
fn setnx_and_getdel_behave_like_redis() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SETNX", "k", "1"]), ":1\r\n");
    assert_eq!(s.call(&["SETNX", "k", "2"]), ":0\r\n");
    assert_eq!(s.call(&["GETDEL", "k"]), "$1\r\n1\r\n");
    assert_eq!(s.call(&["GETDEL", "k"]), "$-1\r\n");
}

#[test]
fn incr_family_counts_from_zero() {
    let mut s = Server::new();
    assert_eq!(s.call(&["INCR", "n"]), ":1\r\n");
    assert_eq!(s.call(&["INCRBY", "n", "10"]), ":11\r\n");
    assert_eq!(s.call(&["DECR", "n"]), ":10\r\n");
    assert_eq!(s.call(&["DECRBY", "n", "15"]), ":-5\r\n");
    assert_eq!(s.call(&["GET", "n"]), "$2\r\n-5\r\n");
}

#[test]
fn incr_of_non_integer_value_is_an_error() {
    let mut s = Server::new();
    s.call(&["SET", "k", "abc"]);
    assert_eq!(s.call(&["INCR", "k"]), "-ERR value is not an integer or out of range\r\n");
    s.call(&["SET", "k", " 1"]);
    assert_eq!(s.call(&["INCR", "k"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(s.call(&["INCRBY", "n", "1.5"]), "-ERR value is not an integer or out of range\r\n");
}

#[test]
fn incr_overflow_is_refused_and_value_kept() {
    let mut s = Server::new();
    s.call(&["SET", "n", "9223372036854775807"]);
    assert_eq!(s.call(&["INCR", "n"]), "-ERR increment or decrement would overflow\r\n");
    assert_eq!(s.call(&["GET", "n"]), "$19\r\n9223372036854775807\r\n");
    s.call(&["SET", "m", "-9223372036854775808"]);
    assert_eq!(s.call(&["DECR", "m"]), "-ERR increment or decrement would overflow\r\n");
    assert_eq!(s.call(&["DECRBY", "m", "-9223372036854775808"]), "-ERR decrement would overflow\r\n");
}

#[test]
fn incr_keeps_the_ttl() {
    let mut s = Server::new();
    s.call(&["SET", "n", "1", "EX", "50"]);
    s.call(&["INCR", "n"]);
    assert_eq!(s.call(&["TTL", "n"]), ":50\r\n");
}

#[test]
fn mset_and_mget_handle_many_keys() {
    let mut s = Server::new();
    assert_eq!(s.call(&["MSET", "a", "1", "b", "22"]), "+OK\r\n");
    assert_eq!(s.call(&["MGET", "a", "missing", "b"]), "*3\r\n$1\r\n1\r\n$-1\r\n$2\r\n22\r\n");
}

#[test]
fn mset_with_odd_arguments_is_an_arity_error() {
    let mut s = Server::new();
    assert_eq!(s.call(&["MSET", "a", "1", "b"]), "-ERR wrong number of arguments for 'mset' command\r\n");
    assert_eq!(s.call(&["EXISTS", "a"]), ":0\r\n");
}

#[test]
fn mset_later_duplicate_wins() {
    let mut s = Server::new();
    s.call(&["MSET", "a", "1", "a", "2"]);
    assert_eq!(s.call(&["GET", "a"]), "$1\r\n2\r\n");
    assert_eq!(s.call(&["DBSIZE"]), ":1\r\n");
}

#[test]
fn append_creates_and_extends_and_strlen_measures() {
    let mut s = Server::new();
    assert_eq!(s.call(&["APPEND", "k", "foo"]), ":3\r\n");
    assert_eq!(s.call(&["APPEND", "k", "bar"]), ":6\r\n");
    assert_eq!(s.call(&["GET", "k"]), "$6\r\nfoobar\r\n");
    assert_eq!(s.call(&["STRLEN", "k"]), ":6\r\n");
    assert_eq!(s.call(&["STRLEN", "none"]), ":0\r\n");
}
