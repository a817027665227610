//! `ftvmm-relay` carries bytes unchanged, adds the delay it is asked for to each direction, and
//! corrupts or truncates the down stream on request. Loopback only, ephemeral ports.
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running relay, killed when dropped.
struct Relay {
    child: Child,
    addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a relay on a free loopback port in front of `upstream`, and waits until it listens.
fn start_relay(upstream: SocketAddr, extra: &[&str]) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ftvmm-relay"))
        .args(["--listen", "127.0.0.1:0", "--connect", &upstream.to_string()])
        .args(extra)
        .env("FTVMM_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ftvmm-relay");
    let mut stdout = BufReader::new(child.stdout.take().expect("relay stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the relay's listening line");
    let mut relay = Relay { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)), _stdout: stdout };
    relay.addr = line
        .strip_prefix("relay listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected listening line: {line:?}"));
    relay
}

/// A relay between two sockets the test holds: `client` is the --listen side, `server` the --connect side.
struct Pair {
    client: TcpStream,
    server: TcpStream,
    _relay: Relay,
}

fn relayed_pair(extra: &[&str]) -> Pair {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let relay = start_relay(upstream.local_addr().unwrap(), extra);
    let client = TcpStream::connect(relay.addr).expect("connect to the relay");
    let (server, _) = upstream.accept().expect("relay connects upstream");
    for s in [&client, &server] {
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    Pair { client, server, _relay: relay }
}

/// Time for one byte from `a` to `b` and one back.
fn round_trip(a: &mut TcpStream, b: &mut TcpStream) -> Duration {
    let start = Instant::now();
    a.write_all(b"p").unwrap();
    let mut byte = [0u8];
    b.read_exact(&mut byte).unwrap();
    b.write_all(b"q").unwrap();
    a.read_exact(&mut byte).unwrap();
    start.elapsed()
}

/// Time for one byte from `a` to `b`.
fn one_way(a: &mut TcpStream, b: &mut TcpStream) -> Duration {
    let start = Instant::now();
    a.write_all(b"o").unwrap();
    b.read_exact(&mut [0u8]).unwrap();
    start.elapsed()
}

/// Everything that arrives on `s` until it has been quiet for `quiet`.
fn read_until_quiet(s: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return got,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn bytes_pass_both_ways_unchanged_and_end_of_stream_propagates() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&[]);
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match server.read(&mut buf).expect("echo read") {
                0 => return,
                n => server.write_all(&buf[..n]).expect("echo write"),
            }
        }
    });
    let sent = pattern(512 * 1024);

    client.write_all(&sent).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();

    echo.join().unwrap();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "echoed bytes differ");
}

#[test]
fn down_delay_makes_a_round_trip_take_at_least_that_long() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--delay-down-ms", "200"]);

    let rtt = round_trip(&mut client, &mut server);

    assert!(rtt >= Duration::from_millis(200) && rtt < Duration::from_secs(1), "{rtt:?}");
}

#[test]
fn up_delay_makes_a_round_trip_take_at_least_that_long() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--delay-up-ms", "200"]);

    let rtt = round_trip(&mut server, &mut client);

    assert!(rtt >= Duration::from_millis(200) && rtt < Duration::from_secs(1), "{rtt:?}");
}

#[test]
fn specific_delay_overrides_the_common_one() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--delay-ms", "200", "--delay-up-ms", "0"]);

    let up = one_way(&mut client, &mut server);
    let down = one_way(&mut server, &mut client);

    assert!(up < Duration::from_millis(150), "up {up:?}");
    assert!(down >= Duration::from_millis(200) && down < Duration::from_secs(1), "down {down:?}");
}

#[test]
fn delay_adds_latency_without_limiting_throughput() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--delay-down-ms", "200"]);
    let start = Instant::now();

    for i in 0..10u8 {
        server.write_all(&[i]).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    let mut got = [0u8; 10];
    client.read_exact(&mut got).unwrap();

    // Ten 200 ms hops in a row would take 2 s; pipelined they take about 200 ms + 10 * 20 ms.
    let elapsed = start.elapsed();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(elapsed >= Duration::from_millis(380) && elapsed < Duration::from_millis(900), "{elapsed:?}");
}

#[test]
fn corrupt_down_after_flips_exactly_that_byte() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--corrupt-down-after", "5"]);
    let sent = pattern(64);

    server.write_all(&sent[..3]).unwrap();
    thread::sleep(Duration::from_millis(20));
    server.write_all(&sent[3..]).unwrap();
    let mut got = vec![0u8; sent.len()];
    client.read_exact(&mut got).unwrap();

    let mut expected = sent.clone();
    expected[5] ^= 0xff;
    assert_eq!(got, expected);
}

#[test]
fn corruption_leaves_the_up_stream_alone() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--corrupt-down-after", "5"]);
    let sent = pattern(64);

    client.write_all(&sent).unwrap();
    let mut got = vec![0u8; sent.len()];
    server.read_exact(&mut got).unwrap();

    assert_eq!(got, sent);
}

#[test]
fn truncate_down_after_delivers_exactly_that_many_bytes_and_keeps_the_connection_open() {
    let Pair { mut client, mut server, _relay } = relayed_pair(&["--truncate-down-after", "10"]);
    let sent = pattern(100);

    server.write_all(&sent[..4]).unwrap();
    thread::sleep(Duration::from_millis(20));
    server.write_all(&sent[4..]).unwrap();
    let got = read_until_quiet(&mut client, Duration::from_millis(300));
    client.write_all(b"still up").unwrap();
    let mut up = [0u8; 8];
    server.read_exact(&mut up).unwrap();

    assert_eq!(got, &sent[..10]);
    assert_eq!(&up, b"still up");
}

#[test]
fn listening_on_a_taken_port_fails_with_exit_code_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let out = Command::new(env!("CARGO_BIN_EXE_ftvmm-relay"))
        .args(["--listen", &addr, "--connect", &addr])
        .output()
        .expect("spawn ftvmm-relay");

    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn a_bad_address_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ftvmm-relay"))
        .args(["--listen", "nowhere", "--connect", "127.0.0.1:1"])
        .output()
        .expect("spawn ftvmm-relay");

    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
