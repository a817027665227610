//! Helpers for the integration tests that boot real VMs with the `ftvmm` binary.
//!
//! The binary is the one `cargo test --workspace` builds next to these tests
//! (the `vmm` package has integration tests of its own, which makes cargo
//! build it). KVM is required: a machine without /dev/kvm fails loudly.
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `ftvmm` binary of this build profile.
pub fn ftvmm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/ftvmm; a binary of this crate
    // (ftvmm-torture) lives in target/<profile> itself.
    let dir = exe.parent().expect("test binary lives in target/<profile>/deps");
    let profile_dir = if dir.join("ftvmm").exists() { dir } else { dir.parent().unwrap_or(dir) };
    let bin = profile_dir.join("ftvmm");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so cargo builds the ftvmm binary",
        bin.display()
    );
    bin
}

/// Fails the test, loudly, on a machine without KVM; never skips.
pub fn require_kvm() {
    let kvm = Path::new("/dev/kvm");
    assert!(
        kvm.exists(),
        "/dev/kvm does not exist: these tests boot real VMs and need KVM (load kvm_intel/kvm_amd or kvm_pvm, run as root)"
    );
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        panic!("/dev/kvm cannot be opened read-write ({e}): run the tests as root or in the kvm group");
    }
}

/// What scripts/test.sh installs: "COMMAND DEBIAN-PACKAGE" lines, `#` comments.
const TEST_DEPS: &str = include_str!("../../scripts/lib/test-deps");

/// The Debian package that provides `binary`, as scripts/lib/test-deps lists it.
pub fn package_of(binary: &str) -> Option<&'static str> {
    TEST_DEPS.lines().find_map(|line| {
        let mut words = line.split('#').next().unwrap_or_default().split_whitespace();
        (words.next() == Some(binary)).then(|| words.next()).flatten()
    })
}

/// Fails the test, saying what to install, unless `binary` is on PATH. Call it
/// before spawning any tool that is not part of a base system: spawned as
/// `ip netns exec NS etcd`, a missing etcd is only `ip` exiting with an error,
/// and the test would report a tool that never answered instead of a tool that
/// is not there. The tool must be listed in scripts/lib/test-deps (which
/// scripts/test.sh installs), even on a machine that has it.
pub fn require_tool(binary: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Err(why) = check_tool(binary, &path) {
        panic!("{why}");
    }
}

fn check_tool(binary: &str, path: &std::ffi::OsStr) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let package = package_of(binary).ok_or_else(|| {
        format!("{binary} is not listed in scripts/lib/test-deps: add a line `{binary} <debian-package>` so that scripts/test.sh installs it")
    })?;
    let executable = |dir: PathBuf| {
        std::fs::metadata(dir.join(binary)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if std::env::split_paths(path).any(executable) {
        Ok(())
    } else {
        Err(format!("{binary} is not installed: apt-get install {package} (scripts/test.sh installs it)"))
    }
}

pub fn ftvmm(args: &[&str]) -> Output {
    require_kvm();
    let mut cmd = Command::new(ftvmm_bin());
    cmd.args(args).env("FTVMM_LOG", "warn");
    secure(&mut cmd);
    cmd.output().expect("spawn ftvmm")
}

/// Member certificates this test process hands out (one group, one CA).
pub const TLS_MEMBERS: usize = 9;

/// This test process's group certificates, made once by `ftvmm certs init` in a temp
/// dir (`TLS_MEMBERS` members); each member's `--tls-dir`. Directories of test
/// processes that are gone are removed.
pub fn tls_dirs() -> &'static [PathBuf] {
    static DIRS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    DIRS.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("ftvmm-tests-certs-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = tmp.join(format!("ftvmm-tests-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        new_certs(&dir, TLS_MEMBERS)
    })
}

