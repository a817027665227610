//! The guest's key-value server under oversized requests and too many connections:
//! every limit is crossed by real clients over TCP, and the server keeps serving.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::vm::{in_netns, VmProcess};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const GUEST: &str = "10.77.0.10/24";
/// The documented value limit (`resp_kv::MAX_VALUE_BYTES`, README "Limits").
const MAX_VALUE: usize = 4 * 1024 * 1024;
/// The documented connection limit (INFO `maxclients`); the pool holds 64 more sockets,
/// listening ones, which take connections too until all are used.
const MAX_CLIENTS: usize = 448;
const POOL: usize = 512;

fn boot_server(topo: &Topology) -> VmProcess {
    let args = ["run", "--tap", "tap0", "--guest-ip", GUEST, "--gateway", Topology::HOST_A_IP];
    let mut vm = VmProcess::spawn(topo, "host-a", &args);
    vm.wait_for_line("kv-server: listening", Duration::from_secs(10));
    vm
}

fn guest() -> SocketAddr {
    SocketAddr::from(([10, 77, 0, 10], 6379))
}

fn open() -> TcpStream {
    let s = TcpStream::connect_timeout(&guest(), Duration::from_secs(5)).expect("connect to the guest");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s
}

/// One request, its whole reply read as a RESP bulk/line; returns the first line and
/// the bulk body (if any).
fn call(s: &mut TcpStream, request: &[u8]) -> (String, Vec<u8>) {
    s.write_all(request).expect("send");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("reply line");
    let mut body = Vec::new();
    if let Some(len) = line.strip_prefix('$').and_then(|n| n.trim_end().parse::<usize>().ok()) {
        body.resize(len + 2, 0);
        r.read_exact(&mut body).expect("bulk body");
        body.truncate(len);
    }
    (line.trim_end().to_owned(), body)
}

fn set_request(key: &str, len: usize) -> Vec<u8> {
    let mut req = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${len}\r\n", key.len()).into_bytes();
    req.extend(vec![b'v'; len]);
    req.extend_from_slice(b"\r\n");
    req
}

fn info_field(s: &mut TcpStream, name: &str) -> String {
    let (_, body) = call(s, b"INFO\r\n");
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_owned))
        .unwrap_or_else(|| panic!("INFO has no {name}: {text}"))
}

#[test]
fn a_value_at_the_limit_is_stored_and_one_byte_over_gets_an_error_and_a_closed_connection() {
    let topo = Topology::up();
    let _vm = boot_server(&topo);
    let (under, strlen, got_len, over, info_limit, pong) = in_netns(&topo, "client", || {
        let mut c = open();
        let (under, _) = call(&mut c, &set_request("big", MAX_VALUE));
        let (strlen, _) = call(&mut c, b"STRLEN big\r\n");
        let (_, value) = call(&mut c, b"GET big\r\n");
        let info_limit = info_field(&mut c, "proto_max_bulk_len");
        // One byte over: the client writes the whole request (the server reads and drops
        // it), then reads the error and the end of the stream.
        let mut bad = open();
        let started = Instant::now();
        bad.write_all(&set_request("big2", MAX_VALUE + 1)).expect("the oversized request is read, not left hanging");
        let mut reply = Vec::new();
        bad.read_to_end(&mut reply).expect("the server closes the connection");
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
        let (pong, _) = call(&mut c, b"PING\r\n");
        (under, strlen, value.len(), String::from_utf8_lossy(&reply).into_owned(), info_limit, pong)
    });
    assert_eq!(under, "+OK");
    assert_eq!(strlen, format!(":{MAX_VALUE}"));
    assert_eq!(got_len, MAX_VALUE);
    assert_eq!(over, "-ERR Protocol error: invalid bulk length\r\n");
    assert_eq!(info_limit.trim(), MAX_VALUE.to_string());
    assert_eq!(pong, "+PONG");
}

