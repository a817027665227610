//! A replica group (`ftvmm replica`) on the test hosts: member 1 in host-a,
//! 2 in host-b, 3 in host-c, each with its own data directory, optionally
//! with a file witness. Members are found by their status (`member_role`).
use crate::netns::Topology;
use crate::pair::GUEST_CIDR;
use crate::status::{fetch, STATUS};
use crate::vm::VmProcess;
use crate::{path_str, TempDir};
use std::time::{Duration, Instant};

/// Where member N runs (N = index + 1).
pub const MEMBER_HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
/// Every member's peer port (its join port is the next one).
pub const PEER_PORT: u16 = 7200;

/// A running group; dead members' processes are kept for their logs.
pub struct Replicas {
    /// The member processes, by index (member id - 1).
    pub members: Vec<VmProcess>,
    /// Every process that ever ran, killed ones included, for their logs.
    pub graveyard: Vec<VmProcess>,
    args: Vec<Vec<String>>,
    /// Environment variables every member gets (a test-only sabotage switch, say).
    env: Vec<(String, String)>,
    _data: TempDir,
    _witness: Option<TempDir>,
}

/// `--group` for `n` members.
pub fn group_spec(n: usize) -> String {
    (1..=n).map(|i| format!("{i}=10.77.0.{i}:{PEER_PORT}")).collect::<Vec<_>>().join(",")
}

impl Replicas {
    /// Starts `n` members (2 takes a witness), `extra` flags on each and
    /// `per_member[i]` on member i+1; waits until one is primary and the others follow.
    pub fn start(topo: &Topology, n: usize, extra: &[&str], per_member: &[&[&str]]) -> Replicas {
        Replicas::start_with_env(topo, n, extra, per_member, &[])
    }

    /// [`Replicas::start`], with `env` in every member's environment (restarts too).
    pub fn start_with_env(
        topo: &Topology,
        n: usize,
        extra: &[&str],
        per_member: &[&[&str]],
        env: &[(&str, &str)],
    ) -> Replicas {
        let r = Replicas::launch(topo, n, extra, per_member, env);
        r.until_elected(topo)
    }

    /// Starts `n` members with `--witness SPEC` (a location another group may have used)
    /// and waits as [`Replicas::start`] does.
    pub fn start_on_witness(topo: &Topology, n: usize, extra: &[&str], witness: &str) -> Replicas {
        let r = Replicas::launch_at(topo, n, extra, &[], &[], Some(witness.to_string()));
        r.until_elected(topo)
    }

    /// [`Replicas::launch`] with `--witness witness_spec` (an etcd witness, say) instead
    /// of a fresh file witness; returns at once, as `launch` does.
    pub fn launch_on_witness(
        topo: &Topology,
        n: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        witness: &str,
    ) -> Replicas {
        Replicas::launch_at(topo, n, extra, &[], env, Some(witness.to_string()))
    }

    /// Waits until one member is primary (its guest serving) and the others follow it.
    fn until_elected(mut self, topo: &Topology) -> Replicas {
        let n = self.members.len();
        let r = &mut self;
        let p = r.wait_primary(topo, None, Duration::from_secs(20)).expect("the group elects a first primary");
        if r.members[p].try_wait_for_line("kv-server: listening", Duration::from_secs(20)).is_none() {
            panic!("member {}, elected first, never served:\n{}", p + 1, r.logs());
        }
        for i in 0..n {
            if i != p {
                r.wait_following(topo, i, Duration::from_secs(20));
            }
        }
        self
    }