/// Makes a group's certificates with `ftvmm certs init DIR --members N`; returns each
/// member's `--tls-dir`.
pub fn new_certs(dir: &Path, members: usize) -> Vec<PathBuf> {
    let out = Command::new(ftvmm_bin())
        .args(["certs", "init"])
        .arg(dir)
        .args(["--members", &members.to_string()])
        .output()
        .expect("spawn ftvmm certs init");
    assert!(out.status.success(), "ftvmm certs init failed: {}", String::from_utf8_lossy(&out.stderr));
    (1..=members).map(|i| dir.join(format!("member-{i}"))).collect()
}

/// Gives an ftvmm command line that replicates (`primary`, `backup`, `replica`) a
/// member certificate of this test's group (`FTVMM_TLS_DIR`, one member after
/// another), unless it says `--tls-dir` or `--insecure` itself: every test runs
/// with TLS unless it is about running without.
pub fn secure(cmd: &mut Command) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let replicates = args.iter().any(|a| matches!(a.as_str(), "primary" | "backup" | "replica"));
    let chosen =
        args.iter().any(|a| a == "--insecure" || a == "--tls-dir") || cmd.get_envs().any(|(k, _)| k == "FTVMM_TLS_DIR");
    if replicates && !chosen {
        let dirs = tls_dirs();
        cmd.env("FTVMM_TLS_DIR", &dirs[NEXT.fetch_add(1, Ordering::SeqCst) % dirs.len()]);
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `state digest at exit N: <hex>` line, which must be printed exactly once.
pub fn digest_line(o: &Output) -> String {
    let out = stdout(o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("state digest at exit ")).collect();
    assert_eq!(lines.len(), 1, "expected exactly one digest line; stdout:\n{out}\nstderr:\n{}", stderr(o));
    lines[0].to_string()
}

/// Asserts success and returns the digest line.
pub fn ok_digest(o: &Output) -> String {
    assert!(o.status.success(), "ftvmm failed ({}):\n{}", o.status, stderr(o));
    digest_line(o)
}

/// A scratch directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ftvmm-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A subdirectory, created: what an operator makes once for a file arbiter or
    /// witness (members never create it).
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).expect("create a directory in the temp dir");
        d
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
pub mod browser;
pub mod client;
pub mod etcd;
pub mod group;
pub mod history;
pub mod linear;
pub mod load;
pub mod pair;
pub mod replica;
pub mod sites;
pub mod status;
pub mod torture;
pub mod vm;

/// Runs `cmd` to its end and returns its output, but fails the test (killing the
/// process) if it runs longer than `limit`: a VMM that should have refused and exited
/// must not hang the suite.
pub fn output_within(mut cmd: std::process::Command, limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    secure(&mut cmd);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the process"),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            panic!("{cmd:?} did not finish within {limit:?} (killed)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_line_of_test_deps_names_a_command_and_a_package() {
        for line in TEST_DEPS.lines() {
            let words: Vec<&str> = line.split('#').next().unwrap_or_default().split_whitespace().collect();
            assert!(
                words.is_empty() || words.len() == 2,
                "scripts/lib/test-deps: want `COMMAND PACKAGE`, got {line:?}"
            );
        }
        assert_eq!(package_of("etcd"), Some("etcd-server"));
        assert_eq!(package_of("etcdctl"), Some("etcd-client"));
    }

    #[test]
    fn a_missing_tool_is_named_with_its_package_and_the_script_that_installs_it() {
        let dir = TempDir::new("require-tool");
        let err = check_tool("etcd", dir.0.as_os_str()).expect_err("etcd is not in an empty directory");
        assert_eq!(err, "etcd is not installed: apt-get install etcd-server (scripts/test.sh installs it)");

        let etcd = dir.path("etcd");
        std::fs::write(&etcd, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(check_tool("etcd", dir.0.as_os_str()).is_err(), "a file that cannot be executed is not the tool");
        std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.0.as_path()]).expect("PATH");
        assert_eq!(check_tool("etcd", &path), Ok(()));
    }

    #[test]
    fn a_tool_missing_from_test_deps_is_refused_even_when_installed() {
        let err = check_tool("sh", std::ffi::OsStr::new("/bin:/usr/bin")).expect_err("sh is not listed");
        assert!(err.contains("add a line `sh <debian-package>`"), "{err}");
    }
}
