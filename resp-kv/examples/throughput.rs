//! In-process command throughput of resp-kv (no network, no VM): 200,000 SETs of new
//! keys, 200,000 GETs, 200,000 INCRs of one key, each fed to a connection as one
//! request. `cargo run --release -p resp-kv --example throughput`. Numbers on a shared
//! machine are noisy: compare two builds in the same run, not with other machines.

use resp_kv::{Conn, Limits, ServerInfo, Store};
use std::time::Instant;

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn per_op(requests: &[Vec<u8>], store: &mut Store, conn: &mut Conn) -> f64 {
    let info = ServerInfo::default();
    let mut out = Vec::new();
    let start = Instant::now();
    for r in requests {
        out.clear();
        conn.feed(r, store, 1, &info, &mut out);
    }
    start.elapsed().as_secs_f64() * 1e9 / requests.len() as f64
}

fn main() {
    let n = 200_000;
    let mut store = Store::new(Limits { max_memory_bytes: 1 << 30, ..Limits::default() });
    let mut conn = Conn::new();
    let sets: Vec<_> = (0..n).map(|i| encode(&[b"SET", format!("key:{i}").as_bytes(), b"0123456789abcdef"])).collect();
    let gets: Vec<_> = (0..n).map(|i| encode(&[b"GET", format!("key:{}", (i * 7919) % n).as_bytes()])).collect();
    let incrs: Vec<_> = (0..n).map(|_| encode(&[b"INCR", b"counter"])).collect();
    let set = per_op(&sets, &mut store, &mut conn);
    let get = per_op(&gets, &mut store, &mut conn);
    let incr = per_op(&incrs, &mut store, &mut conn);
    println!("SET {set:.0} ns/op, GET {get:.0} ns/op, INCR {incr:.0} ns/op");
}
