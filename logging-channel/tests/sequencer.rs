mod common;

use common::*;
use logging_channel::{CodecError, DigestScope, EndReason, Record, Sequencer};

fn progress(exit_index: u64) -> Record {
    Record::Progress { exit_index }
}

fn digest(exit_index: u64) -> Record {
    Record::Digest { exit_index, scope: DigestScope::Registers, hash: [1; 32] }
}

fn end(exit_index: u64) -> Record {
    Record::End { exit_index, reason: EndReason::Shutdown, state_digest: None }
}

fn accept_all(records: &[Record]) -> Sequencer {
    let mut seq = Sequencer::new();
    for r in records {
        seq.check(r).unwrap_or_else(|e| panic!("{r:?} rejected: {e}"));
    }
    seq
}

fn rule_of(err: CodecError) -> &'static str {
    match err {
        CodecError::OutOfOrder { rule, .. } => rule,
        other => panic!("expected OutOfOrder, got {other}"),
    }
}

#[test]
fn a_well_ordered_log_is_accepted() {
    let log = [
        entry(1),
        progress(3),
        digest(3),
        Record::Released { exit_index: 3 },
        entry(4),
        digest(4),
        progress(4),
        progress(4),
        end(9),
    ];

    let seq = accept_all(&log);

    assert!(seq.is_ended());
    assert_eq!(seq.highest(), Some(9));
    assert_eq!(seq.covered_through(), Some(4));
}

#[test]
fn entry_at_the_same_index_is_out_of_order() {
    let mut seq = accept_all(&[entry(5)]);

    let err = seq.check(&entry(5)).unwrap_err();

    assert!(matches!(err, CodecError::OutOfOrder { record: "entry", exit_index: 5, previous: 5, .. }));
}

#[test]
fn entry_going_backwards_is_out_of_order() {
    let mut seq = accept_all(&[entry(5)]);

    assert!(rule_of(seq.check(&entry(2)).unwrap_err()).contains("strictly increase"));
}

#[test]
fn entry_at_an_exit_covered_by_progress_is_out_of_order() {
    let mut seq = accept_all(&[entry(1), progress(8)]);

    let err = seq.check(&entry(8)).unwrap_err();

    assert!(rule_of(err).contains("progress"));
}

#[test]
fn entry_may_share_an_exit_with_an_earlier_digest() {
    let mut seq = accept_all(&[digest(6)]);

    assert!(seq.check(&entry(6)).is_ok());
}

#[test]
fn marks_going_backwards_are_out_of_order() {
    for late in [progress(3), digest(3), end(3)] {
        let mut seq = accept_all(&[entry(4)]);

        let err = seq.check(&late).unwrap_err();

        assert!(matches!(err, CodecError::OutOfOrder { exit_index: 3, previous: 4, .. }), "{late:?}");
    }
}

#[test]
fn nothing_may_follow_end() {
    let mut seq = accept_all(&[entry(1), end(2)]);

    let err = seq.check(&progress(3)).unwrap_err();

    assert!(rule_of(err).contains("end"));
}

#[test]
fn a_rejected_record_leaves_the_state_unchanged() {
    let mut seq = accept_all(&[entry(5), progress(7)]);
    let before = seq.clone();

    let _ = seq.check(&entry(6));

    assert_eq!(seq, before);
    assert!(seq.check(&entry(8)).is_ok());
}

#[test]
fn out_of_order_message_names_record_and_exits() {
    let mut seq = accept_all(&[entry(10)]);

    let msg = seq.check(&entry(9)).unwrap_err().to_string();

    assert!(msg.contains("entry at exit 9") && msg.contains("exit 10"), "{msg}");
}

#[test]
fn released_marks_trail_the_log_in_their_own_order() {
    let mut seq = accept_all(&[entry(4), progress(9), Record::Released { exit_index: 3 }, entry(12)]);

    assert!(seq.check(&Record::Released { exit_index: 9 }).is_ok());
    assert_eq!(rule_of(seq.check(&Record::Released { exit_index: 5 }).unwrap_err()), super_rule("backwards"));
    assert_eq!(rule_of(seq.check(&Record::Released { exit_index: 13 }).unwrap_err()), super_rule("pass"));
    assert_eq!(seq.highest(), Some(12));
}

fn super_rule(word: &str) -> &'static str {
    match word {
        "backwards" => "released marks must not go backwards",
        _ => "a released mark may not pass the exits the log has covered",
    }
}
