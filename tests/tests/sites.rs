//! Multi-leader sites with real processes: three sites in their own namespaces (site 3
//! a primary/backup pair where it matters), joined by a router a test can cut.
use ftvmm_tests::pair::serial;
use ftvmm_tests::sites::{boot, SitesTopology};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(20);

#[test]
fn writes_at_each_site_appear_at_every_other_site() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "lww", [&[], &[], &[]], true);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["SET", &format!("from-{site}"), &format!("v{site}")]), "OK");
    }
    topo.converge(CONVERGE);
    for reader in 1..=3u8 {
        for writer in 1..=3u8 {
            assert_eq!(topo.text(reader, &["GET", &format!("from-{writer}")]), format!("v{writer}"));
        }
    }
}

/// Partition every site from the others, write the same keys at all three, heal.
fn partitioned_concurrent_writes(topo: &SitesTopology) {
    assert_eq!(topo.text(1, &["SET", "n", "10"]), "OK");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        topo.link(site, false);
    }
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["INCR", "n"]), "11");
        assert_eq!(topo.text(site, &["SET", "s", &format!("from-{site}")]), "OK");
        assert_eq!(topo.text(site, &["SADD", "set", &format!("m{site}")]), "1");
    }
    let (code, report) = topo.check();
    assert_eq!(code, 1, "partitioned sites with different writes are not converged:\n{report}");
    for site in 1..=3u8 {
        topo.link(site, true);
    }
    topo.converge(CONVERGE);
    let (code, report) = topo.check();
    assert_eq!(code, 0, "sites-check agrees they converged:\n{report}");
}

fn members(topo: &SitesTopology, site: u8) -> Vec<String> {
    match topo.query(site, &["SMEMBERS", "set"]).expect("SMEMBERS") {
        redis::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                other => panic!("member {other:?}"),
            })
            .collect(),
        other => panic!("SMEMBERS gave {other:?}"),
    }
}

#[test]
fn after_a_partition_merge_sums_counters_joins_strings_and_unions_sets() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "merge", [&[], &[], &[]], true);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "n"]), "13", "10 plus one INCR at each of three sites");
        assert_eq!(topo.text(site, &["GET", "s"]), "from-1|from-2|from-3");
        assert_eq!(members(&topo, site), ["m1", "m2", "m3"]);
    }
}

#[test]
fn after_a_partition_lww_keeps_the_highest_timestamp() {
    let _turn = serial();
    let topo = SitesTopology::up();
    // Site 2's clock runs 5 s ahead, so its concurrent writes carry the highest timestamps.
    let _sites = boot(&topo, "lww", [&[], &["--clock-offset-ms", "5000"], &[]], true);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "n"]), "11", "two of three increments are lost");
        assert_eq!(topo.text(site, &["GET", "s"]), "from-2");
        assert_eq!(members(&topo, site), ["m2"]);
    }
    let info = topo.text(1, &["INFO", "sites"]);
    assert!(!info.contains("sites_lost_writes:0\r"), "{info}");
}

#[test]
fn after_a_partition_site_id_lets_site_3_win() {
    let _turn = serial();
    let topo = SitesTopology::up();
    // Even with the oldest clock, site 3 wins.
    let _sites = boot(&topo, "site-id", [&["--clock-offset-ms", "5000"], &[], &["--clock-offset-ms", "-5000"]], false);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "s"]), "from-3");
        assert_eq!(members(&topo, site), ["m3"]);
    }
}

#[test]
fn after_a_partition_manual_lists_every_sibling_and_resolve_converges() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "manual", [&[], &[], &[]], false);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        let listing = format!("{:?}", topo.query(site, &["CONFLICTS", "s"]).expect("CONFLICTS"));
        for writer in 1..=3 {
            assert!(listing.contains(&format!("from-{writer}")), "site {site}: {listing}");
        }
        assert!(topo.text(site, &["INFO", "sites"]).contains("sites_conflicted_keys:3\r"));
    }
    assert_eq!(topo.text(2, &["RESOLVE", "s", "chosen"]), "OK");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "s"]), "chosen");
        let listing = format!("{:?}", topo.query(site, &["CONFLICTS", "s"]).expect("CONFLICTS"));
        assert!(!listing.contains("from-"), "resolved everywhere: {listing}");
    }
}

