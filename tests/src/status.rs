//! Reading a running VMM's `--status` from inside its host's namespace.
use crate::netns::Topology;
use std::time::{Duration, Instant};

/// Where the tests' VMMs serve status, on each host's own loopback.
pub const STATUS: &str = "127.0.0.1:7100";

/// One status snapshot of the VMM in `host` (`ftvmm status`), or `None` if none answered.
pub fn fetch(topo: &Topology, host: &str) -> Option<String> {
    let out = topo.command(host, crate::ftvmm_bin()).args(["status", STATUS]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A numeric field of a status snapshot.
pub fn field(json: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\":");
    let rest = &json[json.find(&key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A boolean field of a status snapshot.
pub fn flag(json: &str, name: &str) -> Option<bool> {
    let key = format!("\"{name}\":");
    let rest = &json[json.find(&key)? + key.len()..];
    Some(rest.starts_with("true"))
}

/// Polls the status of `host` until `ok` holds; returns the snapshot that passed and
/// how long it took, or panics with the last snapshot.
pub fn wait_until(topo: &Topology, host: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> (String, Duration) {
    wait_until_or(topo, host, limit, ok, String::new)
}

/// [`wait_until`], and on failure the panic message adds `context()` (a VMM's log, say).
pub fn wait_until_or(
    topo: &Topology,
    host: &str,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
    context: impl Fn() -> String,
) -> (String, Duration) {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < limit {
        if let Some(s) = fetch(topo, host) {
            if ok(&s) {
                return (s, t0.elapsed());
            }
            last = s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("status of {host} did not reach the condition within {limit:?}; last: {last}\n{}", context());
}
