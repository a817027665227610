use super::*;
use crate::ft::backlog::Backlog;
use logging_channel::channel::MessageReader;
use logging_channel::codec;
use logging_channel::pipe::{pipe, PipeEnd};
use std::io::Write;
use std::time::Duration;

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(5),
    failover_timeout: Duration::from_millis(100),
    max_replay_lag: crate::ft::flow::DEFAULT_MAX_REPLAY_LAG,
    backlog_bytes: 1 << 20,
    precopy: true,
    reconnect: Duration::ZERO,
};

/// How `log-rx`'s loop ended, and the state it left.
type LogRx = std::thread::JoinHandle<(String, Arc<Upstream>)>;

/// Runs `log-rx`'s loop on one end of a pipe; the test plays the primary on the other.
fn backup_on_a_pipe() -> (PipeEnd, Receiver<Record>, LogRx) {
    let (primary, backup) = pipe();
    let (tx, rx) = unbounded();
    let state = Upstream::new(0);
    let st = state.clone();
    let h = std::thread::spawn(move || {
        let mut backup = backup;
        let stats = Stats::new(crate::host::status::Role::Backup);
        let ended = receive_loop(&mut backup, TIMING, &st, &stats, &tx, &mut Sequencer::starting_at(0));
        let (Ended::Broken(why) | Ended::Final(why)) = ended;
        (why, st)
    });
    (primary, rx, h)
}

