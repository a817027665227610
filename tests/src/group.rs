//! A replica group on the test hosts: a primary in host-a and up to three
//! followers in host-b, host-c and host-d, sharing a file arbiter.
use crate::netns::Topology;
use crate::pair::{GUEST_CIDR, PRIMARY_LISTEN};
use crate::vm::VmProcess;
use crate::{path_str, TempDir};
use std::time::Duration;

/// Where followers run, in the order they join.
pub const FOLLOWER_HOSTS: [&str; 3] = ["host-b", "host-c", "host-d"];

/// A running group.
pub struct Group {
    pub primary: VmProcess,
    pub followers: Vec<VmProcess>,
    /// The arbiter's directory (every member's `--arbiter file:...`).
    pub arbiter: TempDir,
}

/// The guest flags every member shares, plus `extra`.
fn member_args<'a>(role: &[&'a str], arbiter: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = role.to_vec();
    args.extend(["--tap", "tap0", "--guest-ip", GUEST_CIDR, "--arbiter", arbiter]);
    args.extend_from_slice(extra);
    args
}

/// Boots a primary replicating in `mode` and `followers` followers (each after the
/// previous one is in lockstep). `extra` goes to every member.
pub fn start(topo: &Topology, mode: &str, followers: usize, extra: &[&str]) -> Group {
    assert!((1..=FOLLOWER_HOSTS.len()).contains(&followers), "1 to 3 followers");
    let arbiter = TempDir::new("group-arbiter");
    let spec = format!("file:{}", path_str(&arbiter.dir("claims")));
    let primary_role = ["primary", "--listen", PRIMARY_LISTEN, "--replication", mode];
    let mut primary = VmProcess::spawn(topo, "host-a", &member_args(&primary_role, &spec, extra));
    let mut members = Vec::new();
    for (i, host) in FOLLOWER_HOSTS.iter().take(followers).enumerate() {
        let mut follower =
            VmProcess::spawn(topo, host, &member_args(&["backup", "--primary", PRIMARY_LISTEN], &spec, extra));
        if i == 0 {
            primary.wait_for_line("kv-server: listening", Duration::from_secs(15));
        }
        follower.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
        members.push(follower);
    }
    Group { primary, followers: members, arbiter }
}
