//! Client load against the guest: connections that INCR one key and count what was acknowledged.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one connection saw.
#[derive(Debug, Default, Clone)]
pub struct ConnReport {
    /// INCRs whose reply arrived (each one is an acknowledged write).
    pub acked: u64,
    /// A request was sent but no reply came before the stop (in flight).
    pub in_flight: bool,
    /// The connection failed (reset, closed, error reply) — never expected.
    pub error: Option<String>,
    /// Replies must increase on every connection (the counter is shared).
    pub last_value: i64,
    /// Longest wait for one reply.
    pub max_gap: Duration,
    /// When that longest wait ended.
    pub max_gap_end: Option<Instant>,
}

/// INCRs `key` over raw RESP on one connection until `stop`; the socket is made
/// by the caller (inside the client namespace).
pub fn incr_until(stream: TcpStream, key: &str, stop: &AtomicBool) -> ConnReport {
    let mut r = ConnReport::default();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let request = format!("*2\r\n$4\r\nINCR\r\n${}\r\n{key}\r\n", key.len());
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if let Err(e) = writer.write_all(request.as_bytes()) {
            r.error = Some(format!("send: {e}"));
            return r;
        }
        r.in_flight = true;
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => r.error = Some("connection closed by the server".into()),
            Ok(_) => match line.trim_end().strip_prefix(':').and_then(|v| v.parse::<i64>().ok()) {
                Some(v) if v > r.last_value => {
                    r.in_flight = false;
                    r.acked += 1;
                    r.last_value = v;
                    let gap = sent.elapsed();
                    if gap > r.max_gap {
                        r.max_gap = gap;
                        r.max_gap_end = Some(Instant::now());
                    }
                }
                _ => r.error = Some(format!("unexpected reply {line:?} after {}", r.last_value)),
            },
            Err(e) => r.error = Some(format!("receive: {e}")),
        }
        if r.error.is_some() {
            return r;
        }
    }
    r
}

/// INCR load running in the client namespace until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<ConnReport>>,
}

impl Load {
    /// Starts `connections` INCR loops on `key` from the client namespace.
    pub fn start(topo: &crate::netns::Topology, key: &str, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, key) = (stop.clone(), key.to_string());
        let handle = crate::vm::spawn_in_netns(topo, "client", move || {
            run_incr_load(crate::client::GUEST, &key, connections, s)
        });
        Load { stop, handle }
    }

    pub fn stop(self) -> Vec<ConnReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("load")
    }
}

/// Every acknowledged INCR is in `final_value`, and at most the ones in flight more;
/// no connection failed.
pub fn assert_exact(reports: &[ConnReport], final_value: i64) {
    for r in reports {
        assert!(r.error.is_none(), "a client connection failed: {r:?}");
    }
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let in_flight = reports.iter().filter(|r| r.in_flight).count() as u64;
    println!("acked {acked}, in flight {in_flight}, final {final_value}");
    assert!(acked > 100, "the load did not run: {acked} acked");
    assert!(final_value as u64 >= acked, "acknowledged writes lost: final {final_value} < acked {acked}");
    assert!(final_value as u64 <= acked + in_flight, "final {final_value} > acked {acked} + in flight {in_flight}");
}

/// Runs `connections` INCR loops on `key` until `stop` is set; returns their reports.
/// Call from a thread inside the client namespace.
pub fn run_incr_load(addr: &str, key: &str, connections: usize, stop: Arc<AtomicBool>) -> Vec<ConnReport> {
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let stream = TcpStream::connect(addr).expect("connect to the guest");
            let _ = stream.set_nodelay(true);
            let (stop, key) = (stop.clone(), key.to_string());
            std::thread::spawn(move || incr_until(stream, &key, &stop))
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("load worker")).collect()
}
