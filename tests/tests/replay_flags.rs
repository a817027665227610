//! `ftvmm replay --log FILE` needs no other flag: the log carries the guest flags it
//! was recorded with, and a flag given anyway that differs is refused by name.
use ftvmm_tests::{ftvmm, ok_digest, path_str, stderr, stdout, TempDir};

const BAD_LOG: i32 = 4;
const STOP: &str = "20000";

#[test]
fn a_kv_server_recording_replays_from_the_log_alone_and_a_differing_flag_is_named() {
    let dir = TempDir::new("replay-flags");
    let log = dir.path("kv.ftlog");
    let log = path_str(&log);
    let flags = ["--guest-ip", "10.99.0.5/24", "--gateway", "10.99.0.1", "--mac", "52:54:00:aa:bb:cc"];
    let mut record = vec!["record", "--log", log, "--stop-at-exit", STOP, "--tick-hz", "500"];
    record.extend_from_slice(&flags);
    let recorded = ok_digest(&ftvmm(&record));

    let alone = ok_digest(&ftvmm(&["replay", "--log", log, "--stop-at-exit", STOP]));
    assert_eq!(alone, recorded, "a replay given only the log reaches the recorded state");

    let mut same = vec!["replay", "--log", log, "--stop-at-exit", STOP];
    same.extend_from_slice(&flags);
    assert_eq!(ok_digest(&ftvmm(&same)), recorded, "the recorded flags given again agree");

    // (--mac needs --guest-ip on the command line: the recorded one is given with it.)
    for (given, flag, value, recorded_value) in [
        (&["--guest-ip", "10.99.0.6/24"][..], "--guest-ip", "10.99.0.6/24", "10.99.0.5/24"),
        (
            &["--guest-ip", "10.99.0.5/24", "--mac", "52:54:00:aa:bb:cd"][..],
            "--mac",
            "52:54:00:aa:bb:cd",
            "52:54:00:aa:bb:cc",
        ),
        (&["--workload", "selftest"][..], "--workload", "selftest", "kv-server"),
    ] {
        let mut args = vec!["replay", "--log", log, "--stop-at-exit", STOP];
        args.extend_from_slice(given);
        let out = ftvmm(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(BAD_LOG), "{flag}: {err}");
        let expected = format!("{flag} {value} differs from the log, which was recorded with {flag} {recorded_value}");
        assert!(err.contains(&expected), "expected {expected:?} in: {err}");
        assert!(!stdout(&out).contains("state digest"), "a refused replay must not run");
    }
}
