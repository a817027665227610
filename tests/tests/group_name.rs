//! Group names: an arbiter or witness location shared across deployments and
//! groups. A new deployment starts and fails over on an arbiter (or witness) an
//! old one left records in, without anyone clearing it; two groups of the same
//! guest address share one arbiter without fencing each other; `ftvmm arbiter
//! list|clear` show and remove records; a joining follower logs its progress.
//! Real processes in namespaces, `kill -9` of whole hosts.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial, PRIMARY_LISTEN};
use ftvmm_tests::replica::Replicas;
use ftvmm_tests::vm::{in_netns, VmProcess};
use ftvmm_tests::{client, ftvmm, path_str, stderr, stdout, TempDir};
use std::io::{BufRead, Write};
use std::time::Duration;

const STOOD_DOWN: i32 = 7;

fn incr(key: &str) -> Result<i64, String> {
    let addr = format!("{}:6379", Topology::GUEST_IP).parse().map_err(|e| format!("{e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("INCR {key}\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).map_err(|e| e.to_string())?;
    line.trim_end().strip_prefix(':').and_then(|v| v.parse().ok()).ok_or(format!("reply {line:?}"))
}

/// The group name a member logged (`group=NAME` in the text log format).
fn group_of(member: &VmProcess) -> String {
    let log = member.stderr();
    let at = log.find(" group=").unwrap_or_else(|| panic!("no group name logged:\n{log}"));
    log[at + " group=".len()..].split_whitespace().next().unwrap_or_default().to_string()
}

/// `ftvmm arbiter ARGS`: (exit code, stdout, stderr).
fn arbiter(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["arbiter"];
    all.extend_from_slice(args);
    let out = ftvmm(&all);
    (out.status.code(), stdout(&out), stderr(&out))
}

/// Every JSON log line of `member` whose `progress` field is `op`.
fn progress_lines(member: &VmProcess, op: &str) -> Vec<serde_json::Value> {
    member
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["progress"] == op)
        .collect()
}

/// A summary a person would believe for a state of a 64 MiB guest: some pages, no more
/// than memory holds, bytes to match, a rate.
fn assert_plausible_transfer(line: &serde_json::Value) {
    let pages = line["pages"].as_u64().expect("pages");
    let bytes = line["bytes"].as_u64().expect("bytes");
    assert!(line["done"] == true, "{line}");
    assert!((1..=(64 << 20) / 4096).contains(&pages), "{line}");
    assert!(bytes >= pages * 4096 && bytes < (64 << 20) + (1 << 20), "{line}");
    assert!(line["mib_per_s"].as_str().and_then(|r| r.parse::<f64>().ok()).is_some_and(|r| r > 0.0), "{line}");
    assert!(line["message"].as_str().is_some_and(|m| m.contains("done,") && m.contains("pages in")), "{line}");
}

