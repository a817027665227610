use super::*;
use logging_channel::{Event, ExitKind, ExitSig};

const MACHINE: LogHeader =
    LogHeader { guest_image_digest: [1; 32], mem_size: 64 << 20, cpuid_digest: [2; 32], tick_hz: 250 };

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ftvmm-disklog-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn entry(exit_index: u64) -> Record {
    let sig = ExitSig { kind: ExitKind::MmioRead, addr: 0x1000, data: 0, regs_hash: exit_index };
    Record::Entry { exit_index, sig, events: vec![Event::Interrupt { vector: 0x20 }] }
}

/// Exits `from+1..=to`: an entry every 10 exits, a progress mark at each 5, a standing mark.
fn records(from: u64, to: u64, epoch: u64) -> Vec<Record> {
    let mut out = Vec::new();
    for e in from + 1..=to {
        if e % 10 == 0 {
            out.push(entry(e));
        } else if e % 5 == 0 {
            out.push(Record::Progress { exit_index: e });
            out.push(Record::Standing { exit_index: e, epoch, eligible: true });
        }
    }
    out
}

fn write(dir: &Path, start: u64, recs: &[Record], fsync: Fsync) -> Arc<DiskLog> {
    let log = DiskLog::open(dir, MACHINE, start, fsync).expect("open");
    for chunk in recs.chunks(3) {
        log.append(chunk, true);
        log.append(chunk, false);
    }
    log.sync();
    log
}

fn segment_files(dir: &Path) -> Vec<u64> {
    segments(dir).into_iter().map(|(s, _)| s).collect()
}