    /// Every member's diagnostics, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            out.push_str(&format!("--- member {} ---\n{}\n", i + 1, m.stderr()));
        }
        for m in &self.graveyard {
            out.push_str(&format!("--- an earlier process ---\n{}\n", m.stderr()));
        }
        out
    }

    /// Spawns the members of [`Replicas::start_with_env`] without waiting for anything.
    pub fn launch(topo: &Topology, n: usize, extra: &[&str], per_member: &[&[&str]], env: &[(&str, &str)]) -> Replicas {
        Replicas::launch_at(topo, n, extra, per_member, env, None)
    }

    /// [`Replicas::launch`] with `--witness witness_spec` instead of a fresh file witness.
    fn launch_at(
        topo: &Topology,
        n: usize,
        extra: &[&str],
        per_member: &[&[&str]],
        env: &[(&str, &str)],
        witness_spec: Option<String>,
    ) -> Replicas {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let data = TempDir::new("replica-data");
        let witness = (witness_spec.is_none() && n.is_multiple_of(2)).then(|| TempDir::new("replica-witness"));
        let witness_spec =
            witness_spec.or_else(|| witness.as_ref().map(|w| format!("file:{}", path_str(&w.dir("claims")))));
        let spec = group_spec(n);
        let mut args = Vec::new();
        for i in 0..n {
            let mut a: Vec<String> = ["replica", "--id", &(i + 1).to_string(), "--group", &spec, "--data-dir"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.push(path_str(&data.path(&format!("m{}", i + 1))).to_string());
            if let Some(w) = &witness_spec {
                a.push("--witness".into());
                a.push(w.clone());
            }
            a.extend(["--tap", "tap0", "--guest-ip", GUEST_CIDR, "--status", STATUS].map(String::from));
            a.extend(extra.iter().map(|s| s.to_string()));
            if let Some(more) = per_member.get(i) {
                a.extend(more.iter().map(|s| s.to_string()));
            }
            args.push(a);
        }
        let members = (0..n).map(|i| spawn(topo, i, &args[i], &env)).collect();
        Replicas { members, graveyard: Vec::new(), args, env, _data: data, _witness: witness }
    }

    /// The member (index) whose status says it is primary, other than `not`, within `limit`.
    pub fn wait_primary(&self, topo: &Topology, not: Option<usize>, limit: Duration) -> Option<usize> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(p) = self.primaries(topo).into_iter().find(|&i| Some(i) != not) {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every member whose status says it is primary now.
    pub fn primaries(&self, topo: &Topology) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| fetch(topo, MEMBER_HOSTS[i]).is_some_and(|s| s.contains("\"member_role\":\"primary\"")))
            .collect()
    }

    /// Waits until member `i` follows a primary and is in sync with it.
    pub fn wait_following(&self, topo: &Topology, i: usize, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let s = fetch(topo, MEMBER_HOSTS[i]).unwrap_or_default();
            if s.contains("\"member_role\":\"follower\"") && s.contains("\"protected\":true") {
                return;
            }
            assert!(t0.elapsed() < limit, "member {} does not follow within {limit:?}: {s}", i + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of member `i`'s whole host; its process is kept for its log.
    pub fn kill(&mut self, topo: &Topology, i: usize) {
        topo.kill_all(MEMBER_HOSTS[i]);
    }

    /// Starts member `i` again with the same command (its data directory survives).
    pub fn restart(&mut self, topo: &Topology, i: usize) {
        let old = std::mem::replace(&mut self.members[i], spawn(topo, i, &self.args[i], &self.env));
        self.graveyard.push(old);
    }

    /// Member `i`'s `--data-dir` (its ballot, log and checkpoints).
    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        let at = self.args[i].iter().position(|a| a == "--data-dir").expect("every member has --data-dir");
        std::path::PathBuf::from(&self.args[i][at + 1])
    }

    /// The file witness's directory (a group of two), from the members' `--witness`.
    pub fn witness_dir(&self) -> Option<std::path::PathBuf> {
        let at = self.args.first()?.iter().position(|a| a == "--witness")?;
        self.args[0][at + 1].strip_prefix("file:").map(std::path::PathBuf::from)
    }

    /// Every log line of every process that ran, matching `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        self.members
            .iter()
            .chain(self.graveyard.iter())
            .flat_map(|m| m.stderr().lines().filter(|l| l.contains(needle)).map(String::from).collect::<Vec<_>>())
            .collect()
    }

    /// The epochs every "ELECTED" line names, over every process that ran; an epoch
    /// twice would be two primaries in one epoch.
    pub fn elected_epochs(&self) -> Vec<u64> {
        self.lines("ELECTED: member")
            .iter()
            .filter_map(|l| l.split("primary of epoch ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Panics if any epoch was won twice (two primaries in one epoch), with the lines.
    pub fn assert_one_primary_per_epoch(&self) {
        let epochs = self.elected_epochs();
        let unique: std::collections::BTreeSet<u64> = epochs.iter().copied().collect();
        assert_eq!(unique.len(), epochs.len(), "two members were elected in one epoch: {:?}", self.lines("ELECTED"));
    }
}

fn spawn(topo: &Topology, i: usize, args: &[String], env: &[(String, String)]) -> VmProcess {
    let mut cmd = topo.command(MEMBER_HOSTS[i], crate::ftvmm_bin());
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    VmProcess::spawn_command(cmd)
}