#[test]
fn a_write_that_follows_another_wins_under_lww_from_a_clock_500ms_behind() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "lww", [&[], &["--clock-offset-ms", "-500"], &[]], false);
    assert_eq!(topo.text(1, &["SET", "k", "first"]), "OK");
    // Read at site 2 until it has site 1's write, then write: causally after it.
    let start = std::time::Instant::now();
    while topo.text(2, &["GET", "k"]) != "first" {
        assert!(start.elapsed() < CONVERGE, "site 2 never saw site 1's write");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(topo.text(2, &["SET", "k", "second"]), "OK");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "k"]), "second");
    }
}

/// INCRs `n` over one connection at `site` until `stop`; returns (acknowledged, unknown):
/// an INCR whose reply never came may or may not have happened.
fn incr_loop(topo: &SitesTopology, site: u8, count: usize, pause: Duration) -> std::thread::JoinHandle<(i64, i64)> {
    use std::io::{BufRead, BufReader, Write};
    let ns = topo.ns(site, "client");
    ftvmm_tests::vm::spawn_in_named_netns(&ns, move || {
        let addr = format!("{}:6379", SitesTopology::guest_ip(site));
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let (mut acked, mut unknown) = (0, 0);
        for _ in 0..count {
            let mut line = String::new();
            if s.write_all(b"INCR n\r\n").is_err() || r.read_line(&mut line).is_err() || !line.starts_with(':') {
                unknown += 1;
                break;
            }
            acked += 1;
            std::thread::sleep(pause);
        }
        (acked, unknown)
    })
}

#[test]
fn killing_a_sites_primary_host_mid_stream_loses_and_repeats_no_write() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let mut sites = boot(&topo, "merge", [&[], &[], &[]], true);
    let writers: Vec<_> = (1..=3u8).map(|s| incr_loop(&topo, s, 300, Duration::from_millis(10))).collect();
    std::thread::sleep(Duration::from_millis(1500));
    topo.kill_all(3, "host-a");
    let backup = sites.backup3.as_mut().expect("site 3 is a pair");
    backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(10));
    let mut acked = 0;
    let mut unknown = 0;
    for (i, w) in writers.into_iter().enumerate() {
        let (a, u) = w.join().expect("writer");
        eprintln!("site {}: {a} INCRs acknowledged, {u} unanswered", i + 1);
        acked += a;
        unknown += u;
    }
    assert!(acked > 300, "the writers made progress: {acked}");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        let n: i64 = topo.text(site, &["GET", "n"]).parse().expect("a number");
        assert!(
            (acked..=acked + unknown).contains(&n),
            "site {site}: n = {n}, but {acked} INCRs were acknowledged ({unknown} unanswered)"
        );
    }
    // The other sites applied every record of site 3 exactly once (skipped resends are counted apart).
    for site in 1..=2u8 {
        let info = topo.text(site, &["INFO", "sites"]);
        assert!(info.contains("sites_refused_records:0\r"), "{info}");
    }
}

mod bad_input {
    use super::*;
    use resp_kv::sites::hlc::Timestamp;
    use resp_kv::sites::wire::{decode, encode, Frame};
    use resp_kv::sites::{Dot, Op, Policy, SiteAddr, SiteConfig, Value, VersionVector, Write};
    use std::io::{Read, Write as _};

    fn hello(site: u8, policy: Policy) -> Frame {
        let sites = (1..=3).map(|id| SiteAddr { id, ip: [10, 78, id, 10], port: 6380 }).collect();
        let c = SiteConfig { site_id: site, policy, sites, wall_base_ms: 0, max_log_bytes: 0, max_memory_bytes: 0 };
        Frame::Hello { version: 1, site, sites_digest: c.sites_digest(), policy: policy as u8 }
    }

