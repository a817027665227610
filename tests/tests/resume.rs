//! Backlog and resume: a follower whose link goes down reconnects on its own; if its
//! position is still in the primary's backlog the log resumes from there (no state
//! transfer), otherwise it gets a state transfer (of the pages that differ). Either way it ends at the
//! primary's final digest. Real processes in namespaces, the link taken down with
//! `ip link`.
use ftvmm_tests::group::{self, Group};
use ftvmm_tests::load::Load;
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::serial;
use ftvmm_tests::status::{flag, wait_until, STATUS};
use std::time::Duration;

/// How long the follower's link is down: four times the failover timeout, so the
/// primary has dropped it (and claimed the epoch) by the time it is back.
/// Short, because the primary goes on alone after the failover timeout and logs at full
/// speed from then on: past about 4x the state (attach.rs, RESUME_OVER_STATE) it sends
/// the pages that differ instead of the log, by design.
const LINK_DOWN: Duration = Duration::from_millis(1_000);

/// Boots a primary and one follower (`extra` for both), takes the follower's link down
/// for [`LINK_DOWN`] under load, and waits until the primary has it back.
fn disconnect_and_reconnect(topo: &Topology, extra: &[&str]) -> Group {
    let mut args = vec!["--reconnect-secs", "10", "--status", STATUS];
    args.extend_from_slice(extra);
    let mut g = group::start(topo, "sync", 1, &args);
    let load = Load::start(topo, "resume", 2);
    std::thread::sleep(Duration::from_millis(700));

    topo.link("host-b", false);
    std::thread::sleep(LINK_DOWN);
    topo.link("host-b", true);
    g.primary.wait_for_line_in_stderr("dropped (", Duration::from_secs(1));
    g.followers[0].wait_for_line_in_stderr("the connection to the primary broke", Duration::from_secs(1));
    // Back in the group: protected, the follower in sync again, under load.
    let (seen, _) = wait_until(topo, "host-a", Duration::from_secs(20), |s| {
        flag(s, "protected") == Some(true) && s.contains("\"state\":\"in sync\"")
    });
    std::thread::sleep(Duration::from_millis(700));
    let reports = load.stop();
    for r in &reports {
        assert!(r.error.is_none(), "{r:?}");
    }
    println!("after the reconnection: {seen}");
    g
}

/// A clean stop of the primary: the follower must replay to its final state digest.
fn stop_and_check_digest(g: &mut Group) {
    assert!(g.primary.terminate().success(), "{}", g.primary.stderr());
    let follower = &mut g.followers[0];
    let status = follower.wait(Duration::from_secs(20)).expect("the follower stops with the primary");
    let err = follower.stderr();
    assert!(status.success(), "follower: {err}");
    assert!(err.contains("EndOfLog(Shutdown)"), "the follower must reach the end record: {err}");
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn a_follower_disconnected_for_a_second_resumes_from_the_backlog_without_a_state_transfer() {
    let _turn = serial();
    let topo = Topology::up();
    let mut g = disconnect_and_reconnect(&topo, &[]);

    let primary = g.primary.stderr();
    let follower = g.followers[0].stderr();
    let resumed = line_with(&primary, "follower resumed from the backlog");
    assert!(resumed.contains("bytes of log sent"), "{resumed}");
    assert!(follower.contains("resumed the log from the primary's backlog"), "{follower}");
    assert!(!primary.contains("state transfer of the pages that differ"), "{primary}");
    // The boot's pairing is a state transfer (and says so); after the break there is none.
    let after_break = follower.split("the connection to the primary broke").nth(1).unwrap_or_default();
    assert!(!after_break.is_empty(), "the follower never saw its connection break: {follower}");
    assert!(!after_break.contains("state transfer received"), "{follower}");
    assert!(!follower.contains("GOING LIVE"), "{follower}");
    println!("{resumed}");
    stop_and_check_digest(&mut g);
}

#[test]
fn a_follower_disconnected_past_the_backlog_gets_a_full_state_transfer() {
    let _turn = serial();
    let topo = Topology::up();
    // 1 KiB: the ticks of one second alone are more than that.
    let mut g = disconnect_and_reconnect(&topo, &["--backlog-kib", "1"]);

    let primary = g.primary.stderr();
    let follower = g.followers[0].stderr();
    let full = line_with(&primary, "state transfer of the pages that differ");
    assert!(full.contains("no longer in the backlog"), "{full}");
    assert!(follower.contains("state transfer received"), "{follower}");
    assert!(!primary.contains("follower resumed from the backlog"), "{primary}");
    assert!(!follower.contains("GOING LIVE"), "{follower}");
    println!("{full}");
    stop_and_check_digest(&mut g);
}
