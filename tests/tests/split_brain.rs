//! Partitions with an arbiter: when the logging link is cut with both VMMs alive,
//! exactly one side goes on serving and the other halts — every time.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial};
use ftvmm_tests::vm::in_netns;
use ftvmm_tests::TempDir;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
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
    // One arbiter for every cycle, never cleared: each cycle's pair is a new group.
    let arbiter = format!("file:{}", dir.dir("claims").display());
    let mut survivors = Vec::new();
    for _ in 0..PARTITIONS {
        survivors.push(partition_once(&topo, &arbiter));
    }
    println!("survivors over {PARTITIONS} partitions (file arbiter): {survivors:?}");
}

#[test]
fn twenty_partitions_with_an_etcd_arbiter_never_leave_two_sides_serving() {
    let _turn = serial();
    let topo = Topology::up();
    let _etcd = ftvmm_tests::etcd::start(&topo);
    let url = format!("http://{}:2379", Topology::CLIENT_IP);
    let mut survivors = Vec::new();
    // Never cleared between cycles: each cycle's pair is a new group, with keys of its own.
    for _ in 0..PARTITIONS {
        survivors.push(partition_once(&topo, &format!("etcd:{url}")));
    }
    let keys = topo
        .command("client", "etcdctl")
        .args(["--endpoints", &url, "get", "--prefix", "--keys-only", "/ftvmm/"])
        .output()
        .expect("etcdctl get");
    let keys = String::from_utf8_lossy(&keys.stdout).into_owned();
    let groups: std::collections::BTreeSet<&str> = keys.lines().filter_map(|k| k.split('/').nth(2)).collect();
    assert_eq!(groups.len(), PARTITIONS, "one group per cycle, each with its claim:\n{keys}");
    println!("survivors over {PARTITIONS} partitions (etcd arbiter): {survivors:?}");
}

#[test]
fn a_restarted_old_primary_of_a_named_group_with_a_stale_epoch_refuses_to_serve() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("stale");
    let arbiter = format!("file:{}", dir.dir("arb").display());
    // Named: a primary started without --group-name is a new deployment (a new group),
    // which no old claim blocks (tests/tests/group_name.rs).
    let mut p = pair::start(&topo, &["--arbiter", &arbiter, "--group-name", "kv-prod"], None);
    in_netns(&topo, "client", || incr("s")).expect("INCR");
    topo.kill_all("host-a");
    p.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));

    let out = topo
        .command("host-a", ftvmm_tests::ftvmm_bin())
        .args(["primary", "--listen", pair::PRIMARY_LISTEN, "--tap", "tap0", "--guest-ip", pair::GUEST_CIDR])
        .args(["--arbiter", &arbiter, "--group-name", "kv-prod"])
        // The address check would refuse it first (exit 8: tests/tests/address_check.rs);
        // this is the arbiter's refusal, for hosts that do not share the guest's segment.
        .args(["--address-check-ms", "0"])
        .env("FTVMM_TLS_DIR", &ftvmm_tests::tls_dirs()[0])
        .env("FTVMM_LOG", "warn")
        .output()
        .expect("run the old primary again");

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(STOOD_DOWN), "{err}");
    assert!(err.contains("stale"), "{err}");
    assert_eq!(in_netns(&topo, "client", || incr("s")), Ok(2), "the live backup keeps serving, alone");
}
