//! A primary and a backup VMM on two test hosts, serving the guest's KV store.
use crate::netns::Topology;
use crate::vm::VmProcess;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub const GUEST_CIDR: &str = "10.77.0.10/24";
pub const PRIMARY_LISTEN: &str = "10.77.0.1:7000";
/// Where a relay in host-b listens when a test puts one on the logging channel.
pub const RELAY_LISTEN: &str = "127.0.0.1:7001";

static SERIAL: Mutex<()> = Mutex::new(());

/// A file every test process locks, so that two `cargo test` runs on one machine
/// (two developers, or a benchmark beside the suite) also take turns.
const SERIAL_LOCK_FILE: &str = "/tmp/ftvmm-tests.lock";

/// Held while a test runs its VMs; see [`serial`].
pub struct Turn {
    _in_process: MutexGuard<'static, ()>,
    _across_processes: std::fs::File,
}

/// Tests that measure timing take turns: two pairs of VMs on two cores would
/// measure each other. The turn covers this process's threads and other test
/// processes alike (the file lock is released when the process ends, even by kill).
pub fn serial() -> Turn {
    let in_process = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(SERIAL_LOCK_FILE);
    let across = file.unwrap_or_else(|e| panic!("cannot open {SERIAL_LOCK_FILE}: {e}"));
    across.lock().unwrap_or_else(|e| panic!("cannot lock {SERIAL_LOCK_FILE}: {e}"));
    Turn { _in_process: in_process, _across_processes: across }
}

/// `ftvmm primary` listening on [`PRIMARY_LISTEN`], on tap0 with the test guest's
/// address, then `extra`.
pub fn primary_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["primary", "--listen", PRIMARY_LISTEN, "--tap", "tap0", "--guest-ip", GUEST_CIDR];
    args.extend_from_slice(extra);
    args
}

/// `ftvmm backup` following the primary (or relay) at `primary`, on tap0 with the
/// test guest's address, then `extra`.
pub fn backup_args<'a>(primary: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["backup", "--primary", primary, "--tap", "tap0", "--guest-ip", GUEST_CIDR];
    args.extend_from_slice(extra);
    args
}

pub struct Pair {
    pub primary: VmProcess,
    pub backup: VmProcess,
    pub relay: Option<Relay>,
}

/// Boots a primary in host-a and a backup in host-b; `relay_args` (if any) puts an
/// `ftvmm-relay` with those extra flags between them, in host-b.
pub fn start(topo: &Topology, extra: &[&str], relay_args: Option<&[&str]>) -> Pair {
    start_with(topo, extra, &[], relay_args)
}

/// Where a backup in host-b takes on backups of its own once it is live.
pub const BACKUP_LISTEN: &str = "10.77.0.2:7000";

/// Like [`start`], with flags for the backup only (such as `--listen`).
pub fn start_with(topo: &Topology, extra: &[&str], backup_only: &[&str], relay_args: Option<&[&str]>) -> Pair {
    let mut primary = VmProcess::spawn(topo, "host-a", &primary_args(extra));
    let relay = relay_args.map(|args| Relay::start(topo, args));
    let target = if relay.is_some() { RELAY_LISTEN } else { PRIMARY_LISTEN };
    let mut args = backup_args(target, extra);
    args.extend_from_slice(backup_only);
    let mut backup = VmProcess::spawn(topo, "host-b", &args);
    primary.wait_for_line("kv-server: listening", Duration::from_secs(15));
    // A backup's console is output too: it stays silent until it goes live.
    backup.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    Pair { primary, backup, relay }
}

/// Like [`start`] for a guest that is not the KV server: waits for the pairing only.
pub fn start_booted(topo: &Topology, extra: &[&str]) -> Pair {
    let primary = VmProcess::spawn(topo, "host-a", &primary_args(extra));
    let mut backup = VmProcess::spawn(topo, "host-b", &backup_args(PRIMARY_LISTEN, extra));
    backup.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    Pair { primary, backup, relay: None }
}

/// Starts a backup in `host` that joins the running primary at `primary`, and waits
/// until it holds the primary's state.
pub fn join(topo: &Topology, host: &str, primary: &str, extra: &[&str]) -> VmProcess {
    let mut backup = VmProcess::spawn(topo, host, &backup_args(primary, extra));
    backup.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    backup
}

/// `ftvmm-relay` in host-b between the backup and the primary.
pub struct Relay {
    child: Child,
}

impl Relay {
    pub fn start(topo: &Topology, args: &[&str]) -> Relay {
        Relay::start_in(topo, "host-b", RELAY_LISTEN, PRIMARY_LISTEN, args)
    }

    /// A relay in `host` from `listen` to `connect`, with extra flags `args`.
    pub fn start_in(topo: &Topology, host: &str, listen: &str, connect: &str, args: &[&str]) -> Relay {
        let bin = crate::ftvmm_bin().with_file_name("ftvmm-relay");
        let mut cmd: Command = topo.command(host, bin);
        cmd.args(["--listen", listen, "--connect", connect]).args(args);
        let mut child = cmd.env("FTVMM_LOG", "warn").stdout(Stdio::piped()).spawn().expect("spawn ftvmm-relay");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("relay stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("relay banner");
        assert!(line.contains("relay listening"), "relay did not start: {line:?}");
        Relay { child }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
