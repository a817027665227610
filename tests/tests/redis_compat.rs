//! The real guest against a real `redis-server`, side by side: the scripts of
//! `resp-kv/tests/compat/` go to both over TCP, and every reply must be byte-identical.
//! The guest runs in a VM behind a TAP device; Redis runs on loopback in the client's
//! namespace. (`resp-kv/tests/redis_compat.rs` runs the same scripts against resp-kv
//! in-process; this one proves the guest build, its network path and its tick clock
//! give the same answers.)
//!
//! Lines marked `@unix` are skipped here: the guest's clock counts from its boot, not
//! from the Unix epoch, so absolute times (EXPIREAT, PXAT, EXPIRETIME) differ from
//! Redis' by design (README, "Redis commands").

#[path = "../../resp-kv/tests/compat/harness.rs"]
mod harness;
#[path = "../../resp-kv/tests/compat/redis.rs"]
mod redis;

use ftvmm_tests::netns::Topology;
use ftvmm_tests::vm::{in_netns, VmProcess};
use ftvmm_tests::{ftvmm, ok_digest, path_str, require_tool, TempDir};
use harness::Endpoint;
use std::time::Duration;

const SCRIPTS: [(&str, &str); 4] = [
    ("strings", include_str!("../../resp-kv/tests/compat/strings.txt")),
    ("keyspace", include_str!("../../resp-kv/tests/compat/keyspace.txt")),
    ("transactions", include_str!("../../resp-kv/tests/compat/transactions.txt")),
    ("errors", include_str!("../../resp-kv/tests/compat/errors.txt")),
];

#[test]
fn the_guest_answers_every_script_exactly_as_redis_server_does() {
    require_tool("redis-server");
    let topo = Topology::up();
    let args =
        ["run", "--tap", "tap0", "--guest-ip", "10.77.0.10/24", "--gateway", Topology::HOST_A_IP, "--tick-hz", "250"];
    let mut vm = VmProcess::spawn(&topo, "host-a", &args);
    vm.wait_for_line("kv-server: listening", Duration::from_secs(10));
    let results = in_netns(&topo, "client", || {
        // Spawned from this thread, the server lives in the client's namespace too.
        let server = redis::RedisServer::start();
        SCRIPTS
            .iter()
            .map(|(name, script)| {
                // Fresh connections per script: no WATCH or MULTI state carries over.
                let mut theirs = harness::Tcp::new(&server.addr());
                let mut guest = harness::Tcp::new(&format!("{}:6379", Topology::GUEST_IP));
                (*name, harness::run(script, &mut theirs, &mut guest, false))
            })
            .collect::<Vec<_>>()
    });
    let mut report = String::new();
    for (name, outcome) in &results {
        assert!(outcome.compared > 50, "{name}: only {} commands compared", outcome.compared);
        for d in &outcome.differences {
            report.push_str(&format!("{name}: {d}\n"));
        }
    }
    let compared: usize = results.iter().map(|(_, o)| o.compared).sum();
    assert!(report.is_empty(), "replies that differ from redis-server's (of {compared}):\n{report}");
    eprintln!("{compared} replies byte-identical to redis-server's");
}

fn cmd(c: &mut harness::Tcp, conn: usize, line: &str) -> String {
    String::from_utf8_lossy(&c.call(conn, &harness::split(line))).into_owned()
}

fn used_memory(c: &mut harness::Tcp) -> u64 {
    let info = cmd(c, 0, "INFO memory");
    let line = info.lines().find(|l| l.starts_with("used_memory:")).expect("used_memory in INFO memory");
    line["used_memory:".len()..].trim().parse().expect("a number")
}

/// Keys expire actively on the guest's tick clock, and everything the new commands
/// decide (expiry, RANDOMKEY's draws, SCAN's order, WATCH across connections) is part
/// of the guest's deterministic state: a replay of the recording reaches the same digest.
#[test]
fn expiry_randomkey_scan_and_transactions_replay_to_the_same_digest() {
    let topo = Topology::up();
    let dir = TempDir::new("compat-replay");
    let log = dir.path("compat.ftlog");
    let guest_ip = "10.77.0.10/24";
    let mut vm = VmProcess::spawn(
        &topo,
        "host-a",
        &["record", "--log", path_str(&log), "--tap", "tap0", "--guest-ip", guest_ip],
    );
    vm.wait_for_line("kv-server: listening", Duration::from_secs(10));
    in_netns(&topo, "client", || {
        let mut c = harness::Tcp::new(&format!("{}:6379", Topology::GUEST_IP));
        let baseline = used_memory(&mut c);
        for i in 0..300 {
            cmd(&mut c, 0, &format!("SET short:{i} v PX 200"));
        }
        assert!(used_memory(&mut c) > baseline + 300 * 64, "300 keys were stored");
        // Nobody touches them: only the guest's active expiry can remove them.
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(used_memory(&mut c), baseline, "keys past their TTL are removed without being accessed");
        for i in 0..100 {
            cmd(&mut c, 0, &format!("SET key:{i} {i}"));
        }
        for _ in 0..20 {
            assert!(cmd(&mut c, 0, "RANDOMKEY").starts_with("$"));
        }
        assert!(cmd(&mut c, 0, "SCAN 0 COUNT 5").starts_with("*2"));
        assert_eq!(cmd(&mut c, 0, "INCRBYFLOAT f 10.5"), "$4\r\n10.5\r\n");
        assert_eq!(cmd(&mut c, 0, "INCRBYFLOAT f 0.1"), "$4\r\n10.6\r\n");
        cmd(&mut c, 0, "WATCH key:1");
        cmd(&mut c, 1, "INCR key:1");
        cmd(&mut c, 0, "MULTI");
        cmd(&mut c, 0, "SET key:1 mine");
        assert_eq!(cmd(&mut c, 0, "EXEC"), "*-1\r\n", "the other connection's INCR broke the WATCH");
        assert_eq!(cmd(&mut c, 0, "GET key:1"), "$1\r\n2\r\n");
    });
    assert!(vm.terminate().success(), "record must stop cleanly on SIGTERM: {}", vm.stderr());
    let recorded = vm
        .stderr()
        .lines()
        .find_map(|l| l.split("state digest at exit ").nth(1).map(str::to_owned))
        .expect("record logs its final digest");
    let stop = recorded.split(':').next().expect("index").to_owned();
    let replayed = ok_digest(&ftvmm(&["replay", "--log", path_str(&log), "--stop-at-exit", &stop]));
    assert_eq!(replayed, format!("state digest at exit {recorded}"));
}
