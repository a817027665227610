//! An etcd for the tests, in the client's namespace (`http://CLIENT_IP:2379`):
//! reachable from every host, cut off from host-a when host-a is partitioned.
use crate::netns::Topology;
use crate::TempDir;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Its client URL.
pub fn url() -> String {
    format!("http://{}:2379", Topology::CLIENT_IP)
}

/// A running etcd; killed, and its data removed, on drop.
pub struct Etcd {
    child: Child,
    data: TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long etcd may take to answer `endpoint health` after a (re)start.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15);

fn spawn(topo: &Topology, data: &TempDir) -> Child {
    let url = url();
    // Appended, so a restart keeps the log of the run before it.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.path("etcd.log"));
    topo.command("client", "etcd")
        .args(["--data-dir", &data.path("data").display().to_string()])
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .stdout(Stdio::null())
        // etcd logs to stderr; kept for the error below, should it never answer.
        .stderr(log.expect("create etcd.log"))
        .spawn()
        .expect("spawn ip netns exec ... etcd")
}

/// Waits until etcd answers; else kills it and says why, with the end of its log.
fn healthy(topo: &Topology, child: &mut Child, data: &TempDir) -> Result<(), String> {
    let deadline = Instant::now() + HEALTHY_WITHIN;
    while Instant::now() < deadline {
        let ok = topo.command("client", "etcdctl").args(["--endpoints", &url(), "endpoint", "health"]).output();
        if ok.is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(data.path("etcd.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
    let state = exited.map_or("still running".to_string(), |s| format!("exited: {s}"));
    Err(format!(
        "etcd did not become healthy within {HEALTHY_WITHIN:?} ({state}); the end of its log:\n{}",
        tail.join("\n")
    ))
}

/// etcd in the client's namespace: reachable from both hosts, cut off from host-a
/// when host-a is partitioned (as an arbiter on the far side of a partition is).
pub fn start(topo: &Topology) -> Etcd {
    crate::require_tool("etcd");
    crate::require_tool("etcdctl");
    let data = TempDir::new("etcd");
    let mut child = spawn(topo, &data);
    if let Err(e) = healthy(topo, &mut child, &data) {
        panic!("{e}");
    }
    Etcd { child, data }
}

impl Etcd {
    /// `kill -9` of etcd, as when its host dies: what it had committed is on its disk.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same data directory and waits until it answers (a
    /// restart of the witness's host: it comes back with every record it committed).
    pub fn restart(&mut self, topo: &Topology) -> Result<(), String> {
        self.kill();
        self.child = spawn(topo, &self.data);
        healthy(topo, &mut self.child, &self.data)
    }
}