#[test]
fn a_new_pair_starts_and_fails_over_on_an_arbiter_an_old_pair_left_claims_in_and_list_and_clear_show_them() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("group-name-arbiter");
    let spec = format!("file:{}", path_str(&dir.dir("claims")));

    // The old deployment: its backup goes live (claims epoch 1 of its group), then it dies too.
    let mut old = pair::start(&topo, &["--arbiter", &spec], None);
    assert_eq!(in_netns(&topo, "client", || incr("k")), Ok(1));
    topo.kill_all("host-a");
    old.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(10));
    assert_eq!(in_netns(&topo, "client", || incr("k")), Ok(2), "the old backup serves");
    let old_group = group_of(&old.primary);
    topo.kill_all("host-b");

    // A new deployment on the same arbiter, nothing cleared: it starts (a fresh VM) ...
    let new = pair::start_with(&topo, &["--arbiter", &spec], &["--log-format", "json"], None);
    let new_group = group_of(&new.primary);
    assert_ne!(new_group, old_group);
    assert!(new_group.starts_with(&format!("{}-", Topology::GUEST_IP)), "{new_group}");
    assert_eq!(in_netns(&topo, "client", || incr("k")), Ok(1), "a new VM");
    // ... its backup learned the name in the handshake and logged the state transfer: at
    // boot both VMs are the same, so not a page differs ...
    let received = progress_lines(&new.backup, "state transfer received");
    let at_boot = received.last().expect("the backup's state transfer summary");
    let summary = (at_boot["pages"].as_u64(), at_boot["bytes"].as_u64(), at_boot["done"].as_bool());
    assert_eq!(summary, (Some(0), Some(0), Some(true)), "{at_boot}");
    // ... a follower that joins the running VM too ...
    for _ in 0..50 {
        in_netns(&topo, "client", || incr("load")).expect("INCR");
    }
    let joiner = pair::join(&topo, "host-c", PRIMARY_LISTEN, &["--arbiter", &spec, "--log-format", "json"]);
    let received = progress_lines(&joiner, "state transfer received");
    assert_plausible_transfer(received.last().expect("the joining follower's state transfer summary"));
    let sent = new.primary.stderr();
    assert!(sent.contains("state transfer sent: done,"), "the primary's side: {sent}");
    assert!(sent.contains("an older group of this guest address"), "the new primary warns of the old group: {sent}");
    // ... and when its primary dies, a follower wins the new group's epoch 1: not fenced.
    topo.kill_all("host-a");
    let t0 = std::time::Instant::now();
    let live = loop {
        if new.backup.stderr().contains("GOING LIVE") {
            break "host-b";
        }
        if joiner.stderr().contains("GOING LIVE") {
            break "host-c";
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nobody went live:\n{}\n{}",
            new.backup.stderr(),
            joiner.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(in_netns(&topo, "client", || incr("k")), Ok(2), "{live} serves the new VM");

    // The records: one claim per group, each by a backup.
    let (code, out, err) = arbiter(&["list", "--arbiter", &spec]);
    assert_eq!(code, Some(0), "{err}");
    for g in [&old_group, &new_group] {
        let row = out.lines().find(|l| l.starts_with(g.as_str())).unwrap_or_else(|| panic!("{g} missing:\n{out}"));
        assert!(row.contains("arbiter") && row.contains(" 1 ") && row.contains("backup pid"), "{row}");
    }
    let (code, _, err) = arbiter(&["clear", "--arbiter", &spec, "--all"]);
    assert_eq!(code, Some(2), "--all needs its confirmation");
    assert!(err.contains("--yes-remove-every-group"), "{err}");
    let (code, _, err) = arbiter(&["clear", "--arbiter", &spec, "--group-name", "no-such-group"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no records of group") && err.contains(&old_group), "{err}");
    let (code, out, err) = arbiter(&["clear", "--arbiter", &spec, "--group-name", &old_group]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("removed group {old_group}: 1 arbiter claim (epoch 1)")), "{out}");
    let (_, out, _) = arbiter(&["list", "--arbiter", &spec]);
    assert!(!out.contains(&old_group) && out.contains(&new_group), "{out}");
    topo.kill_all("host-b");
    topo.kill_all("host-c");
}

#[test]
fn two_groups_of_one_guest_address_share_an_arbiter_without_fencing_each_other() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("two-groups");
    let spec = format!("file:{}", path_str(&dir.dir("claims")));
    // No TAP: both guests have the same address (two deployments of one VM on separate
    // networks), so only the random part of their names tells them apart.
    let vm = ["--workload", "exit-storm", "--guest-ip", pair::GUEST_CIDR, "--arbiter", &spec];
    let member = |host: &str, role: &[&str]| {
        let mut args = role.to_vec();
        args.extend_from_slice(&vm);
        VmProcess::spawn(&topo, host, &args)
    };
    let (listen_a, listen_c) = ("10.77.0.1:7000", "10.77.0.3:7000");
    let _primary_a = member("host-a", &["primary", "--listen", listen_a]);
    let mut backup_b = member("host-b", &["backup", "--primary", listen_a]);
    let _primary_c = member("host-c", &["primary", "--listen", listen_c]);
    let mut backup_d = member("host-d", &["backup", "--primary", listen_c]);
    backup_b.wait_for_line_in_stderr("backup paired", Duration::from_secs(20));
    backup_d.wait_for_line_in_stderr("backup paired", Duration::from_secs(20));

    topo.kill_all("host-a");
    backup_b.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(10));
    // The other group's epoch 1 is its own: its backup wins it too, and does not stand down.
    topo.kill_all("host-c");
    backup_d.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    for (name, b) in [("host-b", &mut backup_b), ("host-d", &mut backup_d)] {
        let exited = b.wait(Duration::from_millis(1));
        assert!(
            exited.is_none(),
            "{name}'s backup must run on, live (exit {STOOD_DOWN} is a lost claim): {exited:?}\n{}",
            b.stderr()
        );
    }
    let (code, out, err) = arbiter(&["list", "--arbiter", &spec]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(&format!("{}-", Topology::GUEST_IP))).collect();
    assert_eq!(rows.len(), 2, "two groups, each with its claim for epoch 1:\n{out}");
    assert!(rows.iter().all(|r| r.contains(" 1 ") && r.contains("backup pid")), "{out}");
    topo.kill_all("host-b");
    topo.kill_all("host-d");
}

