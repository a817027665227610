//! Side-by-side comparison with a real `redis-server`: the same script of commands goes
//! to Redis and to our server, and every reply must be byte-identical.
//!
//! Shared (through `#[path]`) by `resp-kv/tests/redis_compat.rs`, which runs `resp-kv`
//! in-process, and `tests/tests/redis_compat.rs`, which runs the real guest in a VM.
//!
//! Script lines are commands in redis-cli's inline syntax ("double quotes" with `\xHH`
//! escapes, 'single quotes'); `#` starts a comment line. A line may start with
//! directives:
//! - `@conn N` — use connection N (0..8) from now on; WATCH tests need two clients;
//! - `@sorted` — the reply is an array whose order is not defined (KEYS): compare it
//!   sorted;
//! - `@scan` — the command is `SCAN 0 ...`: run the whole iteration on both sides and
//!   compare the sets of keys returned (cursors and page sizes are implementation
//!   details);
//! - `@approx` — an integer reply that depends on the clock (PTTL): equal within 250;
//! - `@type` — only the kind of reply must agree (RANDOMKEY: which key is drawn is
//!   random in Redis, deterministic here);
//! - `@unix` — the command uses Unix time (EXPIREAT, PXAT, EXPIRETIME): skipped when the
//!   server under test has a guest clock that does not start at the Unix epoch;
//! - `@sleep MS` (alone on its line) — wait, so TTLs run out.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Something that answers RESP commands on numbered connections.
pub trait Endpoint {
    /// Send `args` on connection `conn` and return the raw bytes of its one reply.
    fn call(&mut self, conn: usize, args: &[Vec<u8>]) -> Vec<u8>;
}

/// Encode a command as a RESP array of bulk strings.
pub fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Read exactly one RESP2 reply (nested arrays included) and return its bytes.
pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let n = || -> i64 { String::from_utf8_lossy(&line[1..line.len().saturating_sub(2)]).parse().unwrap_or(-1) };
    match line[0] {
        b'$' if n() >= 0 => {
            let mut body = vec![0u8; n() as usize + 2];
            r.read_exact(&mut body)?;
            line.extend_from_slice(&body);
        }
        b'*' if n() > 0 => {
            for _ in 0..n() {
                let element = read_reply(r)?;
                line.extend_from_slice(&element);
            }
        }
        _ => {}
    }
    Ok(line)
}

/// A RESP server over TCP, with lazily opened connections.
pub struct Tcp {
    addr: String,
    conns: Vec<Option<BufReader<TcpStream>>>,
}

impl Tcp {
    pub fn new(addr: &str) -> Self {
        Tcp { addr: addr.to_string(), conns: (0..8).map(|_| None).collect() }
    }
}

impl Endpoint for Tcp {
    fn call(&mut self, conn: usize, args: &[Vec<u8>]) -> Vec<u8> {
        let addr = self.addr.clone();
        let c = self.conns[conn].get_or_insert_with(|| {
            let s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            s.set_nodelay(true).expect("nodelay");
            BufReader::new(s)
        });
        c.get_mut().write_all(&encode(args)).expect("send");
        read_reply(c).unwrap_or_else(|e| panic!("{addr}: no reply to {:?}: {e}", show(args)))
    }
}

