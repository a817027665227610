//! The command line refuses bad input with a usage error and a message, never a panic.
//! (Also makes `cargo test --workspace` build the `ftvmm` binary the VM tests use.)
use std::process::Command;

fn ftvmm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ftvmm")).args(args).output().expect("spawn ftvmm")
}

#[test]
fn out_of_range_memory_is_a_usage_error() {
    let out = ftvmm(&["run", "--mem-mib", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mem-mib"));
}

#[test]
fn replay_without_a_log_is_a_usage_error() {
    let out = ftvmm(&["replay"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log"));
}

#[test]
fn missing_log_file_is_an_error_naming_the_file() {
    let out = ftvmm(&["replay", "--log", "/nonexistent/ftvmm.log"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ftvmm.log"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn stop_at_exit_zero_is_refused() {
    let out = ftvmm(&["run", "--stop-at-exit", "0"]);
    assert_eq!(out.status.code(), Some(2));
}
