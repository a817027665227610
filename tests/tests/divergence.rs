//! A log that does not match what the guest does is caught, at the right exit.
use ftvmm_tests::{ftvmm, ok_digest, path_str, stderr, TempDir};
use logging_channel::{LogHeader, LogReader, LogWriter, Record};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

const STOP: u64 = 20_000;
const DIVERGENCE: i32 = 3;

fn read_log(path: &Path) -> (LogHeader, Vec<Record>) {
    let (mut reader, header) = LogReader::open(BufReader::new(File::open(path).expect("open"))).expect("header");
    let mut records = Vec::new();
    while let Some(r) = reader.next_record().expect("valid log") {
        records.push(r);
    }
    (header, records)
}

fn write_log(path: &Path, header: &LogHeader, records: &[Record]) {
    let mut w = LogWriter::new(BufWriter::new(File::create(path).expect("create")), header).expect("header");
    for r in records {
        w.write(r).expect("the edited log is still well-formed");
    }
    w.flush().expect("flush");
}

fn recorded_log(dir: &TempDir) -> (std::path::PathBuf, LogHeader, Vec<Record>) {
    let log = dir.path("orig.ftlog");
    ok_digest(&ftvmm(&["record", "--log", path_str(&log), "--stop-at-exit", &STOP.to_string(), "--tick-hz", "500"]));
    let (header, records) = read_log(&log);
    (log, header, records)
}

/// Moves the `nth` entry by `delta` exits, where nothing else is logged at the target exit.
fn move_entry(records: &mut [Record], delta: i64) -> u64 {
    for i in 1..records.len().saturating_sub(1) {
        let (prev, next) = (records[i - 1].exit_index(), records[i + 1].exit_index());
        if let Record::Entry { exit_index, .. } = &mut records[i] {
            let target = exit_index.checked_add_signed(delta).expect("in range");
            if target > prev && target < next && *exit_index > 100 {
                *exit_index = target;
                return target;
            }
        }
    }
    panic!("no entry could be moved by {delta}");
}

fn assert_diverges_at(log: &Path, index: u64) {
    let out = ftvmm(&["replay", "--log", path_str(log), "--stop-at-exit", &STOP.to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(DIVERGENCE), "stderr: {err}");
    assert!(err.contains(&format!("diverged at exit {index}:")), "expected divergence at {index}; stderr: {err}");
}

#[test]
fn interrupt_moved_one_exit_later_is_reported_at_that_exit() {
    let dir = TempDir::new("later");
    let (_, header, mut records) = recorded_log(&dir);
    let moved_to = move_entry(&mut records, 1);
    let edited = dir.path("later.ftlog");
    write_log(&edited, &header, &records);
    assert_diverges_at(&edited, moved_to);
}

#[test]
fn interrupt_moved_one_exit_earlier_is_reported_at_that_exit() {
    let dir = TempDir::new("earlier");
    let (_, header, mut records) = recorded_log(&dir);
    let moved_to = move_entry(&mut records, -1);
    let edited = dir.path("earlier.ftlog");
    write_log(&edited, &header, &records);
    assert_diverges_at(&edited, moved_to);
}

#[test]
fn a_different_final_state_is_reported_as_divergence() {
    let dir = TempDir::new("digest");
    let (_, header, mut records) = recorded_log(&dir);
    let Some(Record::End { state_digest: Some(d), .. }) = records.last_mut() else {
        panic!("a recording stopped at an exit ends with its state digest");
    };
    d[0] ^= 1;
    let edited = dir.path("digest.ftlog");
    write_log(&edited, &header, &records);
    assert_diverges_at(&edited, STOP);
}

#[test]
fn a_memory_digest_in_the_log_is_checked_at_its_exit() {
    // The log holds a digest of all of memory every 131,072 exits; a replay recomputes it.
    let dir = TempDir::new("fulldigest");
    let log = dir.path("storm.ftlog");
    let stop = "140000";
    let args = ["--workload", "exit-storm", "--tick-hz", "500", "--stop-at-exit", stop];
    ok_digest(&ftvmm(&[&["record", "--log", path_str(&log)][..], &args[..]].concat()));
    let replay = |log: &Path| ftvmm(&[&["replay", "--log", path_str(log)][..], &args[..]].concat());
    ok_digest(&replay(&log));

    let (header, mut records) = read_log(&log);
    let full = records.iter_mut().find_map(|r| match r {
        Record::Digest { exit_index, scope: logging_channel::DigestScope::Full, hash } => Some((*exit_index, hash)),
        _ => None,
    });
    let (index, hash) = full.expect("a run past 131072 exits logs a memory digest");
    hash[0] ^= 1;
    let edited = dir.path("edited.ftlog");
    write_log(&edited, &header, &records);

    let out = replay(&edited);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(DIVERGENCE), "{err}");
    assert!(err.contains(&format!("diverged at exit {index}: memory and register digest")), "{err}");
}
