//! The status server against real sockets: every route, and every limit crossed
//! (malformed, oversized, slow, non-GET, too many clients) without blocking others.
use super::*;
use crate::host::status::Role;

fn server() -> String {
    serve("127.0.0.1:0", Stats::new(Role::Primary)).expect("serve").to_string()
}

/// Sends `raw`, returns the whole answer.
fn exchange(addr: &str, raw: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(raw).expect("send");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// Nothing has arrived on `c` yet (and it is still open).
fn unanswered(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let r = c.peek(&mut [0u8; 1]);
    c.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn status_metrics_and_the_dashboard_are_served() {
    let addr = server();
    let json = fetch(&addr, "/status", Duration::from_secs(5)).expect("status");
    let v: serde_json::Value = serde_json::from_str(&json).expect("status is JSON");
    assert_eq!(v["role"], "primary");
    let metrics = fetch(&addr, "/metrics?x=1", Duration::from_secs(5)).expect("metrics");
    assert!(metrics.contains("# TYPE ftvmm_exits_total counter"), "{metrics}");
    let page = exchange(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n") && page.contains("text/html") && page.contains("<svg"), "{page}");
    let head = exchange(&addr, b"HEAD /status HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    let missing = fetch(&addr, "/nope", Duration::from_secs(5)).expect_err("404");
    assert!(matches!(missing, HttpError::Status { status: 404, .. }), "{missing}");
}

#[test]
fn malformed_requests_and_other_methods_get_http_errors() {
    let addr = server();
    for raw in [
        &b"HELLO\r\n\r\n"[..],
        b"GET /status HTTP/2.0\r\n\r\n",
        b"GET status HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ] {
        let a = exchange(&addr, raw);
        assert_eq!(status_line(&a), "HTTP/1.1 400 Bad Request", "{raw:?}: {a}");
    }
    let a = exchange(&addr, b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status_line(&a), "HTTP/1.1 405 Method Not Allowed", "{a}");
    assert!(a.contains("Allow: GET, HEAD\r\n"), "{a}");
}

#[test]
fn a_head_over_the_limit_is_refused_and_one_under_it_served() {
    let addr = server();
    let pad = |n: usize| format!("GET /status HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(n));
    let under = pad(MAX_HEAD - 64);
    assert!(under.len() <= MAX_HEAD);
    assert_eq!(status_line(&exchange(&addr, under.as_bytes())), "HTTP/1.1 200 OK");
    let over = pad(MAX_HEAD);
    assert_eq!(status_line(&exchange(&addr, over.as_bytes())), "HTTP/1.1 431 Request Header Fields Too Large");
    // Endless header bytes without an end: refused once past the limit, not read forever.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(&vec![b'a'; MAX_HEAD * 2]);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert_eq!(status_line(&out), "HTTP/1.1 431 Request Header Fields Too Large");
}

#[test]
fn a_slow_client_times_out_while_others_are_served() {
    let addr = server();
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Drips a byte every 300 ms: each read is quick, the whole head is late.
    let dripper = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /status HTTP/1.1\r\n".iter() {
                if w.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    fetch(&addr, "/status", Duration::from_secs(5)).expect("another client is served meanwhile");
    assert!(unanswered(&slow), "the slow client was answered before the other was served");
    let mut out = String::new();
    let _ = slow.read_to_string(&mut out);
    let took = t0.elapsed();
    assert_eq!(status_line(&out), "HTTP/1.1 408 Request Timeout", "{out}");
    assert!(took >= HEAD_DEADLINE && took < HEAD_DEADLINE + Duration::from_secs(5), "408 after {took:?}");
    let _ = dripper.join();
}

#[test]
fn clients_past_the_limit_get_503_at_once_and_are_served_again_later() {
    let addr = server();
    let idle: Vec<TcpStream> = (0..MAX_CLIENTS).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Answered while every place is still taken (the idle ones have had no answer yet).
    let a = exchange(&addr, b"GET /status HTTP/1.1\r\n\r\n");
    assert_eq!(status_line(&a), "HTTP/1.1 503 Service Unavailable", "{a}");
    assert!(idle.iter().all(unanswered), "an idle client was answered before the 503");
    // The idle ones time out (408) and free their places.
    std::thread::sleep(HEAD_DEADLINE + Duration::from_millis(500));
    assert!(fetch(&addr, "/status", Duration::from_secs(5)).is_ok());
    drop(idle);
}
