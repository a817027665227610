//! The status endpoint (`--status ADDR`) as a small HTTP/1.1 server, and the client
//! `ftvmm status` uses.
//!
//! | request        | answer                                                        |
//! |----------------|---------------------------------------------------------------|
//! | `GET /status`  | one JSON object ([`Stats::snapshot`])                         |
//! | `GET /metrics` | the Prometheus text format ([`super::metrics`])               |
//! | `GET /`        | the dashboard, one self-contained page ([`super::dashboard`]) |
//!
//! Every response closes its connection. The server must never let a client stall
//! the VMM or the endpoint itself, so each request is bounded: its head must arrive
//! whole within [`HEAD_DEADLINE`] (a slow client gets 408) and fit [`MAX_HEAD`]
//! bytes (431); at most [`MAX_CLIENTS`] are served at once (the next get 503 at
//! once, from the accepting thread, which never reads). Anything but `GET` (or
//! `HEAD`) is 405, an unknown path 404, a head that is not HTTP/1.x 400.
use super::status::Stats;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most bytes a request head (request line and headers) may take.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// How long writing a response may take (a client that does not read is dropped).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many clients are served at once.
pub const MAX_CLIENTS: usize = 8;

/// What can go wrong reading a status endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not IP:PORT (give the address passed to --status)")]
    BadAddress(String),
    #[error("cannot reach it: {0} (is an ftvmm running there with --status?)")]
    Io(#[from] std::io::Error),
    #[error("it answered {0:?}, which is not HTTP (an ftvmm older than its client? use a matching ftvmm)")]
    NotHttp(String),
    #[error("it answered {status} to {path}: {body}")]
    Status { path: String, status: u16, body: String },
}

/// Serves `stats` on `addr` (HTTP) from a thread of its own; returns the address bound.
pub fn serve(addr: &str, stats: Arc<Stats>) -> std::io::Result<SocketAddr> {
    let listener = super::bind::listen(addr, super::bind::ADDR_IN_USE_GRACE)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("status".into()).spawn(move || accept_loop(listener, stats))?;
    Ok(bound)
}

fn accept_loop(listener: TcpListener, stats: Arc<Stats>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            // A fresh socket's send buffer takes this whole; this thread never waits on a client.
            let _ = conn.set_nonblocking(true);
            let _ = respond(&mut conn, 503, "text/plain", b"too many status clients at once; retry\n", false);
            continue;
        }
        let (stats, busy2) = (stats.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("status-client".into()).spawn(move || {
            serve_one(&mut conn, &stats);
            busy2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A parsed request line: method and path (without its query).
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
}

/// Why a request head was refused: the status code and the reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub u16, pub &'static str);

/// Reads a request head from `conn` within [`HEAD_DEADLINE`] and [`MAX_HEAD`] bytes.
fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, Refusal> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Err(Refusal(408, "the request head did not arrive in time"));
        }
        match conn.read(&mut buf) {
            Ok(0) => return Err(Refusal(400, "the connection closed before the request head ended")),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Refusal(408, "the request head did not arrive in time"));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(Refusal(400, "the connection failed")),
        }
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 > MAX_HEAD {
                return Err(Refusal(431, "the request head is too large"));
            }
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(Refusal(431, "the request head is too large"));
        }
    }
}

/// Parses a request head (without its final blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| Refusal(400, "the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal(400, "the request line is not METHOD PATH VERSION"));
    };
    if !version.starts_with("HTTP/1.") || version.len() != 8 {
        return Err(Refusal(400, "not an HTTP/1.x request"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return Err(Refusal(400, "the request line is malformed"));
    }
    if lines.any(|h| !h.contains(':')) {
        return Err(Refusal(400, "a header line has no colon"));
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Request { method: method.to_string(), path })
}

fn serve_one(conn: &mut TcpStream, stats: &Stats) {
    let request = read_head(conn).and_then(|h| parse_head(&h));
    let head_only = matches!(&request, Ok(r) if r.method == "HEAD");
    let _ = match request {
        Err(Refusal(code, why)) => respond(conn, code, "text/plain", format!("{why}\n").as_bytes(), false),
        Ok(r) if r.method != "GET" && r.method != "HEAD" => {
            respond(conn, 405, "text/plain", b"only GET is served here\n", false)
        }
        Ok(r) => match r.path.as_str() {
            "/status" => {
                respond(conn, 200, "application/json", format!("{}\n", stats.snapshot()).as_bytes(), head_only)
            }
            "/metrics" => {
                let body = super::metrics::render(stats);
                respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body.as_bytes(), head_only)
            }
            "/" => respond(conn, 200, "text/html; charset=utf-8", super::dashboard::PAGE.as_bytes(), head_only),
            _ => respond(conn, 404, "text/plain", b"not found: try /, /status or /metrics\n", false),
        },
    };
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(conn: &mut TcpStream, code: u16, content_type: &str, body: &[u8], head_only: bool) -> std::io::Result<()> {
    let allow = if code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         {allow}Connection: close\r\n\r\n",
        reason(code),
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    conn.write_all(&out)?;
    conn.flush()
}

/// `ftvmm status ADDR`: fetches `path` (`/status`, `/metrics`) and returns its body.
pub fn fetch(addr: &str, path: &str, timeout: Duration) -> Result<String, HttpError> {
    let sock = addr.parse().map_err(|_| HttpError::BadAddress(addr.to_string()))?;
    let mut conn = TcpStream::connect_timeout(&sock, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = Vec::new();
    conn.take(4 << 20).read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(HttpError::NotHttp(text.chars().take(80).collect()));
    };
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HttpError::NotHttp(head.chars().take(80).collect()))?;
    if status != 200 {
        return Err(HttpError::Status { path: path.to_string(), status, body: body.trim().to_string() });
    }
    Ok(body.trim_end().to_string())
}

#[cfg(test)]
mod tests;
