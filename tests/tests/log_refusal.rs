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

/// CRC-32 (IEEE), as the frame and header checksums use it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A frame whose checksum is right, whatever its body claims.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f.extend_from_slice(&crc32(body).to_le_bytes());
    f
}

/// An Entry record announcing `count` events, with `events` after it.
fn entry(count: u32, events: &[u8]) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(&1u64.to_le_bytes());
    body.push(4); // mmio-write
    body.extend_from_slice(&[0; 24]);
    body.extend_from_slice(&count.to_le_bytes());
    body.extend_from_slice(events);
    frame(&body)
}

#[test]
fn hostile_log_files_are_refused_without_a_panic_or_an_allocation_of_what_they_claim() {
    let dir = TempDir::new("evil");
    // The header and the guest-configuration block after it (file format 2), so that each
    // case's hostile bytes land where records are read.
    let full = std::fs::read(record(&dir)).expect("read");
    let config_len = u32::from_le_bytes(full[92..96].try_into().expect("4 bytes")) as usize;
    let header = full[..92 + 4 + config_len + 4].to_vec();
    let mut huge_mem = header.clone();
    huge_mem[44..52].copy_from_slice(&(!0xF_FFFFu64).to_le_bytes());
    let crc = crc32(&huge_mem[..88]);
    huge_mem[88..92].copy_from_slice(&crc.to_le_bytes());
    let mut device_input = vec![2u8];
    device_input.extend_from_slice(&0x5359u16.to_le_bytes());
    device_input.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut noise = Vec::new();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..(1 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a frame claiming 4 GiB", [&header[..], &u32::MAX.to_le_bytes(), &[1; 64]].concat()),
        ("a frame claiming 1 MiB, then the end of the file", [&header[..], &(1u32 << 20).to_le_bytes(), &[1]].concat()),
        ("an entry claiming 4 billion events", [&header[..], &entry(u32::MAX, &[1, 0x20])].concat()),
        ("a device input claiming 4 GiB", [&header[..], &entry(1, &device_input)].concat()),
        ("a megabyte of noise after the header", [&header[..], &noise].concat()),
        ("a header claiming 16 EiB of memory", huge_mem),
        ("noise where the header should be", noise[..4096].to_vec()),
    ];
    for (what, bytes) in cases {
        let evil = dir.path("evil.ftlog");
        std::fs::write(&evil, &bytes).expect("write");
        // Under a 1 GiB address-space limit: an allocation of what any of these claims
        // would fail and abort the process instead of giving the refusal.
        let out = std::process::Command::new("prlimit")
            .arg(format!("--as={}", 1u64 << 30))
            .arg(ftvmm_tests::ftvmm_bin())
            .args(["replay", "--log", path_str(&evil)])
            .env("FTVMM_LOG", "warn")
            .output()
            .expect("spawn prlimit ftvmm (prlimit is in util-linux)");
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{what}: ftvmm panicked: {err}");
        assert!(!err.contains("memory allocation"), "{what}: ftvmm tried to allocate what the file claims: {err}");
        // A header with a valid checksum but an impossible memory size is a bad command
        // line in disguise: the same error as `--mem-mib` out of range (exit 1).
        let expected = if what.contains("memory") { (1, "guest memory must be between") } else { (BAD_LOG, "error: ") };
        assert_eq!(out.status.code(), Some(expected.0), "{what}: stderr: {err}");
        assert!(err.contains(expected.1), "{what}: stderr: {err}");
        assert!(!stdout(&out).contains("state digest"), "{what}: a refused log must not produce a digest");
    }
}
