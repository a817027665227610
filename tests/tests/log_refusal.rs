//! Logs that are corrupt, cut short or from another guest are refused with a clear error.
use ftvmm_tests::{ftvmm, ok_digest, path_str, stderr, stdout, TempDir};
use std::path::Path;

const BAD_LOG: i32 = 4;

fn record(dir: &TempDir) -> std::path::PathBuf {
    let log = dir.path("orig.ftlog");
    ok_digest(&ftvmm(&["record", "--log", path_str(&log), "--stop-at-exit", "8000", "--tick-hz", "500"]));
    log
}

fn replay_refused(log: &Path, extra: &[&str], expect_in_error: &str) {
    let mut args = vec!["replay", "--log", path_str(log)];
    args.extend_from_slice(extra);
    let out = ftvmm(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(BAD_LOG), "stderr: {err}");
    assert!(err.contains(expect_in_error), "expected {expect_in_error:?} in: {err}");
    assert!(!err.contains("panicked"), "ftvmm panicked: {err}");
    assert!(!stdout(&out).contains("state digest"), "a refused log must not produce a digest");
}

#[test]
fn flipped_byte_in_a_record_is_refused_as_corrupt() {
    let dir = TempDir::new("corrupt");
    let log = record(&dir);
    let mut bytes = std::fs::read(&log).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = dir.path("corrupt.ftlog");
    std::fs::write(&bad, bytes).expect("write");
    // Depending on where the flip lands, the checksum or the framing catches it.
    replay_refused(&bad, &[], "the log is unreadable");
}

#[test]
fn log_cut_in_the_middle_of_a_record_is_refused_as_truncated() {
    let dir = TempDir::new("truncated");
    let log = record(&dir);
    let bytes = std::fs::read(&log).expect("read");
    let bad = dir.path("truncated.ftlog");
    std::fs::write(&bad, &bytes[..bytes.len() - 7]).expect("write");
    replay_refused(&bad, &[], "truncated");
}

#[test]
fn log_cut_at_a_record_boundary_is_refused_for_its_missing_end() {
    let dir = TempDir::new("noend");
    let log = record(&dir);
    let bytes = std::fs::read(&log).expect("read");
    // The end record is last: a 1-byte tag, 8-byte index, 1-byte reason, 1+32-byte digest, framed.
    let end_frame = 4 + 1 + 8 + 1 + 1 + 32 + 4;
    let bad = dir.path("noend.ftlog");
    std::fs::write(&bad, &bytes[..bytes.len() - end_frame]).expect("write");
    replay_refused(&bad, &[], "without an end record");
}

#[test]
fn log_of_another_guest_is_refused_before_it_runs() {
    let dir = TempDir::new("foreign");
    let log = record(&dir);
    // The log carries the flags it was recorded with: a different one is named.
    replay_refused(&log, &["--workload", "exit-storm"], "--workload exit-storm differs from the log");
}

#[test]
fn file_that_is_not_a_log_is_refused() {
    let dir = TempDir::new("notalog");
    let bad = dir.path("notalog.ftlog");
    std::fs::write(&bad, b"#!/bin/sh\necho hello\n").expect("write");
    replay_refused(&bad, &[], "not an ftvmm log");
    std::fs::write(&bad, b"FTVM").expect("write");
    replay_refused(&bad, &[], "truncated");
}