#[test]
fn records_after_the_checkpoint_come_back_in_order_and_the_segment_is_a_log_file() {
    for fsync in [Fsync::Async, Fsync::Always] {
        let dir = scratch("roundtrip");
        let all = records(0, 100, 3);
        write(&dir, 0, &all, fsync);
        let r = recover(&dir, &MACHINE, 42, u64::MAX).expect("recover");
        assert_eq!(r.position, 100);
        assert_eq!(r.epoch, 3);
        assert!(r.damage.is_none(), "{:?}", r.damage);
        let want: Vec<Record> = all.iter().filter(|x| x.exit_index() > 42).cloned().collect();
        assert_eq!(r.records, want);
        // `ftvmm record`'s reader opens it: same header, same frames.
        let file = File::open(dir.join(segment_name(0))).expect("segment");
        let (mut reader, header) = logging_channel::LogReader::open(file).expect("a log file");
        assert_eq!(header, MACHINE);
        assert_eq!(reader.next_record().expect("record"), Some(all[0].clone()));
        let _ = fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_log_ends_at_the_last_complete_exit() {
    let dir = scratch("torn");
    write(&dir, 0, &records(0, 50, 1), Fsync::Async);
    let path = dir.join(segment_name(0));
    let mut half = Vec::new();
    codec::encode(&entry(60), &mut half);
    half.truncate(half.len() / 2);
    fs::OpenOptions::new().append(true).open(&path).expect("open").write_all(&half).expect("tear");

    let r = recover(&dir, &MACHINE, 0, u64::MAX).expect("recover");
    assert_eq!(r.position, 50);
    assert!(r.damage.as_deref().is_some_and(|d| d.contains("torn")), "{:?}", r.damage);
    assert!(r.torn_tail, "a torn last record is the tail a crash cut");
    // Appending goes on after the cut: a restart reads both segments as one log.
    write(&dir, 50, &records(50, 80, 1), Fsync::Async);
    let again = recover(&dir, &MACHINE, 0, u64::MAX).expect("recover");
    assert_eq!((again.position, again.damage), (80, None));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_record_ends_the_usable_log_there() {
    let dir = scratch("corrupt");
    write(&dir, 0, &records(0, 50, 1), Fsync::Async);
    let path = dir.join(segment_name(0));
    let mut bytes = fs::read(&path).expect("read");
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).expect("write");

    let r = recover(&dir, &MACHINE, 0, u64::MAX).expect("recover");
    assert!(r.position > 0 && r.position < 50, "{}", r.position);
    assert!(r.damage.as_deref().is_some_and(|d| d.contains("corrupt")), "{:?}", r.damage);
    assert!(!r.torn_tail, "corruption is not a torn tail: what followed it may have been acknowledged");
    assert!(r.records.iter().all(|x| x.exit_index() <= r.position));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_log_of_another_vm_is_refused_and_one_that_starts_after_the_checkpoint_is_dropped() {
    let dir = scratch("foreign");
    write(&dir, 0, &records(0, 20, 1), Fsync::Async);
    let other = LogHeader { mem_size: 128 << 20, ..MACHINE };
    let err = recover(&dir, &other, 0, u64::MAX).unwrap_err().to_string();
    assert!(err.contains("another VM") && err.contains("memory size"), "{err}");

    let dir2 = scratch("late");
    write(&dir2, 30, &records(30, 60, 1), Fsync::Async);
    let r = recover(&dir2, &MACHINE, 10, u64::MAX).expect("recover");
    assert_eq!((r.position, r.records.len()), (10, 0));
    assert!(r.damage.is_some());
    assert!(segment_files(&dir2).is_empty(), "a log that cannot continue the checkpoint is deleted");
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&dir2);
}

#[test]
fn pruning_starts_a_segment_and_deletes_those_before_the_checkpoint_kept() {
    let dir = scratch("prune");
    let log = write(&dir, 0, &records(0, 40, 1), Fsync::Async);
    log.prune(0);
    for chunk in records(40, 80, 1).chunks(4) {
        log.append(chunk, false);
    }
    log.prune(40);
    for chunk in records(80, 90, 1).chunks(4) {
        log.append(chunk, false);
    }
    log.prune(80);
    log.sync();
    assert_eq!(segment_files(&dir), vec![80, 90], "segments wholly before exit 80 are gone");
    let r = recover(&dir, &MACHINE, 85, u64::MAX).expect("recover");
    assert_eq!(r.position, 90);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn past_the_byte_limit_only_the_log_up_to_it_is_replayed() {
    let dir = scratch("limit");
    write(&dir, 0, &records(0, 1000, 1), Fsync::Async);
    let r = recover(&dir, &MACHINE, 0, 500).expect("recover");
    assert!(r.bytes <= 600 && r.position < 1000, "{} bytes, position {}", r.bytes, r.position);
    assert!(r.damage.as_deref().is_some_and(|d| d.contains("over 500 bytes")), "{:?}", r.damage);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_reset_deletes_the_old_history_and_starts_at_the_new_state() {
    let dir = scratch("reset");
    let log = write(&dir, 0, &records(0, 40, 1), Fsync::Async);
    log.reset(500).expect("reset");
    for chunk in records(500, 520, 2).chunks(4) {
        log.append(chunk, false);
    }
    log.sync();
    assert_eq!(segment_files(&dir), vec![500]);
    let r = recover(&dir, &MACHINE, 500, u64::MAX).expect("recover");
    assert_eq!((r.position, r.epoch), (520, 2));
    let _ = fs::remove_dir_all(&dir);
}

/// A primary's own log has no standing marks from a stream: `mark_epoch` puts one at
/// the covered exit, once per epoch, and `recover` reads the epoch back. `seal` says the
/// last exit covered, after which the log reads back through exactly it.
#[test]
fn epoch_marks_and_a_seal_come_back_from_the_disk() {
    let dir = scratch("seal");
    let log = DiskLog::open(&dir, MACHINE, 0, Fsync::Async).expect("open");
    let first: Vec<Record> = (1..=3).map(|i| entry(i * 10)).collect();
    log.append(&first, false);
    log.mark_epoch(2);
    log.mark_epoch(2); // the same epoch: no second mark
    log.append(&[entry(40), Record::Progress { exit_index: 47 }], false);
    assert_eq!(log.seal().expect("sealed"), 47);
    let r = recover(&dir, &MACHINE, 0, u64::MAX).expect("recover");
    assert_eq!((r.position, r.epoch), (47, 2));
    let marks: Vec<&Record> = r.records.iter().filter(|x| matches!(x, Record::Standing { .. })).collect();
    assert_eq!(marks, [&Record::Standing { exit_index: 30, epoch: 2, eligible: true }]);
    // An older epoch never goes into the log after a newer one.
    log.mark_epoch(1);
    assert_eq!(log.seal().expect("sealed"), 47);
    assert_eq!(recover(&dir, &MACHINE, 0, u64::MAX).expect("recover").records.len(), r.records.len());
    let _ = fs::remove_dir_all(&dir);
}

/// A log that stopped writing (an out-of-order record, here) cannot be sealed: the
/// member must not claim a whole log.
#[test]
fn a_log_that_stopped_writing_cannot_be_sealed() {
    let dir = scratch("seal-failed");
    let log = DiskLog::open(&dir, MACHINE, 0, Fsync::Async).expect("open");
    log.append(&[entry(20)], false);
    log.append(&[entry(10)], false);
    let err = log.seal().expect_err("a broken log is not sealed");
    assert!(err.to_string().contains("stopped writing"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

/// The mark that a history was written with `--fsync always` from its start: made
/// by a new history under `always`, kept when the log is reopened so, and gone as
/// soon as it is opened under `async` (records may then be acknowledged first).
#[test]
fn a_history_is_marked_durable_only_while_every_record_of_it_was_fsyncd_first() {
    let dir = scratch("durable");
    let mark = dir.join(DURABLE_HISTORY);
    let log = DiskLog::open(&dir, MACHINE, 0, Fsync::Always).expect("open");
    assert!(!mark.exists(), "a log opened on an old history vouches for nothing yet");
    log.reset(0).expect("a new history");
    assert!(mark.exists(), "a new history under --fsync always");
    drop(log);
    drop(DiskLog::open(&dir, MACHINE, 0, Fsync::Always).expect("reopen"));
    assert!(mark.exists(), "reopened under always, the history goes on durable");
    let log = DiskLog::open(&dir, MACHINE, 0, Fsync::Async).expect("reopen async");
    assert!(!mark.exists(), "opened under async, it no longer vouches");
    log.reset(0).expect("a new history");
    assert!(!mark.exists(), "a new history under async is not marked");
    let _ = fs::remove_dir_all(&dir);
}