#[test]
fn past_the_connection_limit_clients_are_refused_at_once_and_idle_ones_make_room() {
    let topo = Topology::up();
    let _vm = boot_server(&topo);
    in_netns(&topo, "client", || {
        let mut held = Vec::new();
        let refused_after = loop {
            match TcpStream::connect_timeout(&guest(), Duration::from_secs(5)) {
                Ok(s) => held.push(s),
                Err(e) => break (held.len(), e),
            }
            assert!(held.len() <= POOL, "more connections than the pool has sockets");
        };
        assert!(
            refused_after.0 >= MAX_CLIENTS,
            "refused after only {} connections: {}",
            refused_after.0,
            refused_after.1
        );
        assert_eq!(refused_after.1.kind(), std::io::ErrorKind::ConnectionRefused, "{}", refused_after.1);
        // Refused at once, every time, while the pool is full.
        let started = Instant::now();
        for _ in 0..20 {
            assert!(TcpStream::connect_timeout(&guest(), Duration::from_secs(5)).is_err());
        }
        assert!(started.elapsed() < Duration::from_secs(2), "refusals took {:?}", started.elapsed());
        // Once connections have been idle for 5 s, the longest idle are reset to make room.
        std::thread::sleep(Duration::from_secs(6));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut fresh = loop {
            match TcpStream::connect_timeout(&guest(), Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) => assert!(Instant::now() < deadline, "no room made for a new client: {e}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        fresh.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let reaped: u64 = info_field(&mut fresh, "ftvmm_clients_reaped_idle").trim().parse().expect("a number");
        assert!(reaped >= 1, "INFO counts the reaped connections");
        assert_eq!(info_field(&mut fresh, "maxclients").trim(), MAX_CLIENTS.to_string());
        // The oldest held connection was among those reset.
        held[0].set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 16];
        let oldest = held[0].write_all(b"PING\r\n").and_then(|_| held[0].read(&mut buf));
        assert!(matches!(oldest, Ok(0) | Err(_)), "the longest idle connection was reset: {oldest:?}");
    });
}

#[test]
fn ten_thousand_connection_attempts_in_a_burst_leave_the_server_serving() {
    let topo = Topology::up();
    let _vm = boot_server(&topo);
    let (connected, pong) = in_netns(&topo, "client", || {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut ok = 0usize;
                    for _ in 0..625 {
                        if TcpStream::connect_timeout(&guest(), Duration::from_secs(3)).is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let connected: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
        let mut c = open();
        let (set, _) = call(&mut c, b"SET after-burst yes\r\n");
        assert_eq!(set, "+OK");
        let (pong, _) = call(&mut c, b"PING\r\n");
        (connected, pong)
    });
    eprintln!("{connected} of 10000 burst connections were accepted");
    assert!(connected > 0);
    assert_eq!(pong, "+PONG");
}

#[test]
fn a_client_whose_host_vanished_is_reaped_by_keepalive() {
    let topo = Topology::up();
    let _vm = boot_server(&topo);
    // The watcher sits on host-a (it reaches the guest over the bridge); the vanishing
    // client is in the client namespace, whose uplink goes down without a FIN or RST.
    let mut watcher = in_netns(&topo, "host-a", open);
    let _vanishing = in_netns(&topo, "client", || {
        let mut s = open();
        assert_eq!(call(&mut s, b"PING\r\n").0, "+PONG");
        s
    });
    let clients = |w: &mut TcpStream| info_field(w, "connected_clients").trim().parse::<u64>().expect("a number");
    assert_eq!(clients(&mut watcher), 2);
    topo.link("client", false);
    let started = Instant::now();
    // The watcher itself stays active, so only the silent client can time out.
    while clients(&mut watcher) != 1 {
        assert!(started.elapsed() < Duration::from_secs(45), "the dead client was not reaped");
        std::thread::sleep(Duration::from_secs(1));
    }
    let took = started.elapsed();
    topo.link("client", true);
    eprintln!("a vanished client was reaped after {took:?}");
    assert!(took >= Duration::from_secs(10), "reaped too early ({took:?}): an idle live client would be too");
}

#[test]
fn large_requests_in_parallel_past_the_client_memory_budget_close_one_with_an_error() {
    let topo = Topology::up();
    let _vm = boot_server(&topo);
    let (replies, pong) = in_netns(&topo, "client", || {
        // Four requests of almost 4 MiB each, all unfinished: 15.6 MiB of input buffers
        // against the 12 MiB budget for all clients.
        let mut conns: Vec<TcpStream> = (0..4).map(|_| open()).collect();
        for c in conns.iter_mut() {
            let req = set_request("k", MAX_VALUE - 16);
            c.write_all(&req[..req.len() - 100]).expect("send most of a large request");
        }
        let replies: Vec<String> = conns
            .iter_mut()
            .map(|c| {
                c.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
                let mut reply = Vec::new();
                let _ = c.read_to_end(&mut reply);
                String::from_utf8_lossy(&reply).into_owned()
            })
            .collect();
        let mut fresh = open();
        (replies, call(&mut fresh, b"PING\r\n").0)
    });
    let refused =
        replies.iter().filter(|r| r.starts_with("-ERR the server's memory for client buffers is full")).count();
    assert!(refused >= 1, "replies: {replies:?}");
    assert!(refused < 4, "every large request was refused: {replies:?}");
    assert_eq!(pong, "+PONG");
}

#[test]
fn status_carries_no_keys_or_values() {
    let topo = Topology::up();
    let args = ["run", "--tap", "tap0", "--guest-ip", GUEST, "--status", ftvmm_tests::status::STATUS];
    let mut vm = VmProcess::spawn(&topo, "host-a", &args);
    vm.wait_for_line("kv-server: listening", Duration::from_secs(10));
    in_netns(&topo, "client", || {
        let mut c = open();
        assert_eq!(call(&mut c, b"SET secret-key-7f3a hunter2-value-91c4\r\n").0, "+OK");
    });
    let json = ftvmm_tests::status::fetch(&topo, "host-a").expect("status answers");
    assert!(json.contains("\"role\""), "{json}");
    for secret in ["secret-key-7f3a", "hunter2-value-91c4", "hunter2"] {
        assert!(!json.contains(secret), "status leaks {secret}: {json}");
    }
}
