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
    // target/<profile>/deps/<test> -> target/<profile>/ftvmm
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
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

pub fn ftvmm(args: &[&str]) -> Output {
    require_kvm();
    Command::new(ftvmm_bin()).args(args).env("FTVMM_LOG", "warn").output().expect("spawn ftvmm")
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
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
pub mod client;
pub mod load;
pub mod pair;
pub mod sites;
pub mod vm;
