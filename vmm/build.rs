//! Builds the guest kernel (its own Cargo project in ../guest) so that a plain
//! `cargo build` of the workspace yields a monitor with the guest embedded.
//!
//! The guest needs flags the host crates must not get (static relocation
//! model, its own linker script), so it is a nested `cargo build` with a clean
//! environment rather than a workspace member.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guest_dir = manifest_dir.join("../guest");
    let abi_dir = manifest_dir.join("../guest-abi");
    // The guest links resp-kv too: a change there must rebuild the embedded guest.
    let kv_dir = manifest_dir.join("../resp-kv");
    let target_dir = manifest_dir.join("../target/guest");
    for dir in [&guest_dir, &abi_dir, &kv_dir] {
        for sub in ["src", "Cargo.toml", "Cargo.lock", "build.rs", "linker.ld", ".cargo"] {
            let p = dir.join(sub);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir).args(["build", "--release", "--locked", "--target-dir"]).arg(&target_dir);
    // Flags of the outer build (coverage, sanitizers, the host's target dir) must not leak in.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let leaks = key.starts_with("CARGO_") || key.starts_with("RUSTC_") || key == "RUSTFLAGS";
        if leaks && key != "CARGO_HOME" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Crelocation-model=static");
    let status = cmd.status().expect("could not run cargo to build the guest");
    if !status.success() {
        panic!("building the guest kernel in {} failed ({status})", guest_dir.display());
    }
    let elf = target_dir.join("release/ftvmm-guest");
    println!("cargo:rustc-env=FTVMM_GUEST_ELF={}", elf.display());
}
