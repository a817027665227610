//! What an operator looks at, on a real replica group: `/metrics` passes
//! `promtool check metrics` on the primary and a follower, `ftvmm status --watch`
//! prints a line a second, and the dashboard in headless Chromium shows the new
//! primary after the old one's host is killed.
use ftvmm_tests::browser::Browser;
use ftvmm_tests::load::Load;
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::replica::{Replicas, MEMBER_HOSTS};
use ftvmm_tests::status::STATUS;
use ftvmm_tests::{ftvmm_bin, output_within, require_tool};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `ftvmm status STATUS --metrics` in `host`.
fn metrics(topo: &Topology, host: &str) -> String {
    let out = topo.command(host, ftvmm_bin()).args(["status", STATUS, "--metrics"]).output().expect("ftvmm status");
    assert!(out.status.success(), "ftvmm status --metrics: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 metrics")
}

/// `promtool check metrics` on `text`: its verdict (lint problems included).
fn promtool(text: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn metrics_of_a_replica_group_pass_promtool_and_watch_prints_a_line_a_second() {
    require_tool("promtool");
    let _turn = serial();
    let topo = Topology::up();
    let r = Replicas::start(&topo, 3, &["--replication", "sync"], &[]);
    let load = Load::start(&topo, "m", 2);
    std::thread::sleep(Duration::from_secs(2));
    let p = r.primaries(&topo)[0];
    let f = (p + 1) % 3;
    let on_primary = metrics(&topo, MEMBER_HOSTS[p]);
    let on_follower = metrics(&topo, MEMBER_HOSTS[f]);
    load.stop();
    for (who, text) in [("primary", &on_primary), ("follower", &on_follower)] {
        let (ok, said) = promtool(text);
        assert!(ok, "promtool check metrics on the {who}'s /metrics: {said}\n{text}");
        assert!(said.trim().is_empty(), "promtool has lint findings on the {who}'s metrics: {said}");
    }
    assert!(on_primary.contains("ftvmm_role{role=\"primary\"} 1"), "{on_primary}");
    assert_eq!(on_primary.matches("ftvmm_follower_lag_exits{").count(), 2, "a lag per follower: {on_primary}");
    let value = |name: &str| {
        let prefix = format!("{name} ");
        on_primary.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let joined = value("ftvmm_state_transfers_total") + value("ftvmm_resumes_total");
    assert!(joined >= 2.0, "both followers' joins counted: {on_primary}");
    assert!(value("ftvmm_state_transfer_bytes_total") > 0.0, "{on_primary}");
    assert!(value("ftvmm_acks_total") > 0.0 && value("ftvmm_held_time_seconds_count") > 0.0, "{on_primary}");
    assert!(on_follower.contains("ftvmm_member_epoch{member=\"1\""), "{on_follower}");

    let mut watch = topo.command(MEMBER_HOSTS[p], "timeout");
    watch.arg("3.5").arg(ftvmm_bin()).args(["status", STATUS, "--watch"]);
    let out = output_within(watch, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<_> = text.lines().collect();
    assert!((3..=5).contains(&lines.len()), "a line a second for 3.5 s: {text}");
    assert!(
        lines.iter().all(|l| l.contains(&format!("member {} primary", p + 1)) && l.contains(" protected ")),
        "{text}"
    );
}

#[test]
fn the_dashboard_in_a_browser_shows_the_new_primary_after_a_failover() {
    let _turn = serial();
    let topo = Topology::up();
    let mut r = Replicas::start(&topo, 3, &["--replication", "sync"], &[]);
    let load = Load::start(&topo, "d", 2);
    let old = r.primaries(&topo)[0];
    let watcher = (old + 1) % 3;
    let browser = Browser::open(&topo, MEMBER_HOSTS[watcher], &format!("http://{STATUS}/"));
    let shows = |b: &Browser, what: &str, limit: Duration| {
        let t0 = Instant::now();
        loop {
            let text = b.text("primary");
            if text == what {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < limit, "the dashboard shows primary {text:?}, not {what:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    shows(&browser, &format!("member {}", old + 1), Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    r.kill(&topo, old);
    let new = r.wait_primary(&topo, Some(old), Duration::from_secs(10)).expect("a new primary is elected");
    let took = shows(&browser, &format!("member {}", new + 1), Duration::from_secs(10));
    eprintln!("the dashboard showed member {} as primary {took:?} after the election", new + 1);
    let timeline = browser.text("timeline");
    assert!(timeline.contains("election"), "the timeline shows the election: {timeline}");
    let members = browser.text("members");
    assert!(members.contains("primary"), "the members table: {members}");
    // Some history for the chart, then a picture (kept in target/ for README's screenshot).
    std::thread::sleep(Duration::from_secs(8));
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-failover.png");
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
    drop(browser);
    load.stop();
}