    /// Sends `first`, then (after a WELCOME) whatever `then` makes of its resume point;
    /// returns every frame site 1 answered before closing.
    fn converse(topo: &SitesTopology, first: Vec<u8>, then: fn(u64) -> Vec<u8>) -> Vec<Frame> {
        topo.in_client(1, move || {
            let mut s = std::net::TcpStream::connect("10.78.1.10:6380").expect("connect to the site link");
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            s.write_all(&first).expect("send");
            let mut got = Vec::new();
            let mut frames = Vec::new();
            let mut buf = [0u8; 4096];
            let mut sent_then = false;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return frames,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                while let Ok(Some((frame, used))) = decode(&got) {
                    got.drain(..used);
                    if let (Frame::Welcome { resume_after, .. }, false) = (&frame, sent_then) {
                        s.write_all(&then(*resume_after)).expect("send");
                        sent_then = true;
                    }
                    frames.push(frame);
                }
            }
        })
    }

    fn refusal(frames: &[Frame]) -> String {
        frames
            .iter()
            .find_map(|f| match f {
                Frame::Refuse { reason } => Some(String::from_utf8_lossy(reason).into_owned()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no REFUSE among {frames:?}"))
    }

    fn bytes(frames: &[Frame]) -> Vec<u8> {
        let mut b = Vec::new();
        frames.iter().for_each(|f| encode(f, &mut b));
        b
    }

    fn write(seq: u64, wall_ms: u64) -> Vec<u8> {
        let w = Write {
            key: b"k".to_vec(),
            dot: Dot { site: 2, counter: 1_000 },
            hlc: Timestamp { wall_ms, logical: 0 },
            ctx: VersionVector::new(),
            op: Op::Assign { value: Value::Str(b"evil".to_vec()), clear: vec![] },
        };
        bytes(&[Frame::Write { seq, write: w }])
    }

    #[test]
    fn bad_input_on_the_site_link_is_refused_and_logged_and_the_data_is_untouched() {
        let _turn = serial();
        let topo = SitesTopology::up();
        let mut sites = boot(&topo, "lww", [&[], &[], &[]], false);
        assert_eq!(topo.text(1, &["SET", "k", "kept"]), "OK");
        topo.converge(CONVERGE);
        let digest = topo.text(1, &["SITES", "DIGEST"]);
        let nothing = |_| Vec::new();

        let r = refusal(&converse(&topo, b"*1\r\n$4\r\nPING\r\n garbage garbage".to_vec(), nothing));
        assert!(r.contains("not a site link peer") || r.contains("checksum"), "{r}");
        let r = refusal(&converse(&topo, bytes(&[hello(2, Policy::Merge)]), nothing));
        assert!(r.contains("--conflict differs"), "{r}");
        let r = refusal(&converse(&topo, bytes(&[hello(9, Policy::Lww)]), nothing));
        assert!(r.contains("unknown site id"), "{r}");
        // Site 1's clock is BOOT_WALL_MS plus uptime: a day later is far in its future.
        let r = refusal(&converse(&topo, bytes(&[hello(2, Policy::Lww)]), |after| write(after + 1, 1_700_086_400_000)));
        assert!(r.contains("ahead of this site's clock"), "{r}");
        let r = refusal(&converse(&topo, bytes(&[hello(2, Policy::Lww)]), |after| write(after + 5, 1_700_000_000_000)));
        assert!(r.contains("records lost"), "{r}");

        assert_eq!(topo.text(1, &["SITES", "DIGEST"]), digest, "refused input changed nothing");
        assert_eq!(topo.text(1, &["GET", "k"]), "kept");
        assert!(topo.text(1, &["INFO", "sites"]).contains("sites_refused_records:2\r"));
        let console = sites.vms[0].stdout_lines(Duration::from_millis(200)).join("\n");
        for logged in [
            "not a site link peer",
            "--conflict differs",
            "unknown site id",
            "ahead of this site's clock",
            "records lost",
        ] {
            assert!(console.contains(logged), "site 1 logged no {logged:?}:\n{console}");
        }
    }
}

#[test]
fn a_site_records_and_replays_to_the_same_state_with_the_link_busy() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let dir = ftvmm_tests::TempDir::new("sites-replay");
    let log = dir.path("site1.ftlog");
    let log = ftvmm_tests::path_str(&log).to_string();
    let stop = "6000";
    let mut others = Vec::new();
    for site in 2..=3u8 {
        let mut args = vec!["run".to_string()];
        args.extend(SitesTopology::guest_args(site, "merge", &[]));
        others.push(topo.spawn(site, "host-a", &args));
    }
    let mut args: Vec<String> =
        ["record", "--log", &log, "--stop-at-exit", stop].iter().map(|s| s.to_string()).collect();
    args.extend(SitesTopology::guest_args(1, "merge", &["--clock-offset-ms", "-250"]));
    let mut recorder = topo.spawn(1, "host-a", &args);
    recorder.wait_for_line("kv-server: listening", Duration::from_secs(20));
    assert_eq!(topo.text(2, &["INCR", "n"]), "1");
    assert_eq!(topo.text(1, &["SADD", "s", "a"]), "1");
    let start = std::time::Instant::now();
    while topo.text(1, &["GET", "n"]) != "1" {
        assert!(start.elapsed() < CONVERGE, "site 2's write never reached the recorded site");
        std::thread::sleep(Duration::from_millis(20));
    }
    let recorded = recorder.wait_for_line("state digest at exit", Duration::from_secs(60));
    assert_eq!(topo.text(2, &["SCARD", "s"]), "1", "the recorded site's write reached site 2");

    let mut replay: Vec<String> =
        ["replay", "--log", &log, "--stop-at-exit", stop].iter().map(|s| s.to_string()).collect();
    replay.extend(
        SitesTopology::guest_args(1, "merge", &["--clock-offset-ms", "-250"]).into_iter().skip(2), // no --tap
    );
    let refs: Vec<&str> = replay.iter().map(String::as_str).collect();
    let replayed = ftvmm_tests::ok_digest(&ftvmm_tests::ftvmm(&refs));
    assert_eq!(replayed, recorded.trim());
    // The site flags are part of the image: a replay with another policy is refused.
    let mut wrong = refs.clone();
    let at = wrong.iter().position(|a| *a == "merge").expect("--conflict merge");
    wrong[at] = "lww";
    assert_eq!(ftvmm_tests::ftvmm(&wrong).status.code(), Some(4), "a log of another site configuration is refused");
}

#[test]
fn a_site_started_with_another_conflict_policy_is_refused_by_the_others_and_logged() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let mut vms = Vec::new();
    for (site, conflict) in [(1u8, "lww"), (2, "merge"), (3, "merge")] {
        let mut args = vec!["run".to_string()];
        args.extend(SitesTopology::guest_args(site, conflict, &[]));
        vms.push(topo.spawn(site, "host-a", &args));
    }
    for vm in &mut vms {
        vm.wait_for_line("kv-server: listening", Duration::from_secs(20));
    }
    vms[0].wait_for_line("--conflict differs", Duration::from_secs(10));
    vms[1].wait_for_line("--conflict differs", Duration::from_secs(10));
    assert_eq!(topo.text(1, &["SET", "from-1", "x"]), "OK");
    assert_eq!(topo.text(2, &["SET", "from-2", "y"]), "OK");
    let start = std::time::Instant::now();
    while topo.text(3, &["GET", "from-2"]) != "y" {
        assert!(start.elapsed() < CONVERGE, "sites 2 and 3 still replicate to each other");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(topo.text(2, &["GET", "from-1"]), "nil", "nothing crosses a refused link");
    assert_eq!(topo.text(1, &["GET", "from-2"]), "nil", "nothing crosses a refused link");
    // A refused site retries rarely and says so once, not on every attempt.
    let lines = vms[0].stdout_lines(Duration::from_millis(100));
    let to_peers = lines.iter().filter(|l| l.contains("site-link: to site") && l.contains("differs")).count();
    assert!((1..=2).contains(&to_peers), "one line per refusing peer:\n{}", lines.join("\n"));
}
