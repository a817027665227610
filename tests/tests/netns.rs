//! The two-hosts-on-one-machine topology that `scripts/netns.sh` builds.
//! Needs root and iproute2; reachability is probed with bash's /dev/tcp.
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use ftvmm_tests::netns::{self, Topology};

#[test]
fn topology_connects_hosts_and_client() {
    // Arrange
    let topo = Topology::up();

    // Act
    let client_to_a = topo.reachable("client", Topology::HOST_A_IP);
    let client_to_b = topo.reachable("client", Topology::HOST_B_IP);
    let a_to_b = topo.reachable("host-a", Topology::HOST_B_IP);
    let b_to_client = topo.reachable("host-b", Topology::CLIENT_IP);

    // Assert
    assert!(client_to_a, "client cannot reach host-a");
    assert!(client_to_b, "client cannot reach host-b");
    assert!(a_to_b, "host-a cannot reach host-b");
    assert!(b_to_client, "host-b cannot reach the client");
}

#[test]
fn each_host_has_a_tap_on_its_bridge() {
    // Arrange
    let topo = Topology::up();

    for host in ["host-a", "host-b"] {
        // Act
        let out = topo
            .command(host, "ip")
            .args(["-o", "link", "show", "dev", Topology::TAP])
            .output()
            .expect("spawn ip link show");

        // Assert
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{host} has no {}", Topology::TAP);
        assert!(line.contains("master br0"), "{host}'s {} is not on br0: {line}", Topology::TAP);
    }
}

#[test]
fn partition_cuts_a_host_off_and_heal_restores_it() {
    // Arrange
    let topo = Topology::up();
    assert!(topo.reachable("client", Topology::HOST_A_IP));

    // Act: partition
    topo.link("host-a", false);

    // Assert: host-a is cut off from everyone, the rest of the LAN is not
    assert!(!topo.reachable("client", Topology::HOST_A_IP), "client still reaches partitioned host-a");
    assert!(!topo.reachable("host-b", Topology::HOST_A_IP), "host-b still reaches partitioned host-a");
    assert!(topo.reachable("client", Topology::HOST_B_IP), "partitioning host-a cut off host-b too");

    // Act: heal
    topo.link("host-a", true);

    // Assert
    assert!(topo.reachable("client", Topology::HOST_A_IP), "client does not reach host-a after the heal");
    assert!(topo.reachable("host-a", Topology::HOST_B_IP), "host-a does not reach host-b after the heal");
}

#[test]
fn kill_all_kills_every_process_of_that_host_only() {
    // Arrange
    let topo = Topology::up();
    let mut on_a = topo.command("host-a", "sleep").arg("30").spawn().expect("spawn sleep on host-a");
    let mut on_b = topo.command("host-b", "sleep").arg("30").spawn().expect("spawn sleep on host-b");
    // `ip netns exec` has entered the namespace once its pid is listed there.
    wait_until_in_ns(&topo, "host-a", on_a.id());

    // Act
    topo.kill_all("host-a");

    // Assert
    let a_status = on_a.wait().expect("wait for host-a's sleep");
    let b_status = on_b.try_wait().expect("poll host-b's sleep");
    let _ = on_b.kill();
    let _ = on_b.wait();
    assert_eq!(a_status.signal(), Some(9), "host-a's process: {a_status}");
    assert!(b_status.is_none(), "host-b's process died too: {b_status:?}");
}

#[test]
fn down_leaves_nothing_behind() {
    // Arrange
    let links_before = netns::root_links();
    let topo = Topology::up();
    let prefix = topo.prefix().to_owned();
    let mut straggler = topo.command("host-b", "sleep").arg("30").spawn().expect("spawn sleep on host-b");
    wait_until_in_ns(&topo, "host-b", straggler.id());
    assert!(netns::namespaces().iter().any(|n| n.starts_with(&prefix)));

    // Act
    drop(topo);

    // Assert
    let left: Vec<String> = netns::namespaces().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let new_links: Vec<String> = netns::root_links()
        .into_iter()
        .filter(|l| netns::INTERFACES.contains(&l.as_str()) && !links_before.contains(l))
        .collect();
    assert!(new_links.is_empty(), "links left in the root namespace: {new_links:?}");
    let status = straggler.wait().expect("wait for the straggler");
    assert_eq!(status.signal(), Some(9), "process left in host-b: {status}");
}

fn wait_until_in_ns(topo: &Topology, host: &str, pid: u32) {
    for _ in 0..100 {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &topo.ns(host)])
            .output()
            .expect("spawn ip netns pids");
        if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == pid.to_string()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pid {pid} never showed up in {}", topo.ns(host));
}
