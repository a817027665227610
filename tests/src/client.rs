//! A raw RESP client for the tests: the guest's key-value server, one command at a time.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The guest's server, as the topology places it.
pub const GUEST: &str = "10.77.0.10:6379";

/// Sends an inline command and returns its first reply line, without the CRLF.
pub fn command(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, cmd: &str) -> String {
    stream.write_all(format!("{cmd}\r\n").as_bytes()).expect("send");
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    line.trim_end().to_string()
}

/// A connection to the guest with a reader over it (call from inside the client namespace).
pub fn connect() -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(GUEST).expect("connect to the guest");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

/// `GET key` as an integer, on a fresh connection.
pub fn get_int(key: &str) -> i64 {
    let (mut s, mut r) = connect();
    command(&mut s, &mut r, &format!("GET {key}"));
    let mut value = String::new();
    r.read_line(&mut value).expect("value");
    value.trim_end().parse().expect("an integer value")
}

/// The guest's MAC as the VMMs derive it from its address (52:54:00 and the last three bytes).
pub const GUEST_MAC: &str = "52:54:00:4d:00:0a";

/// What a brand-new client sees, checked from the client's namespace: with its ARP cache
/// emptied, the guest's address resolves to the guest's MAC (ARP is answered) and a new
/// TCP connection gets `+PONG`. Old connections that still work prove less: they skip ARP
/// and the listen path. Returns what went wrong.
pub fn fresh_client_check(topo: &crate::netns::Topology) -> Result<(), String> {
    let flushed = topo.command("client", "ip").args(["neigh", "flush", "all"]).output();
    if !flushed.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!("could not flush the client's ARP cache: {flushed:?}"));
    }
    let pong = crate::vm::in_netns(topo, "client", || {
        let ip = GUEST.split(':').next().unwrap_or_default();
        let addr = std::net::SocketAddr::new(ip.parse().map_err(|e| format!("{e}"))?, 6379);
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut w = s;
        w.write_all(b"PING\r\n").map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| format!("reply: {e}"))?;
        Ok::<String, String>(line.trim_end().to_string())
    })?;
    if pong != "+PONG" {
        return Err(format!("a new connection got {pong:?} to PING"));
    }
    let neigh =
        topo.command("client", "ip").args(["neigh", "show", GUEST.split(':').next().unwrap_or_default()]).output();
    let neigh = neigh.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    if !neigh.contains(GUEST_MAC) {
        return Err(format!("the client's ARP entry for the guest is {neigh:?}, not the guest's MAC"));
    }
    Ok(())
}

/// Freezes every process in `host_ns` (so the request sent next is never read, let
/// alone logged), sends `INCR key` on `s`, lets it reach the hosts, then kills the
/// frozen host. Returns the reply and the time from the kill to it.
pub fn incr_into_a_dying_primary(
    s: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    host_ns: &str,
    key: &str,
) -> (String, Duration) {
    let signal = |sig: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("ip netns pids {host_ns} | xargs -r kill -{sig}")])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} in {host_ns}");
    };
    signal("STOP");
    s.write_all(format!("INCR {key}\r\n").as_bytes()).expect("send");
    std::thread::sleep(Duration::from_millis(30));
    signal("KILL");
    let t0 = Instant::now();
    let mut line = String::new();
    r.read_line(&mut line).expect("reply");
    (line.trim_end().to_string(), t0.elapsed())
}