/// Split an inline command line as redis-cli does (quotes, `\xHH`).
pub fn split(line: &str) -> Vec<Vec<u8>> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let mut arg = Vec::new();
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
                        let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex");
                        arg.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                        i += 4;
                    } else if bytes[i] == b'\\' {
                        arg.push(match bytes[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                        i += 2;
                    } else {
                        arg.push(bytes[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    arg.push(bytes[i]);
                    i += 1;
                }
                i += 1;
            }
            _ => {
                while i < bytes.len() && bytes[i] != b' ' {
                    arg.push(bytes[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    args
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

/// The elements of a flat array reply, each as its raw bytes (for `@sorted`).
fn elements(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut r = BufReader::new(reply);
    let mut header = Vec::new();
    r.read_until(b'\n', &mut header).expect("header");
    let mut items = Vec::new();
    while let Ok(item) = read_reply(&mut r) {
        items.push(item);
    }
    items.sort();
    items
}

/// Run a full SCAN iteration from `first` (`SCAN 0 ...`) and collect the keys.
fn scan_all(e: &mut dyn Endpoint, conn: usize, first: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut args = first.to_vec();
    let mut keys = Vec::new();
    for _ in 0..100_000 {
        let reply = e.call(conn, &args);
        let mut r = BufReader::new(&reply[..]);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).expect("array");
        assert_eq!(line, b"*2\r\n", "SCAN reply {:?}", String::from_utf8_lossy(&reply));
        let cursor = read_reply(&mut r).expect("cursor");
        let cursor = String::from_utf8_lossy(&cursor).lines().nth(1).unwrap_or("0").to_string();
        let mut page = Vec::new();
        r.read_to_end(&mut page).expect("page");
        keys.extend(elements(&page));
        if cursor == "0" {
            keys.sort();
            keys.dedup();
            return keys;
        }
        args[1] = cursor.into_bytes();
    }
    panic!("SCAN did not finish");
}

/// What a script run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Commands whose replies were compared.
    pub compared: usize,
    /// `command: redis said X, we said Y` for every difference.
    pub differences: Vec<String>,
}

/// Run `script` against `redis` and `ours`; `unix_clock`: whether `ours` measures
/// time from the Unix epoch (if not, `@unix` lines are skipped).
pub fn run(script: &str, redis: &mut dyn Endpoint, ours: &mut dyn Endpoint, unix_clock: bool) -> Outcome {
    let mut outcome = Outcome::default();
    let mut conn = 0usize;
    for (number, raw) in script.lines().enumerate() {
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (mut sorted, mut scan, mut approx, mut kind_only, mut unix) = (false, false, false, false, false);
        loop {
            if let Some(rest) = line.strip_prefix("@conn ") {
                let (n, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                conn = n.parse().expect("@conn N");
                line = rest.trim();
            } else if let Some(ms) = line.strip_prefix("@sleep ") {
                std::thread::sleep(Duration::from_millis(ms.trim().parse().expect("@sleep MS")));
                line = "";
            } else if let Some(rest) = line.strip_prefix("@sorted ") {
                (sorted, line) = (true, rest.trim());
            } else if let Some(rest) = line.strip_prefix("@scan ") {
                (scan, line) = (true, rest.trim());
            } else if let Some(rest) = line.strip_prefix("@approx ") {
                (approx, line) = (true, rest.trim());
            } else if let Some(rest) = line.strip_prefix("@type ") {
                (kind_only, line) = (true, rest.trim());
            } else if let Some(rest) = line.strip_prefix("@unix ") {
                (unix, line) = (true, rest.trim());
            } else {
                break;
            }
        }
        if line.is_empty() || unix && !unix_clock {
            continue;
        }
        let args = split(line);
        let (a, b) = if scan {
            let a = scan_all(redis, conn, &args).concat();
            let b = scan_all(ours, conn, &args).concat();
            (a, b)
        } else {
            (redis.call(conn, &args), ours.call(conn, &args))
        };
        outcome.compared += 1;
        let same = if sorted {
            elements(&a) == elements(&b) && a.first() == b.first()
        } else if approx {
            let int = |r: &[u8]| String::from_utf8_lossy(r).trim_start_matches(':').trim().parse::<i64>().ok();
            match (int(&a), int(&b)) {
                (Some(x), Some(y)) => (x - y).abs() <= 250 && (x >= 0) == (y >= 0),
                _ => a == b,
            }
        } else if kind_only {
            a.first() == b.first()
        } else {
            a == b
        };
        if !same {
            outcome.differences.push(format!(
                "line {}, [conn {conn}] {line}\n    redis: {:?}\n    ours:  {:?}",
                number + 1,
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            ));
        }
    }
    outcome
}
