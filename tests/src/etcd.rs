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
    _data: TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd in the client's namespace: reachable from both hosts, cut off from host-a
/// when host-a is partitioned (as an arbiter on the far side of a partition is).
pub fn start(topo: &Topology) -> Etcd {
    crate::require_tool("etcd");
    crate::require_tool("etcdctl");
    let data = TempDir::new("etcd");
    let url = format!("http://{}:2379", Topology::CLIENT_IP);
    let mut child = topo
        .command("client", "etcd")
        .args(["--data-dir", &data.path("data").display().to_string()])
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .stdout(Stdio::null())
        // etcd logs to stderr; kept for the panic below, should it never answer.
        .stderr(std::fs::File::create(data.path("etcd.log")).expect("create etcd.log"))
        .spawn()
        .expect("spawn ip netns exec ... etcd");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let ok = topo.command("client", "etcdctl").args(["--endpoints", &url, "endpoint", "health"]).output();
        if ok.is_ok_and(|o| o.status.success()) {
            return Etcd { child, _data: data };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(data.path("etcd.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
    let state = exited.map_or("still running".to_string(), |s| format!("exited: {s}"));
    panic!("etcd did not become healthy within 15 s ({state}); the end of its log:\n{}", tail.join("\n"));
}
