//! Three multi-leader sites on one machine (`scripts/sites-netns.sh`): site N's guest
//! is 10.78.N.10, its hosts `<prefix>sN-host-a`/`-host-b`, its client `<prefix>sN-client`.
//! Site 3 can be a primary/backup pair; sites 1 and 2 are standalone VMs.
use crate::vm::{spawn_in_named_netns, VmProcess};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `--sites` list every site is started with.
pub const SITES: &str = "1=10.78.1.10:6380,2=10.78.2.10:6380,3=10.78.3.10:6380";
/// A fixed boot wall clock, so a pair's two sides (and a replay) get the same boot info.
pub const BOOT_WALL_MS: &str = "1700000000000";

/// Path of `scripts/sites-netns.sh`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/sites-netns.sh")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// The three-site topology; torn down on drop.
pub struct SitesTopology {
    prefix: String,
}

impl SitesTopology {
    /// Builds it with a unique prefix.
    pub fn up() -> SitesTopology {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let topo = SitesTopology { prefix: format!("fs{}x{n}-", std::process::id() % 10000) };
        topo.script(&["down"]);
        topo.script(&["up"]);
        topo
    }

    /// Full namespace name of `host` (host-a, host-b, client) of site `site`.
    pub fn ns(&self, site: u8, host: &str) -> String {
        format!("{}s{site}-{host}", self.prefix)
    }

    /// Guest address of site `site`.
    pub fn guest_ip(site: u8) -> String {
        format!("10.78.{site}.10")
    }

    /// Cuts site `site` off from the other sites (`up == false`) or heals it.
    pub fn link(&self, site: u8, up: bool) {
        self.script(&["link", &site.to_string(), if up { "up" } else { "down" }]);
    }

    /// `kill -9` of everything in one host of a site.
    pub fn kill_all(&self, site: u8, host: &str) {
        let out = run(Command::new(crate::netns::script())
            .args(["kill", host])
            .env("NETNS_PREFIX", format!("{}s{site}-", self.prefix))
            .env("NETNS_SUBNET", format!("10.78.{site}")));
        assert!(out.status.success(), "netns.sh kill failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn script(&self, args: &[&str]) -> Output {
        let out = run(Command::new(script()).args(args).env("NETNS_PREFIX", &self.prefix));
        assert!(
            out.status.success(),
            "NETNS_PREFIX={} sites-netns.sh {} failed:\n{}{}",
            self.prefix,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The ftvmm guest flags of site `site`.
    pub fn guest_args(site: u8, conflict: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "--tap",
            "tap0",
            "--guest-ip",
            &format!("{}/24", Self::guest_ip(site)),
            "--gateway",
            &format!("10.78.{site}.254"),
            "--site-id",
            &site.to_string(),
            "--sites",
            SITES,
            "--conflict",
            conflict,
            "--boot-wall-ms",
            BOOT_WALL_MS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// `ftvmm <args>` in a host of a site.
    pub fn spawn(&self, site: u8, host: &str, args: &[String]) -> VmProcess {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(self.ns(site, host)).arg(crate::ftvmm_bin()).args(args);
        VmProcess::spawn_command(cmd)
    }

    /// Runs `f` inside site `site`'s client namespace.
    pub fn in_client<T: Send + 'static>(&self, site: u8, f: impl FnOnce() -> T + Send + 'static) -> T {
        spawn_in_named_netns(&self.ns(site, "client"), f).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// One command at site `site` on a fresh connection.
    pub fn query(&self, site: u8, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.in_client(site, move || {
            let url = format!("redis://{}:6379/", SitesTopology::guest_ip(site));
            let mut con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
            let mut cmd = redis::cmd(&args[0]);
            args[1..].iter().for_each(|a| {
                cmd.arg(a);
            });
            cmd.query(&mut con)
        })
    }

    /// A command's reply as a string (bulk or status), "nil" for nil, panicking on errors.
    pub fn text(&self, site: u8, args: &[&str]) -> String {
        match self.query(site, args) {
            Ok(redis::Value::Nil) => "nil".into(),
            Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(redis::Value::SimpleString(s)) => s,
            Ok(redis::Value::Okay) => "OK".into(),
            Ok(redis::Value::Int(n)) => n.to_string(),
            Ok(other) => format!("{other:?}"),
            Err(e) => panic!("{args:?} at site {site}: {e}"),
        }
    }

    /// Runs `scripts/sites-check.sh` on the three sites; returns its exit code and output.
    pub fn check(&self) -> (i32, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/sites-check.sh");
        let targets: Vec<String> = (1..=3).map(|s| format!("{}@{}", self.ns(s, "client"), Self::guest_ip(s))).collect();
        let out = run(Command::new(script).args(&targets));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Waits until all three sites report the same keyspace digest; returns how long it took.
    pub fn converge(&self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let d: Vec<String> = (1..=3).map(|s| self.text(s, &["SITES", "DIGEST"])).collect();
            if d.iter().all(|x| *x == d[0]) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "sites did not converge within {within:?}: digests {d:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SitesTopology {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").env("NETNS_PREFIX", &self.prefix).output();
    }
}

/// The running sites: 1 and 2 standalone, 3 standalone or a pair.
pub struct Sites {
    pub vms: Vec<VmProcess>,
    /// Site 3's backup, when site 3 is a pair.
    pub backup3: Option<VmProcess>,
}

/// Boots all three sites with `conflict`; `extra[i]` are extra flags for site i + 1.
pub fn boot(topo: &SitesTopology, conflict: &str, extra: [&[&str]; 3], site3_pair: bool) -> Sites {
    let mut vms = Vec::new();
    for site in 1..=2u8 {
        let mut args = vec!["run".to_string()];
        args.extend(SitesTopology::guest_args(site, conflict, extra[usize::from(site - 1)]));
        vms.push(topo.spawn(site, "host-a", &args));
    }
    let mut backup3 = None;
    if site3_pair {
        let mut args: Vec<String> = ["primary", "--listen", "10.78.3.1:7000"].iter().map(|s| s.to_string()).collect();
        args.extend(SitesTopology::guest_args(3, conflict, extra[2]));
        vms.push(topo.spawn(3, "host-a", &args));
        let mut b: Vec<String> = ["backup", "--primary", "10.78.3.1:7000"].iter().map(|s| s.to_string()).collect();
        b.extend(SitesTopology::guest_args(3, conflict, extra[2]));
        let mut backup = topo.spawn(3, "host-b", &b);
        backup.wait_for_line_in_stderr("backup paired", Duration::from_secs(20));
        backup3 = Some(backup);
    } else {
        let mut args = vec!["run".to_string()];
        args.extend(SitesTopology::guest_args(3, conflict, extra[2]));
        vms.push(topo.spawn(3, "host-a", &args));
    }
    for vm in &mut vms {
        vm.wait_for_line("kv-server: listening", Duration::from_secs(20));
    }
    // Every site has streams out to both others.
    for vm in &mut vms {
        let lines = vm.wait_for_line("streaming from record", Duration::from_secs(20));
        let _ = lines;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let all = vms.iter_mut().all(|vm| {
            let seen = vm.stdout_lines(Duration::from_millis(1));
            seen.iter().filter(|l| l.contains("streaming from record")).count() >= 2
        });
        if all {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Sites { vms, backup3 }
}
