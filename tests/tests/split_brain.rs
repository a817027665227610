//! Partitions with an arbiter: when the logging link is cut with both VMMs alive,
//! exactly one side goes on serving and the other halts — every time.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial};
use ftvmm_tests::vm::in_netns;
use ftvmm_tests::TempDir;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const GUEST: &str = "10.77.0.10:6379";
const PARTITIONS: usize = 20;
const STOOD_DOWN: i32 = 7;

fn incr(key: &str) -> Result<i64, String> {
    let mut s =
        TcpStream::connect_timeout(&GUEST.parse().expect("addr"), Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("INCR {key}\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| e.to_string())?;
    line.trim_end().strip_prefix(':').and_then(|v| v.parse().ok()).ok_or(format!("reply {line:?}"))
}

/// One partition: returns which side survived ("primary" or "backup").
fn partition_once(topo: &Topology, arbiter: &str) -> &'static str {
    let mut p = pair::start(topo, &["--arbiter", arbiter], None);
    let before = in_netns(topo, "client", || incr("p")).expect("INCR before the partition");

    topo.link("host-a", false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut primary_exit, mut backup_exit) = (None, None);
    while Instant::now() < deadline && primary_exit.is_none() && backup_exit.is_none() {
        primary_exit = p.primary.wait(Duration::from_millis(50));
        backup_exit = p.backup.wait(Duration::from_millis(50));
    }
    // Give a wrongly surviving second side time to show itself.
    std::thread::sleep(Duration::from_millis(700));
    primary_exit = primary_exit.or_else(|| p.primary.wait(Duration::from_millis(1)));
    backup_exit = backup_exit.or_else(|| p.backup.wait(Duration::from_millis(1)));
    topo.link("host-a", true);

    let survivor = match (primary_exit, backup_exit) {
        (Some(s), None) => {
            assert_eq!(s.code(), Some(STOOD_DOWN), "the primary must halt, not crash: {}", p.primary.stderr());
            assert!(p.backup.stderr().contains("GOING LIVE"), "{}", p.backup.stderr());
            "backup"
        }
        (None, Some(s)) => {
            assert_eq!(s.code(), Some(STOOD_DOWN), "the backup must halt, not crash: {}", p.backup.stderr());
            "primary"
        }
        (None, None) => panic!(
            "SPLIT BRAIN: both sides still run after the partition\nprimary: {}\nbackup: {}",
            p.primary.stderr(),
            p.backup.stderr()
        ),
        (Some(a), Some(b)) => {
            panic!("both sides stopped ({a}, {b}): nobody serves\n{}\n{}", p.primary.stderr(), p.backup.stderr())
        }
    };
    let after = in_netns(topo, "client", || incr("p")).unwrap_or_else(|e| panic!("the {survivor} must serve: {e}"));
    assert_eq!(after, before + 1, "the survivor ({survivor}) continues the same state");
    p.primary.kill9();
    p.backup.kill9();
    survivor
}

#[test]
fn twenty_partitions_with_a_file_arbiter_never_leave_two_sides_serving() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("arbiter");
    let mut survivors = Vec::new();
    for i in 0..PARTITIONS {
        let arbiter = format!("file:{}", dir.path(&format!("cycle{i}")).display());
        survivors.push(partition_once(&topo, &arbiter));
    }
    println!("survivors over {PARTITIONS} partitions (file arbiter): {survivors:?}");
}

/// A running etcd; killed, and its data removed, on drop.
struct Etcd {
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
fn start_etcd(topo: &Topology) -> Etcd {
    ftvmm_tests::require_tool("etcd");
    ftvmm_tests::require_tool("etcdctl");
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

#[test]
fn twenty_partitions_with_an_etcd_arbiter_never_leave_two_sides_serving() {
    let _turn = serial();
    let topo = Topology::up();
    let _etcd = start_etcd(&topo);
    let url = format!("http://{}:2379", Topology::CLIENT_IP);
    let mut survivors = Vec::new();
    for _ in 0..PARTITIONS {
        let cleared =
            topo.command("client", "etcdctl").args(["--endpoints", &url, "del", "--prefix", "/ftvmm/"]).output();
        assert!(cleared.is_ok_and(|o| o.status.success()), "clearing the arbiter between cycles");
        survivors.push(partition_once(&topo, &format!("etcd:{url}")));
    }
    println!("survivors over {PARTITIONS} partitions (etcd arbiter): {survivors:?}");
}

#[test]
fn a_restarted_old_primary_with_a_stale_epoch_refuses_to_serve() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("stale");
    let arbiter = format!("file:{}", dir.path("arb").display());
    let mut p = pair::start(&topo, &["--arbiter", &arbiter], None);
    in_netns(&topo, "client", || incr("s")).expect("INCR");
    topo.kill_all("host-a");
    p.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));

    let out = topo
        .command("host-a", ftvmm_tests::ftvmm_bin())
        .args(["primary", "--listen", pair::PRIMARY_LISTEN, "--tap", "tap0", "--guest-ip", pair::GUEST_CIDR])
        .args(["--arbiter", &arbiter])
        .env("FTVMM_TLS_DIR", &ftvmm_tests::tls_dirs()[0])
        .env("FTVMM_LOG", "warn")
        .output()
        .expect("run the old primary again");

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(STOOD_DOWN), "{err}");
    assert!(err.contains("stale"), "{err}");
    assert_eq!(in_netns(&topo, "client", || incr("s")), Ok(2), "the live backup keeps serving, alone");
}
