mod common;

use std::io::Cursor;

use common::*;
use logging_channel::codec::{decode, encode, validate};
use logging_channel::{CodecError, DigestScope, EndReason, ExitKind, ExitSig, Record, RecordReader, MAX_FRAME_LEN};
use proptest::prelude::*;

fn decode_err(buf: &[u8]) -> CodecError {
    match decode(buf) {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn read_err(buf: &[u8]) -> CodecError {
    match RecordReader::new(Cursor::new(buf)).next_record() {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn progress_body(index: u64) -> Vec<u8> {
    let mut body = vec![2];
    body.extend_from_slice(&index.to_le_bytes());
    body
}

fn entry_body(kind: u8, count: u32, events: &[u8]) -> Vec<u8> {
    let mut body = vec![1];
    body.extend_from_slice(&5u64.to_le_bytes());
    body.push(kind);
    body.extend_from_slice(&[0; 24]);
    body.extend_from_slice(&count.to_le_bytes());
    body.extend_from_slice(events);
    body
}

#[test]
fn oversized_length_is_rejected_before_the_frame_arrives() {
    let len = MAX_FRAME_LEN as u32 + 1;

    let err = decode_err(&len.to_le_bytes());

    assert!(matches!(err, CodecError::FrameTooLarge { len: l } if l == u64::from(len)));
}

#[test]
fn maximum_length_prefix_waits_for_more_bytes() {
    let len = MAX_FRAME_LEN as u32;

    assert!(decode(&len.to_le_bytes()).unwrap().is_none());
}

#[test]
fn huge_length_prefix_on_a_stream_is_rejected_without_allocating() {
    let err = read_err(&u32::MAX.to_le_bytes());

    assert!(matches!(err, CodecError::FrameTooLarge { len } if len == u64::from(u32::MAX)));
}

#[test]
fn zero_length_is_an_empty_frame() {
    assert!(matches!(decode_err(&[0, 0, 0, 0]), CodecError::EmptyFrame));
    assert!(matches!(read_err(&[0, 0, 0, 0]), CodecError::EmptyFrame));
}

#[test]
fn corrupted_payload_fails_the_checksum() {
    let mut buf = Vec::new();
    encode(&Record::Progress { exit_index: 7 }, &mut buf);
    let carried = u32::from_le_bytes(buf[buf.len() - 4..].try_into().unwrap());
    buf[6] ^= 0x10;

    let err = decode_err(&buf);

    let computed = crc32fast::hash(&buf[4..buf.len() - 4]);
    assert!(matches!(err, CodecError::BadChecksum { expected, found }
        if expected == carried && found == computed));
}

#[test]
fn record_tag_zero_and_unknown_tags_are_rejected() {
    for tag in [0u8, 7, 255] {
        let err = decode_err(&frame_with_body(&[tag, 0, 0, 0, 0, 0, 0, 0, 0]));

        assert!(matches!(err, CodecError::UnknownTag { what: "record", tag: t } if t == tag), "tag {tag}: {err}");
    }
}

#[test]
fn invalid_exit_kind_is_rejected() {
    for kind in [0u8, 6] {
        let err = decode_err(&frame_with_body(&entry_body(kind, 1, &[1, 32])));

        assert!(matches!(err, CodecError::UnknownTag { what: "exit kind", tag } if tag == kind));
    }
}

#[test]
fn invalid_event_tag_is_rejected() {
    for event_tag in [0u8, 3] {
        let body = entry_body(ExitKind::Hlt as u8, 1, &[event_tag, 32]);

        let err = decode_err(&frame_with_body(&body));

        assert!(matches!(err, CodecError::UnknownTag { what: "event", tag } if tag == event_tag));
    }
}

#[test]
fn invalid_digest_scope_is_rejected() {
    for scope in [0u8, 3] {
        let mut body = vec![3];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.push(scope);
        body.extend_from_slice(&[0; 32]);

        let err = decode_err(&frame_with_body(&body));

        assert!(matches!(err, CodecError::UnknownTag { what: "digest scope", tag } if tag == scope));
    }
}

#[test]
fn invalid_end_reason_and_bad_digest_flag_are_rejected() {
    let end = |reason: u8, flag: u8| {
        let mut body = vec![5];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&[reason, flag]);
        frame_with_body(&body)
    };

    assert!(matches!(decode_err(&end(0, 0)), CodecError::UnknownTag { what: "end reason", tag: 0 }));
    assert!(matches!(decode_err(&end(1, 2)), CodecError::Malformed { .. }));
}

#[test]
fn trailing_bytes_inside_a_frame_are_malformed() {
    let mut body = progress_body(3);
    body.push(0);

    let err = decode_err(&frame_with_body(&body));

    assert!(matches!(&err, CodecError::Malformed { what } if what.contains("trailing")), "{err}");
}

#[test]
fn short_payload_is_malformed() {
    let err = decode_err(&frame_with_body(&progress_body(3)[..5]));

    assert!(matches!(err, CodecError::Malformed { .. }));
}

#[test]
fn event_count_beyond_the_frame_is_malformed() {
    let body = entry_body(ExitKind::IoOut as u8, u32::MAX, &[1, 32]);

    let err = decode_err(&frame_with_body(&body));

    assert!(matches!(&err, CodecError::Malformed { what } if what.contains("event count")), "{err}");
}

#[test]
fn device_input_length_beyond_the_frame_is_malformed() {
    let mut event = vec![2, 0, 0];
    event.extend_from_slice(&1000u32.to_le_bytes());
    event.extend_from_slice(&[1, 2, 3]);

    let err = decode_err(&frame_with_body(&entry_body(1, 1, &event)));

    assert!(matches!(err, CodecError::Malformed { .. }));
}

#[test]
fn entry_without_events_is_rejected_by_validate_and_decode() {
    let record = Record::Entry { exit_index: 1, sig: sample_sig(), events: vec![] };
    let mut buf = Vec::new();
    encode(&record, &mut buf);

    assert!(matches!(validate(&record), Err(CodecError::Malformed { .. })));
    assert!(matches!(decode_err(&buf), CodecError::Malformed { .. }));
}

#[test]
fn invalid_discriminants_are_rejected_by_validate_as_decode_would() {
    let bad_sig = Record::Entry {
        exit_index: 1,
        sig: ExitSig { kind: ExitKind::Invalid, ..sample_sig() },
        events: vec![logging_channel::Event::Interrupt { vector: 1 }],
    };
    let bad_scope = Record::Digest { exit_index: 1, scope: DigestScope::Invalid, hash: [0; 32] };
    let bad_reason = Record::End { exit_index: 1, reason: EndReason::Invalid, state_digest: None };

    for record in [bad_sig, bad_scope, bad_reason] {
        let mut buf = Vec::new();
        encode(&record, &mut buf);
        let from_validate = validate(&record).unwrap_err().to_string();
        assert_eq!(from_validate, decode_err(&buf).to_string());
    }
}

#[test]
fn oversized_record_is_rejected_by_validate_and_decode() {
    let record = Record::Entry {
        exit_index: 1,
        sig: sample_sig(),
        events: vec![logging_channel::Event::DeviceInput { device: 0, bytes: vec![0; MAX_FRAME_LEN] }],
    };
    let mut buf = Vec::new();
    encode(&record, &mut buf);

    assert!(matches!(validate(&record), Err(CodecError::FrameTooLarge { .. })));
    assert!(matches!(decode_err(&buf), CodecError::FrameTooLarge { .. }));
}

#[test]
fn stream_ending_mid_frame_is_truncated_and_between_frames_is_clean() {
    let mut buf = Vec::new();
    encode(&entry(1), &mut buf);
    let whole = buf.len();
    encode(&entry(2), &mut buf);
    let mut reader = RecordReader::new(Cursor::new(&buf[..whole + 3]));

    assert_eq!(reader.next_record().unwrap(), Some(entry(1)));
    assert!(matches!(reader.next_record(), Err(CodecError::Truncated)));
    assert_eq!(RecordReader::new(Cursor::new(&buf[..whole])).next_record().unwrap(), Some(entry(1)));
    assert!(RecordReader::new(Cursor::new(&[][..])).next_record().unwrap().is_none());
}

#[test]
fn error_messages_say_what_is_wrong() {
    let msg = CodecError::UnknownTag { what: "exit kind", tag: 0 }.to_string();

    assert!(msg.contains("exit kind") && msg.contains('0'), "{msg}");
    assert!(CodecError::Truncated.to_string().contains("truncated"));
}

proptest! {
    #[test]
    fn every_strict_prefix_needs_more_bytes_or_is_truncated(
        records in prop::collection::vec(arb_record(), 1..4)
    ) {
        let buf = encode_all(&records);
        for cut in 0..buf.len() {
            let prefix = &buf[..cut];
            let mut rest = prefix;
            let mut decoded = 0;
            while let Some((record, used)) = decode(rest).unwrap() {
                prop_assert_eq!(&record, &records[decoded]);
                decoded += 1;
                rest = &rest[used..];
            }

            let mut reader = RecordReader::new(Cursor::new(prefix));
            let mut read = 0;
            let end = loop {
                match reader.next_record() {
                    Ok(Some(_)) => read += 1,
                    other => break other,
                }
            };
            prop_assert_eq!(read, decoded);
            if rest.is_empty() {
                prop_assert!(matches!(end, Ok(None)));
            } else {
                prop_assert!(matches!(end, Err(CodecError::Truncated)), "{:?}", end);
            }
        }
    }

    #[test]
    fn flipping_any_byte_is_an_error_never_another_record(
        record in arb_record(),
        mask in 1u8..=255,
    ) {
        let mut original = Vec::new();
        encode(&record, &mut original);
        for at in 0..original.len() {
            let mut buf = original.clone();
            buf[at] ^= mask;

            // A longer length prefix may just mean "more bytes to come"...
            prop_assert!(!matches!(decode(&buf), Ok(Some(_))), "byte {}", at);
            // ...but on a finished stream it must be an error.
            prop_assert!(RecordReader::new(Cursor::new(&buf)).next_record().is_err(), "byte {}", at);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut reader = RecordReader::new(Cursor::new(&bytes));
        while let Ok(Some(_)) = reader.next_record() {}
    }

    #[test]
    fn random_payload_in_a_valid_frame_never_panics_and_only_decodes_canonically(
        tag in 0u8..8,
        payload in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut body = vec![tag];
        body.extend_from_slice(&payload);
        let frame = frame_with_body(&body);

        if let Ok(Some((record, used))) = decode(&frame) {
            let mut again = Vec::new();
            encode(&record, &mut again);
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(again, frame);
        }
    }

    #[test]
    fn mutated_payload_in_a_valid_frame_never_panics(
        record in arb_record(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut buf = Vec::new();
        encode(&record, &mut buf);
        let mut body = buf[4..buf.len() - 4].to_vec();
        let i = at.index(body.len());
        body[i] = value;

        if let Ok(Some((decoded, _))) = decode(&frame_with_body(&body)) {
            let mut again = Vec::new();
            encode(&decoded, &mut again);
            prop_assert_eq!(&again[4..again.len() - 4], &body[..]);
        }
    }
}

#[test]
fn a_standing_mark_with_an_eligible_byte_other_than_0_or_1_is_rejected() {
    let mut body = vec![6u8];
    body.extend_from_slice(&5u64.to_le_bytes());
    body.extend_from_slice(&2u64.to_le_bytes());
    body.push(2);
    let err = decode_err(&frame_with_body(&body));
    assert!(!matches!(err, CodecError::UnknownTag { what: "record", .. }), "{err}");
    body.truncate(body.len() - 1);
    assert!(decode_err(&frame_with_body(&body)).to_string().contains("standing"), "a short standing mark names itself");
}
