//! Record a run, replay it from the log alone, and get the very same machine state.
use ftvmm_tests::{ftvmm, ok_digest, path_str, stderr, TempDir};
use logging_channel::{Event, ExitKind, LogReader, Record};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;

fn record(log: &str, stop: u64, extra: &[&str]) -> String {
    let stop = stop.to_string();
    let mut args = vec!["record", "--log", log, "--stop-at-exit", &stop];
    args.extend_from_slice(extra);
    ok_digest(&ftvmm(&args))
}

fn replay(log: &str, stop: u64) -> String {
    ok_digest(&ftvmm(&["replay", "--log", log, "--stop-at-exit", &stop.to_string()]))
}

#[test]
fn replay_reaches_the_recorded_digest_at_several_stop_points() {
    let dir = TempDir::new("stops");
    for (i, stop) in [5_000u64, 20_000, 45_000].into_iter().enumerate() {
        let log = dir.path(&format!("run{i}.ftlog"));
        let log = path_str(&log);
        let recorded = record(log, stop, &["--tick-hz", "500"]);
        assert_eq!(replay(log, stop), recorded, "replay of a run stopped at exit {stop}");
    }
}

#[test]
fn interrupts_land_at_waits_and_at_device_reads_and_replay_matches() {
    let dir = TempDir::new("kinds");
    let log = dir.path("run.ftlog");
    let recorded = record(path_str(&log), 40_000, &["--tick-hz", "1000"]);

    let (mut reader, _) = LogReader::open(BufReader::new(File::open(&log).expect("log"))).expect("header");
    let mut kinds = BTreeSet::new();
    let mut interrupts = 0;
    while let Some(record) = reader.next_record().expect("valid log") {
        if let Record::Entry { sig, events, .. } = record {
            kinds.insert(sig.kind as u8);
            interrupts += events.iter().filter(|e| matches!(e, Event::Interrupt { .. })).count();
        }
    }
    assert!(interrupts > 50, "only {interrupts} interrupts recorded");
    assert!(kinds.contains(&(ExitKind::MmioRead as u8)), "no interrupt at a device read: {kinds:?}");
    assert!(kinds.contains(&(ExitKind::MmioWrite as u8)), "no interrupt at a wait: {kinds:?}");
    assert_eq!(replay(path_str(&log), 40_000), recorded);
}

#[test]
fn different_interrupt_timing_gives_a_different_digest() {
    // Two live runs see ticks at different exits; their final states must differ,
    // or the digest could not detect a misplaced interrupt at all.
    let dir = TempDir::new("timing");
    let a = record(path_str(&dir.path("a.ftlog")), 30_000, &["--tick-hz", "1000"]);
    let b = record(path_str(&dir.path("b.ftlog")), 30_000, &["--tick-hz", "1000"]);
    assert_ne!(a, b);
}

#[test]
fn replay_refuses_to_run_past_the_end_of_the_log() {
    let dir = TempDir::new("pastend");
    let log = dir.path("run.ftlog");
    record(path_str(&log), 3_000, &[]);
    let out = ftvmm(&["replay", "--log", path_str(&log), "--stop-at-exit", "9000"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("ends at exit 3000"), "stderr: {}", stderr(&out));
}
