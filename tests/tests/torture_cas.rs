//! The clients' compare-and-set switch, against real servers on loopback (no VM):
//! a server that does not know `WATCH` (as the guest today) gets `SET key new NX`;
//! one that does (a real `redis-server`) gets `WATCH`/`GET`/`MULTI`/`SET`/`EXEC`, on
//! any expected value, and the history the clients record there is linearizable with
//! compare-and-sets that won and that failed. So the day the guest answers `WATCH`,
//! the campaign compares on any value without a change.
use ftvmm_tests::history::{Call, Outcome};
use ftvmm_tests::torture::check_history;
use ftvmm_tests::torture::clients::{run_client, CasMode, Shared};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A server that refuses every command as unknown, like a guest without `WATCH`.
fn refusing_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut w = s.try_clone().expect("clone");
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if line.starts_with('*') || line.starts_with('$') {
                    continue;
                }
                let _ = w.write_all(format!("-ERR unknown command '{line}'\r\n").as_bytes());
            }
        }
    });
    addr
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` on a free loopback port, without persistence.
fn redis() -> (Redis, String) {
    ftvmm_tests::require_tool("redis-server");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "redis-server did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Redis(child), addr)
}

#[test]
fn a_server_without_watch_gets_set_nx_and_one_with_it_gets_watch_multi_exec() {
    assert_eq!(CasMode::probe(&refusing_server()), CasMode::SetNx);
    assert_eq!(CasMode::probe("127.0.0.1:9"), CasMode::SetNx, "no server at all: the safe default");
    let (_redis, addr) = redis();
    assert_eq!(CasMode::probe(&addr), CasMode::Watch);
}

#[test]
fn watch_compare_and_sets_on_a_real_redis_make_a_linearizable_history() {
    let (_redis, addr) = redis();
    let shared = Shared::new();
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (addr, s) = (addr.clone(), shared.clone());
            std::thread::spawn(move || run_client(id, &addr, 11, CasMode::Watch, s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    shared.stop.store(true, Ordering::Relaxed);
    let logs: Vec<_> = clients.into_iter().map(|h| h.join().expect("client")).collect();
    let errors: Vec<&String> = logs.iter().flat_map(|l| &l.errors).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let history: Vec<_> = logs.iter().flat_map(|l| l.ops.iter().cloned()).collect();
    let cas = |ok: bool, on_value: bool| {
        history
            .iter()
            .filter(|o| matches!(o.call, Call::Cas(e, _) if e.is_some() == on_value) && o.outcome == Outcome::Cas(ok))
            .count()
    };
    // Compare-and-sets on a value won and failed; so did ones on an absent key.
    assert!(cas(true, true) > 0 && cas(false, true) > 0, "{} won, {} failed", cas(true, true), cas(false, true));
    assert!(cas(true, false) > 0, "a CAS from absent after a GETDEL");
    let mut f = check_history(&history);
    f.whole_at_end = true;
    assert_eq!(f.anomalies(), 0, "{}\n{}", f.summary(), f.reports());
    println!(
        "{} ops ({} EXECs aborted by a concurrent write): {}",
        history.len(),
        logs.iter().map(|l| l.cas_aborted).sum::<u64>(),
        f.summary()
    );
}
