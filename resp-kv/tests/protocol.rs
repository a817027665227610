//! Framing, pipelining, hostile input, resource limits and output backpressure.

mod common;
use common::{encode, Server};
use resp_kv::{Conn, ConnStatus, Limits};

/// Room for a few keys only; requests may be bigger than the store.
fn tiny_memory() -> Limits {
    Limits { max_request_bytes: 4096, max_bulk_bytes: 4096, max_memory_bytes: 1_000, ..Limits::default() }
}

fn small_limits() -> Limits {
    Limits { max_request_bytes: 100, max_bulk_bytes: 100, max_args: 8, max_memory_bytes: 1_000, max_conn_buffer: 200 }
}

#[test]
fn pipelined_thousand_commands_all_answered_in_order() {
    let mut s = Server::new();
    let mut input = Vec::new();
    for _ in 0..1_000 {
        input.extend(encode(&["INCR", "n"]));
    }
    let (out, status) = s.feed(&input);
    let expected: String = (1..=1_000).map(|i| format!(":{i}\r\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert_eq!(status, ConnStatus::Open);
    assert_eq!(s.conn.pending_bytes(), 0);
}

/// Requests used for the split tests: arrays, inline, and a skipped empty array.
fn mixed_requests() -> Vec<u8> {
    let mut input = encode(&["SET", "key", "a value\r\nwith CRLF"]);
    input.extend_from_slice(b"GET key\r\n*0\r\n");
    input.extend(encode(&["APPEND", "key", "!"]));
    input.extend_from_slice(b"ECHO \"q\\x41\"\n");
    input.extend(encode(&["MGET", "key", "none"]));
    input
}

#[test]
fn split_at_every_byte_boundary_gives_identical_output() {
    let input = mixed_requests();
    let (whole, _) = Server::new().feed(&input);
    for cut in 0..=input.len() {
        let mut s = Server::new();
        let (mut out, _) = s.feed(&input[..cut]);
        let (rest, status) = s.feed(&input[cut..]);
        out.extend(rest);
        assert_eq!(out, whole, "cut at {cut}");
        assert_eq!(status, ConnStatus::Open);
        assert_eq!(s.conn.pending_bytes(), 0);
    }
}

#[test]
fn byte_at_a_time_feeding_gives_identical_output() {
    let input = mixed_requests();
    let (whole, _) = Server::new().feed(&input);
    let mut s = Server::new();
    let mut out = Vec::new();
    for byte in &input {
        out.extend(s.feed(std::slice::from_ref(byte)).0);
    }
    assert_eq!(out, whole);
}

#[test]
fn partial_command_produces_no_reply_until_complete() {
    let mut s = Server::new();
    assert_eq!(s.raw(b"*2\r\n$4\r\nECHO\r\n$3\r\nab"), "");
    assert_eq!(s.raw(b"c\r\n"), "$3\r\nabc\r\n");
}

fn assert_protocol_error(input: &[u8], expected: &str) {
    let mut s = Server::new();
    let (out, status) = s.feed(input);
    assert_eq!(String::from_utf8_lossy(&out), expected, "{input:?}");
    assert_eq!(status, ConnStatus::Close, "{input:?}");
}

#[test]
fn malformed_headers_get_protocol_error_and_close() {
    let cases: [(&[u8], &str); 9] = [
        (b"*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*2000\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n+x\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$x\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$999999999999\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$3\r\nabcXY", "-ERR Protocol error: expected CRLF after bulk data\r\n"),
        (b"*1\rX", "-ERR Protocol error: invalid multibulk length\r\n"),
    ];
    for (input, expected) in cases {
        assert_protocol_error(input, expected);
    }
}

#[test]
fn endless_header_line_is_refused_without_waiting_for_crlf() {
    let mut input = b"*".to_vec();
    input.extend(std::iter::repeat_n(b'1', 40));
    assert_protocol_error(&input, "-ERR Protocol error: too big mbulk count string\r\n");
    let mut input = b"*1\r\n$".to_vec();
    input.extend(std::iter::repeat_n(b'1', 40));
    assert_protocol_error(&input, "-ERR Protocol error: too big bulk count string\r\n");
}

#[test]
fn endless_inline_line_is_refused() {
    let input = vec![b'a'; 70 * 1024];
    assert_protocol_error(&input, "-ERR Protocol error: too big inline request\r\n");
}

#[test]
fn unbalanced_inline_quotes_close_the_connection() {
    assert_protocol_error(b"SET a \"b\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n");
}

#[test]
fn commands_before_garbage_still_run_and_connection_stays_closed() {
    let mut s = Server::new();
    let mut input = encode(&["SET", "a", "1"]);
    input.extend_from_slice(b"*x\r\n");
    input.extend(encode(&["SET", "b", "2"]));
    let (out, status) = s.feed(&input);
    assert_eq!(String::from_utf8(out).unwrap(), "+OK\r\n-ERR Protocol error: invalid multibulk length\r\n");
    assert_eq!(status, ConnStatus::Close);
    assert_eq!(s.feed(&encode(&["PING"])), (vec![], ConnStatus::Close));
    assert_eq!(s.store.len(), 1);
}

#[test]
fn garbage_on_one_connection_does_not_disturb_another() {
    let mut s = Server::new();
    let mut other = Conn::new();
    let info = s.info();
    let mut out = Vec::new();
    other.feed(b"*1\r\n$4\r\nPI", &mut s.store, 0, &info, &mut out);
    assert_eq!(s.feed(b"$$$\r\n*z\r\n").1, ConnStatus::Close);
    let status = other.feed(b"NG\r\n", &mut s.store, 0, &info, &mut out);
    assert_eq!((out.as_slice(), status), (&b"+PONG\r\n"[..], ConnStatus::Open));
}

#[test]
fn bulk_longer_than_request_limit_is_refused_before_its_bytes_arrive() {
    let mut s = Server::with_limits(small_limits());
    let (out, status) = s.feed(b"*1\r\n$101\r\n");
    assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");
    assert_eq!(status, ConnStatus::Close);
}

#[test]
fn request_whose_arguments_add_up_past_the_limit_is_refused() {
    let mut s = Server::with_limits(small_limits());
    let value = "v".repeat(60);
    let (out, status) = s.feed(&encode(&["SET", &value, &value]));
    assert_eq!(out, b"-ERR Protocol error: too big request\r\n");
    assert_eq!(status, ConnStatus::Close);
    assert_eq!(s.store.len(), 0);
}

#[test]
fn announced_lengths_do_not_cause_buffering_beyond_received_bytes() {
    let mut s = Server::new();
    let input = b"*1024\r\n$524000\r\nabc";
    let (out, _) = s.feed(input);
    assert!(out.is_empty());
    assert_eq!(s.conn.pending_bytes(), input.len());
}

#[test]
fn too_many_arguments_are_refused() {
    let mut s = Server::with_limits(small_limits());
    let (out, status) = s.feed(b"*9\r\n");
    assert_eq!(out, b"-ERR Protocol error: invalid multibulk length\r\n");
    assert_eq!(status, ConnStatus::Close);
}

#[test]
fn set_beyond_memory_limit_gets_oom_and_store_is_unchanged() {
    let mut s = Server::with_limits(tiny_memory());
    s.call(&["SET", "k", "small"]);
    let used = s.store.used_bytes();
    let big = "x".repeat(90);
    for _ in 0..20 {
        s.call(&["SET", &format!("{}", s.store.len()), &big]);
    }
    let before = (s.store.len(), s.store.used_bytes());
    assert!(before.1 <= 1_000 && before.1 > used);
    let reply = s.call(&["SET", "k2", &big]);
    assert_eq!(reply, "-OOM command not allowed when used memory > 'maxmemory'.\r\n");
    assert_eq!((s.store.len(), s.store.used_bytes()), before);
    assert_eq!(s.call(&["GET", "k2"]), "$-1\r\n");
}

#[test]
fn oom_on_overwrite_keeps_the_old_value() {
    let mut s = Server::with_limits(tiny_memory());
    s.call(&["SET", "k", "old"]);
    let reply = s.call(&["SET", "k", &"x".repeat(2_000)]);
    assert!(reply.starts_with("-OOM "));
    assert_eq!(s.call(&["GET", "k"]), "$3\r\nold\r\n");
}

#[test]
fn oom_mset_writes_nothing() {
    let mut s = Server::with_limits(tiny_memory());
    let v = "x".repeat(20);
    let mut args = vec!["MSET"];
    let keys: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    for k in &keys {
        args.push(k);
        args.push(&v);
    }
    s.call(&["SET", "filler", &"y".repeat(80)]);
    for i in 0..8 {
        s.call(&["SET", &format!("f{i}"), &"y".repeat(40)]);
    }
    let before = s.store.used_bytes();
    if s.call(&args).starts_with("-OOM") {
        assert_eq!(s.store.used_bytes(), before);
        assert_eq!(s.call(&["EXISTS", "k0", "k1", "k2"]), ":0\r\n");
    } else {
        panic!("expected OOM with {before} bytes used");
    }
}

#[test]
fn oom_append_leaves_the_value_alone() {
    let mut s = Server::with_limits(tiny_memory());
    while s.call(&["SET", &format!("f{}", s.store.len()), &"y".repeat(60)]) == "+OK\r\n" {}
    assert_eq!(s.call(&["SET", "k", "abc"]), "+OK\r\n");
    let reply = s.call(&["APPEND", "k", &"z".repeat(80)]);
    assert!(reply.starts_with("-OOM"), "{reply}");
    assert_eq!(s.call(&["GET", "k"]), "$3\r\nabc\r\n");
}

#[test]
fn shrinking_writes_are_allowed_when_full() {
    let mut s = Server::with_limits(tiny_memory());
    while s.call(&["SET", &format!("f{}", s.store.len()), &"y".repeat(60)]) == "+OK\r\n" {}
    assert_eq!(s.call(&["SET", "f0", "tiny"]), "+OK\r\n");
    assert_eq!(s.call(&["DEL", "f1"]), ":1\r\n");
}

#[test]
fn mget_reply_larger_than_the_memory_limit_is_refused() {
    let mut s = Server::with_limits(tiny_memory());
    s.call(&["SET", "k", &"x".repeat(300)]);
    let mut args = vec!["MGET"];
    args.extend(std::iter::repeat_n("k", 4));
    assert_eq!(s.call(&args), "-ERR MGET reply would exceed maxmemory\r\n");
}

#[test]
fn large_output_is_delivered_in_bounded_feeds_via_backlog() {
    let mut s = Server::with_limits(Limits { max_conn_buffer: 100, ..Limits::default() });
    s.call(&["SET", "k", &"v".repeat(40)]);
    let mut input = Vec::new();
    for _ in 0..10 {
        input.extend(encode(&["GET", "k"]));
    }
    let (mut out, _) = s.feed(&input);
    assert!(out.len() < 200);
    assert!(s.conn.has_backlog());
    while s.conn.has_backlog() {
        let (more, _) = s.feed(&[]);
        assert!(more.len() < 200);
        out.extend(more);
    }
    let one = format!("$40\r\n{}\r\n", "v".repeat(40));
    assert_eq!(String::from_utf8(out).unwrap(), one.repeat(10));
    assert_eq!(s.conn.pending_bytes(), 0);
}

#[test]
fn feeding_while_backlogged_past_the_limit_closes() {
    let mut s = Server::with_limits(Limits { max_conn_buffer: 100, ..Limits::default() });
    s.call(&["SET", "k", &"v".repeat(90)]);
    let mut input = Vec::new();
    for _ in 0..20 {
        input.extend(encode(&["GET", "k"]));
    }
    s.feed(&input);
    assert!(s.conn.has_backlog());
    let (out, status) = s.feed(&input);
    assert!(out.ends_with(b"-ERR Protocol error: client query buffer overflow\r\n"));
    assert_eq!(status, ConnStatus::Close);
}

#[test]
fn zero_output_cap_still_runs_one_command_per_feed() {
    let mut s = Server::with_limits(Limits { max_conn_buffer: 0, ..Limits::default() });
    let mut input = encode(&["PING"]);
    input.extend(encode(&["PING"]));
    assert_eq!(s.raw(&input), "+PONG\r\n");
    assert!(s.conn.has_backlog());
    assert_eq!(s.raw(b""), "+PONG\r\n");
    assert!(!s.conn.has_backlog());
}

/// A SET of `len` value bytes, as a client sends it.
fn set_of(len: usize) -> Vec<u8> {
    let value = vec![b'v'; len];
    let mut req = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${len}\r\n").into_bytes();
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    req
}

#[test]
fn a_value_of_exactly_the_default_limit_is_stored_and_one_byte_more_is_refused() {
    let limit = resp_kv::MAX_VALUE_BYTES;
    assert_eq!(Limits::default().max_bulk_bytes, limit);
    assert!(limit >= 4 * 1024 * 1024, "the documented limit is 4 MiB");
    let mut s = Server::with_limits(Limits { max_memory_bytes: 64 << 20, ..Limits::default() });
    // Arriving in 16 KiB segments, as from a TCP socket.
    let mut out = Vec::new();
    for chunk in set_of(limit).chunks(16 * 1024) {
        let (o, status) = s.feed(chunk);
        assert_eq!(status, ConnStatus::Open);
        out.extend(o);
    }
    assert_eq!(out, b"+OK\r\n");
    assert!(s.conn.buffer_capacity() <= 16 * 1024, "the request's buffer is given back");
    assert_eq!(s.call(&["STRLEN", "big"]), format!(":{limit}\r\n"));

    // One byte more: refused from the header alone, before any value byte arrives.
    let mut s = Server::new();
    let req = set_of(limit + 1);
    let header_end = req.len() - (limit + 1) - 2;
    let (out, status) = s.feed(&req[..header_end]);
    assert_eq!(String::from_utf8_lossy(&out), "-ERR Protocol error: invalid bulk length\r\n");
    assert_eq!(status, ConnStatus::Close);
    assert_eq!(s.conn.buffer_capacity(), 0);
}

#[test]
fn a_large_value_grows_the_input_buffer_to_the_request_not_the_next_power_of_two() {
    let mut s = Server::with_limits(Limits { max_memory_bytes: 64 << 20, ..Limits::default() });
    let req = set_of(3 * 1024 * 1024);
    let mut peak = 0;
    for chunk in req[..req.len() - 1].chunks(16 * 1024) {
        let (out, _) = s.feed(chunk);
        assert!(out.is_empty());
        peak = peak.max(s.conn.buffer_capacity());
    }
    assert!(peak <= req.len(), "buffer capacity {peak} for a request of {} bytes", req.len());
    assert_eq!(s.feed(&req[req.len() - 1..]).0, b"+OK\r\n");
}

#[test]
fn info_and_config_report_the_value_limit() {
    let mut s = Server::new();
    let info = s.call(&["INFO", "clients"]);
    assert!(info.contains(&format!("proto_max_bulk_len:{}\r\n", resp_kv::MAX_VALUE_BYTES)), "{info}");
    let config = s.call(&["CONFIG", "GET", "proto-max-bulk-len"]);
    assert!(config.contains(&resp_kv::MAX_VALUE_BYTES.to_string()), "{config}");
}