fn next_ack(reader: &mut MessageReader<&mut PipeEnd>) -> Ack {
    match reader.next_message() {
        Ok(Some(Message::Ack(a))) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[test]
fn records_are_acked_on_receipt_and_handed_on_in_order() {
    let (mut primary, rx, h) = backup_on_a_pipe();
    primary.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = MessageReader::new(&mut primary);
    assert_eq!(next_ack(&mut first), Ack { received_through: 0, replayed_through: 0 });

    primary
        .write_all(&frames(&[Record::Progress { exit_index: 7 }, Record::Released { exit_index: 7 }]))
        .expect("send");
    let ack = next_ack(&mut MessageReader::new(&mut primary));
    primary
        .write_all(&frames(&[Record::End {
            exit_index: 9,
            reason: logging_channel::EndReason::Shutdown,
            state_digest: None,
        }]))
        .expect("send");
    let (why, state) = h.join().expect("log-rx");

    assert_eq!(ack.received_through, 7);
    assert_eq!(rx.try_iter().count(), 3);
    assert_eq!(state.released.load(Ordering::SeqCst), 7);
    assert!(state.clean_end.load(Ordering::SeqCst), "{why}");
}

#[test]
fn a_resumed_stream_continues_the_log_and_acks_from_where_the_follower_was() {
    // The first connection covered exit 40; the resumed one starts with the standing
    // mark at 40 and the records after it, as the primary's backlog sends them.
    let (mut primary, backup) = pipe();
    let (tx, rx) = unbounded();
    let state = Upstream::new(0);
    let mut seq = Sequencer::starting_at(0);
    seq.check(&Record::Progress { exit_index: 40 }).expect("in order");
    state.replayed_through.store(35, Ordering::SeqCst);
    let st = state.clone();
    let h = std::thread::spawn(move || {
        let mut backup = backup;
        let stats = Stats::new(crate::host::status::Role::Backup);
        let ended = receive_loop(&mut backup, TIMING, &st, &stats, &tx, &mut seq);
        matches!(ended, Ended::Final(_))
    });
    primary.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(next_ack(&mut MessageReader::new(&mut primary)), Ack { received_through: 40, replayed_through: 35 });
    primary
        .write_all(&frames(&[
            Record::Standing { exit_index: 40, epoch: 2, eligible: true },
            Record::Progress { exit_index: 52 },
            Record::End { exit_index: 53, reason: logging_channel::EndReason::Shutdown, state_digest: None },
        ]))
        .expect("send");
    assert!(h.join().expect("log-rx"), "a clean end is final, not a reason to reconnect");
    assert_eq!(rx.try_iter().count(), 3);
    assert_eq!(state.epoch.load(Ordering::SeqCst), 2, "the standing mark tells it the new epoch");
}

#[test]
fn a_broken_connection_is_worth_a_reconnection() {
    let (primary, backup) = pipe();
    let (tx, _rx) = unbounded();
    let state = Upstream::new(0);
    let mut backup = backup;
    let stats = Stats::new(crate::host::status::Role::Backup);
    drop(primary);
    let ended = receive_loop(&mut backup, TIMING, &state, &stats, &tx, &mut Sequencer::starting_at(0));
    assert!(matches!(ended, Ended::Broken(_)));
}

#[test]
fn silence_past_the_failover_timeout_ends_the_stream_as_a_lost_primary() {
    let (primary, _rx, h) = backup_on_a_pipe();

    let (why, state) = h.join().expect("log-rx");

    assert!(why.contains("no log traffic for 100 ms"), "{why}");
    assert!(!state.corrupt.load(Ordering::SeqCst) && !state.clean_end.load(Ordering::SeqCst));
    drop(primary);
}

#[test]
fn a_corrupt_frame_marks_the_stream_corrupt_after_passing_on_what_came_before() {
    let (mut primary, rx, h) = backup_on_a_pipe();
    let mut bytes = frames(&[Record::Progress { exit_index: 3 }, Record::Progress { exit_index: 4 }]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;

    primary.write_all(&bytes).expect("send");
    let (why, state) = h.join().expect("log-rx");

    assert!(why.contains("undecodable"), "{why}");
    assert!(state.corrupt.load(Ordering::SeqCst));
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![Record::Progress { exit_index: 3 }]);
}

fn frames(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        codec::encode(r, &mut out);
    }
    out
}

#[test]
fn a_frame_cut_short_stays_buffered_and_never_reaches_the_vm() {
    let bytes = frames(&[Record::Progress { exit_index: 5 }, Record::Progress { exit_index: 9 }]);
    let mut buf = bytes[..bytes.len() - 3].to_vec();
    let mut seq = Sequencer::new();

    let (records, result) = decode_frames(&mut buf, &mut seq, &Upstream::default());

    assert!(result.is_ok(), "a partial frame is not an error yet");
    assert_eq!(records, vec![Record::Progress { exit_index: 5 }]);
    assert_eq!(buf.len(), bytes.len() / 2 - 3, "the partial frame waits for its remaining bytes");
    assert_eq!(seq.covered_through(), Some(5), "acks cover only complete records");
}

#[test]
fn a_corrupt_frame_is_an_error_and_nothing_from_it_on_is_passed() {
    let mut buf = frames(&[
        Record::Progress { exit_index: 5 },
        Record::Progress { exit_index: 9 },
        Record::Progress { exit_index: 12 },
    ]);
    let second = buf.len() / 3;
    buf[second + 6] ^= 0xff;
    let (records, result) = decode_frames(&mut buf, &mut Sequencer::new(), &Upstream::default());

    let err = result.unwrap_err();
    assert!(err.contains("undecodable"), "{err}");
    assert_eq!(records, vec![Record::Progress { exit_index: 5 }]);
}

#[test]
fn a_backup_that_joined_at_an_exit_takes_released_marks_up_to_it_before_any_progress() {
    // The primary may release output produced before the join right after it.
    let mut buf = frames(&[Record::Released { exit_index: 5074 }, Record::Progress { exit_index: 5080 }]);
    let state = Upstream::new(5074);
    let (records, result) = decode_frames(&mut buf, &mut Sequencer::starting_at(5074), &state);

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(records.len(), 2);
    assert_eq!(state.released.load(Ordering::SeqCst), 5074);
}

#[test]
fn records_out_of_order_are_refused() {
    let mut buf = frames(&[Record::Progress { exit_index: 9 }, Record::Progress { exit_index: 5 }]);
    let (records, result) = decode_frames(&mut buf, &mut Sequencer::new(), &Upstream::default());

    assert!(result.unwrap_err().contains("out of order"));
    assert_eq!(records, vec![Record::Progress { exit_index: 9 }]);
}

#[test]
fn a_resumes_packed_records_then_live_ones_decode_in_order_and_fill_the_backlog() {
    let resumed: Vec<Record> = (1..=400).map(|i| Record::Progress { exit_index: i * 10 }).collect();
    let mut buf = Vec::new();
    logging_channel::pack::pack(&frames(&resumed), &mut buf);
    assert!(logging_channel::pack::is_packed(&buf) && buf.len() < frames(&resumed).len() / 2);
    let live = frames(&[Record::Progress { exit_index: 4005 }]);
    buf.extend_from_slice(&live);
    let whole = buf.clone();
    let state = Upstream::default();
    *state.backlog.lock().expect("backlog") = Some(Backlog::new(1 << 20, 0, 0));

    // Cut inside the packed frame: nothing yet.
    let mut part = whole[..whole.len() - live.len() - 5].to_vec();
    let mut seq = Sequencer::new();
    let (records, result) = decode_frames(&mut part, &mut seq, &state);
    assert!(result.is_ok() && records.is_empty(), "{result:?}");

    let mut seq = Sequencer::new();
    let (records, result) = decode_frames(&mut buf, &mut seq, &state);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(records, [resumed, vec![Record::Progress { exit_index: 4005 }]].concat());
    assert!(buf.is_empty());
    let backlog = state.backlog.lock().expect("backlog");
    let kept = backlog.as_ref().expect("a backlog").from(0).expect("from the start");
    assert_eq!(kept, frames(&records), "the backlog keeps the records' own frames, unpacked");
}

#[test]
fn a_corrupt_packed_frame_is_an_error_and_none_of_its_records_are_passed() {
    let resumed: Vec<Record> = (1..=400).map(|i| Record::Progress { exit_index: i * 10 }).collect();
    let mut buf = frames(&[Record::Progress { exit_index: 1 }]);
    logging_channel::pack::pack(&frames(&resumed), &mut buf);
    let mid = buf.len() - 20;
    buf[mid] ^= 0x40;
    let (records, result) = decode_frames(&mut buf, &mut Sequencer::new(), &Upstream::default());
    let err = result.unwrap_err();
    assert!(err.contains("undecodable"), "{err}");
    assert_eq!(records, vec![Record::Progress { exit_index: 1 }]);
}
