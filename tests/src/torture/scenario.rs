//! Fixed scenarios, for tests that need one fault at one moment rather than a seeded
//! schedule; each ends with every check a campaign makes (history and members).
use super::clients::{Clients, Shared};
use super::nemesis::{wait_whole, RECOVERY};
use super::verdict::check_members;
use super::{check_history, final_reads, Findings};
use crate::netns::Topology;
use crate::replica::{Replicas, MEMBER_HOSTS};
use crate::vm::in_netns;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Clients run; both followers' links go down (each alone: no majority anywhere, the
/// primary keeps serving the clients for less than a failover timeout); the primary's
/// host is killed and cut off (its kernel must not deliver after death what the dead
/// process had buffered); the links come back and the followers elect one of
/// themselves; the old primary restarts. Then the history is checked, and the members
/// (one primary per epoch, releases only in won epochs, and a clean stop after which
/// every follower in sync reaches the primary's final digest). Returns what the checks
/// found, and how many operations the clients completed while the primary was cut off
/// from its followers. The caller holds the test lock.
pub fn followers_cut_off_then_primary_killed(mode: &str, env: &[(&str, &str)]) -> (Findings, u64) {
    let topo = Topology::up();
    let mut r = Replicas::start_with_env(&topo, 3, &["--replication", mode], &[], env);
    let shared = Shared::new();
    let clients = Clients::start(&topo, 4, 7, shared.clone());
    std::thread::sleep(Duration::from_millis(800));
    let primaries = r.primaries(&topo);
    assert_eq!(primaries.len(), 1, "one primary before the faults: {primaries:?}\n{}", r.logs());
    let p = primaries[0];
    let followers: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    for &i in &followers {
        topo.link(MEMBER_HOSTS[i], false);
    }
    let before = shared.ops.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(250));
    let served = shared.ops.load(Ordering::Relaxed) - before;
    r.kill(&topo, p);
    println!("{mode}: member {} was primary; the clients completed {served} operations while it was cut off", p + 1);
    topo.link(MEMBER_HOSTS[p], false);
    for &i in &followers {
        topo.link(MEMBER_HOSTS[i], true);
    }
    r.wait_primary(&topo, Some(p), Duration::from_secs(20)).expect("a new primary");
    topo.link(MEMBER_HOSTS[p], true);
    r.restart(&topo, p);
    let whole = wait_whole(&topo, 3, RECOVERY);
    std::thread::sleep(Duration::from_millis(800));
    let mut history: Vec<_> = clients.stop().into_iter().flat_map(|l| l.ops).collect();
    history.extend(in_netns(&topo, "client", move || final_reads(99, &shared)));
    let mut f = check_history(&history);
    f.whole_at_end = whole;
    check_members(&mut f, &topo, &mut r, 3);
    println!("{mode}: {} ops, {}", history.len(), f.summary());
    (f, served)
}