#[test]
fn a_new_replica_group_fails_over_through_a_witness_an_old_group_left_a_record_in() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("group-name-witness");
    let spec = format!("file:{}", path_str(&dir.dir("witness")));
    let fail_over = |r: &mut Replicas, what: &str| {
        let old = r.primaries(&topo);
        assert_eq!(old.len(), 1, "{what}: {old:?}");
        r.kill(&topo, old[0]);
        let new = r.wait_primary(&topo, Some(old[0]), Duration::from_secs(15));
        assert!(new.is_some(), "{what}: the follower must win through the witness:\n{}", r.lines("").join("\n"));
        client::fresh_client_check(&topo).unwrap_or_else(|e| panic!("{what}: the new primary serves: {e}"));
        new.expect("checked")
    };
    // The old group: its follower wins the witness (the record now refuses every log of
    // its epochs), then the whole group dies.
    let mut first = Replicas::start_on_witness(&topo, 2, &["--replication", "sync"], &spec);
    let survivor = fail_over(&mut first, "the old group");
    assert!(!first.lines("witness: yes").is_empty());
    first.kill(&topo, survivor);
    drop(first);

    // A new group (new data directories), same witness, nothing cleared: its first
    // primary names it, and the follower wins the witness in the new group's name.
    let mut second = Replicas::start_on_witness(&topo, 2, &["--replication", "sync"], &spec);
    fail_over(&mut second, "the new group");
    assert!(!second.lines("witness: yes").is_empty(), "it won through the witness");
    let (code, out, err) = arbiter(&["list", "--witness", &spec]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(" witness ")).count(), 2, "two groups' records:\n{out}");
    for i in 0..2 {
        second.kill(&topo, i);
    }
}

#[test]
fn arbiter_list_and_clear_work_on_etcd_and_say_so_when_it_is_gone() {
    let _turn = serial();
    let topo = Topology::up();
    let etcd = ftvmm_tests::etcd::start(&topo);
    let spec = format!("etcd:{}", ftvmm_tests::etcd::url());
    let in_client = |args: &[&str]| {
        let out = topo.command("client", ftvmm_tests::ftvmm_bin()).arg("arbiter").args(args).output().expect("ftvmm");
        (out.status.code(), stdout(&out), stderr(&out))
    };
    let mut p = pair::start(&topo, &["--arbiter", &spec], None);
    let group = group_of(&p.primary);
    // A follower that names another group is refused (exit 7), saying why.
    let mut wrong = topo.command("host-c", ftvmm_tests::ftvmm_bin());
    wrong
        .args(["backup", "--primary", PRIMARY_LISTEN, "--tap", "tap0", "--guest-ip", pair::GUEST_CIDR])
        .args(["--arbiter", &spec, "--group-name", "someone-else", "--connect-timeout-secs", "5"])
        .env("FTVMM_LOG", "warn");
    ftvmm_tests::secure(&mut wrong);
    let wrong = wrong.output().expect("run a backup of another group");
    assert_eq!(wrong.status.code(), Some(STOOD_DOWN), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("to group someone-else"), "{}", stderr(&wrong));
    topo.kill_all("host-a");
    p.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(10));
    let (code, out, err) = in_client(&["list", "--arbiter", &spec]);
    assert_eq!(code, Some(0), "{err}");
    let row = out.lines().find(|l| l.starts_with(&group)).unwrap_or_else(|| panic!("{group} missing:\n{out}"));
    assert!(row.contains(" 1 ") && row.contains("backup pid"), "{row}");
    let (code, out, err) = in_client(&["clear", "--arbiter", &spec, "--group-name", &group]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("removed group {group}: 1 arbiter claim (epoch 1)")), "{out}");
    let (_, out, _) = in_client(&["list", "--arbiter", &spec]);
    assert!(out.contains("holds no records"), "{out}");
    p.backup.kill9();
    drop(etcd);
    let (code, _, err) = in_client(&["list", "--arbiter", &spec]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no etcd endpoint answered"), "{err}");
}

#[test]
fn arbiter_list_says_what_is_wrong_with_a_missing_directory_or_an_unreachable_etcd() {
    let dir = TempDir::new("no-arbiter");
    let missing = format!("file:{}", path_str(&dir.path("not-there")));
    let (code, _, err) = arbiter(&["list", "--arbiter", &missing]);
    assert_eq!(code, Some(1));
    assert!(err.contains("does not exist") && err.contains("mounted"), "{err}");
    assert!(!dir.path("not-there").exists(), "list does not create it");
    let (code, _, err) = arbiter(&["clear", "--arbiter", "etcd:http://127.0.0.1:9", "--group-name", "g"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no etcd endpoint answered") && err.contains("is etcd running"), "{err}");
    let (code, _, err) = arbiter(&["list", "--arbiter", "zookeeper:x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("file:DIR or etcd:"), "{err}");
    let (code, _, _) = arbiter(&["list"]);
    assert_eq!(code, Some(2), "a location is required");
}
