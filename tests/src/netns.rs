//! Two hosts on one machine: network namespaces made by `scripts/netns.sh`.
//!
//! See docs/design.md, "Test topology". Each [`Topology`] gets its own namespace
//! prefix, so tests run in parallel; dropping it runs `netns.sh down`, which
//! kills whatever still runs inside and deletes the namespaces. Needs root and
//! iproute2; the reachability probe needs only bash and coreutils' `timeout`.
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The hosts of the topology, by short name: the names [`Topology::ns`] and
/// friends accept. `lan` holds the switch.
pub const HOSTS: [&str; 6] = ["host-a", "host-b", "host-c", "host-d", "client", "lan"];

/// Interface names `netns.sh` creates inside its namespaces (never in the root one).
pub const INTERFACES: [&str; 8] = ["uplink", "br0", "tap0", "eth0", "sw0", "host-a", "host-b", "client"];

/// Path of `scripts/netns.sh`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns.sh")
}

/// Names of all network namespaces on the machine (`ip netns list`).
pub fn namespaces() -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Names of the links in the root network namespace (`ip -o link show`).
pub fn root_links() -> Vec<String> {
    let out = run(Command::new("ip").args(["-o", "link", "show"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // "4: eth0@if5: <...> ..." -> "eth0"
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// The test topology: namespaces `<prefix>host-a`, `<prefix>host-b`,
/// `<prefix>client` and `<prefix>lan`. Torn down on drop.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// The guest VM's address (the same on both hosts: the backup takes over its identity).
    pub const GUEST_IP: &'static str = "10.77.0.10";
    /// The guest VM's MAC address.
    pub const GUEST_MAC: &'static str = "52:54:00:77:00:0a";
    /// host-a's own address (on its `br0`): the primary VMM.
    pub const HOST_A_IP: &'static str = "10.77.0.1";
    /// host-b's own address (on its `br0`): the backup VMM.
    pub const HOST_B_IP: &'static str = "10.77.0.2";
    /// The client's address (on its `eth0`).
    pub const CLIENT_IP: &'static str = "10.77.0.100";
    /// Name of the persistent TAP device on host-a and host-b, bridged to the LAN.
    pub const TAP: &'static str = "tap0";

    /// Runs `scripts/netns.sh up` with a unique `NETNS_PREFIX`
    /// (`ft<pid % 10000>x<counter>-`), so tests can run in parallel.
    ///
    /// Panics, saying why, when not root, when `ip` is missing or when the
    /// script fails (after tearing down whatever it made).
    pub fn up() -> Topology {
        require_root_and_ip();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let topo = Topology { prefix: format!("ft{}x{n}-", std::process::id() % 10000) };
        // A killed earlier run whose pid matched modulo 10000 may have left these behind.
        topo.script(&["down"]);
        // On panic, drop tears down the half-built topology.
        topo.script(&["up"]);
        topo
    }

    /// [`Topology::up`] with a chosen `NETNS_PREFIX` (for a long run on a shared
    /// machine: its namespaces are recognisable); letters, digits, `_`, `.` and `-`.
    pub fn up_with_prefix(prefix: &str) -> Topology {
        require_root_and_ip();
        let topo = Topology { prefix: prefix.to_string() };
        topo.script(&["down"]);
        topo.script(&["up"]);
        topo
    }

    /// The `NETNS_PREFIX` of this topology.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full namespace name of `host` ("host-a" -> "<prefix>host-a").
    pub fn ns(&self, host: &str) -> String {
        assert!(HOSTS.contains(&host), "unknown host {host:?}: expected one of {HOSTS:?}");
        format!("{}{host}", self.prefix)
    }

    /// A [`Command`] that runs `program` inside namespace `host`
    /// (`ip netns exec <ns> <program>`); add its arguments with `.arg(..)`.
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(self.ns(host)).arg(program);
        cmd
    }

    /// Takes `host`'s uplink down (`up == false`: a partition) or up (heal).
    /// `host` is host-a, host-b or client.
    pub fn link(&self, host: &str, up: bool) {
        self.ns(host);
        self.script(&["link", host, if up { "up" } else { "down" }]);
    }

    /// Mirrored input on or off (`netns.sh mirror`): with it on, every frame sent to the
    /// guest's MAC reaches every host's tap0, as from a switch port mirror.
    pub fn mirror(&self, on: bool) {
        self.script(&["mirror", if on { "on" } else { "off" }]);
    }

    /// `kill -9` of every process in `host`'s namespace: a whole-host kill.
    pub fn kill_all(&self, host: &str) {
        self.ns(host);
        self.script(&["kill", host]);
    }

    /// Whether `ip` answers from inside `from` within one second: a TCP
    /// connect to port 9 that either connects or is refused (the peer's
    /// kernel sent a RST) counts; a timeout or "no route" does not. Needs
    /// only bash and `timeout`, not ping.
    pub fn reachable(&self, from: &str, ip: &str) -> bool {
        let out = self
            .command(from, "timeout")
            .args(["1", "bash", "-c", "exec 3<>\"/dev/tcp/$1/9\"", "probe", ip])
            .env("LC_ALL", "C")
            .output()
            .expect("spawn ip netns exec timeout bash");
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("Connection refused")
    }

    fn script(&self, args: &[&str]) -> Output {
        let out = run(Command::new(script()).args(args).env("NETNS_PREFIX", &self.prefix).env_remove("NETNS_SUBNET"));
        assert!(
            out.status.success(),
            "NETNS_PREFIX={} {} {} failed ({}):\n{}{}",
            self.prefix,
            script().display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let out = Command::new(script()).arg("down").env("NETNS_PREFIX", &self.prefix).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "netns.sh down (NETNS_PREFIX={}) failed ({}): {}",
                self.prefix,
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("netns.sh down (NETNS_PREFIX={}): {e}", self.prefix),
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Panics with the reason when the topology cannot be built here.
fn require_root_and_ip() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert!(
        euid == "0",
        "the two-host test topology needs root (it creates network namespaces); effective uid is {euid}"
    );
    crate::require_tool("ip");
}
