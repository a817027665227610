mod common;

use std::io::Cursor;

use common::*;
use logging_channel::channel::{
    decode, encode, hello, Ack, AttachReply, AttachRequest, Hello, HelloReply, Message, MessageReader, RefuseCode, Role,
};
use logging_channel::{codec, CodecError, GroupName, Record, MAX_GROUP_NAME, PROTOCOL_VERSION};
use proptest::prelude::*;

fn arb_hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), prop::sample::select(Role::VALID.to_vec()), arb_header(), any::<u64>(), "[a-z0-9][a-z0-9._-]{0,63}|")
        .prop_map(|(protocol_version, role, machine, epoch, group)| {
            let group = GroupName::new(&group).expect("the strategy makes valid names");
            Hello { protocol_version, ..hello(role, &machine, epoch, group) }
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_hello().prop_map(Message::Hello),
        Just(Message::HelloReply(HelloReply::Accept)),
        (prop::sample::select(RefuseCode::VALID.to_vec()), ".{0,40}")
            .prop_map(|(code, reason)| Message::HelloReply(HelloReply::Refuse { code, reason })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(a, b)| Message::Ack(Ack { received_through: a.max(b), replayed_through: a.min(b) })),
        Just(Message::Attach(AttachRequest::Fresh)),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, exit_index)| Message::Attach(AttachRequest::Resume { epoch, exit_index })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(a, b)| Message::AttachReply(AttachReply::Resume { from: a.min(b), through: a.max(b) })),
        ".{0,40}".prop_map(|why| Message::AttachReply(AttachReply::State { why })),
        ".{0,40}".prop_map(|why| Message::AttachReply(AttachReply::Refuse { why })),
    ]
}

fn encoded(message: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(message, &mut buf);
    buf
}

fn decode_err(buf: &[u8]) -> CodecError {
    match decode(buf) {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn primary() -> Hello {
    hello(Role::Primary, &sample_header(), 3, GroupName::new("10.77.0.10-0badc0de").expect("name"))
}

fn backup() -> Hello {
    hello(Role::Backup, &sample_header(), 3, GroupName::NONE)
}

fn refuse_code(reply: HelloReply) -> RefuseCode {
    match reply {
        HelloReply::Refuse { code, .. } => code,
        HelloReply::Accept => panic!("expected a refusal"),
    }
}

#[test]
fn a_resume_reply_that_ends_before_it_starts_is_malformed() {
    let mut body = vec![0x85, 1];
    body.extend_from_slice(&10u64.to_le_bytes());
    body.extend_from_slice(&9u64.to_le_bytes());

    assert!(matches!(decode_err(&frame_with_body(&body)), CodecError::Malformed { .. }));
}

#[test]
fn attach_messages_with_unknown_kinds_or_bad_text_are_typed_errors() {
    assert!(matches!(decode_err(&frame_with_body(&[0x84, 0])), CodecError::UnknownTag { tag: 0, .. }));
    assert!(matches!(decode_err(&frame_with_body(&[0x84, 3])), CodecError::UnknownTag { tag: 3, .. }));
    assert!(matches!(decode_err(&frame_with_body(&[0x85, 9])), CodecError::UnknownTag { tag: 9, .. }));
    // A resume request cut short, and one with a byte too many.
    assert!(matches!(decode_err(&frame_with_body(&[0x84, 2, 1, 2, 3])), CodecError::Malformed { .. }));
    let mut long = vec![0x84, 1];
    long.push(0);
    assert!(matches!(decode_err(&frame_with_body(&long)), CodecError::Malformed { .. }));
    // A reason whose length says more than the frame holds, and one that is not UTF-8.
    let mut lying = vec![0x85, 2];
    lying.extend_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(decode_err(&frame_with_body(&lying)), CodecError::Malformed { .. }));
    let mut bad = vec![0x85, 3];
    bad.extend_from_slice(&2u32.to_le_bytes());
    bad.extend_from_slice(&[0xff, 0xfe]);
    assert!(matches!(decode_err(&frame_with_body(&bad)), CodecError::Malformed { .. }));
}

#[test]
fn refusal_with_text_round_trips() {
    let message = Message::HelloReply(HelloReply::Refuse {
        code: RefuseCode::StaleEpoch,
        reason: "epoch 2 < 3 — stand down".into(),
    });

    let (decoded, used) = decode(&encoded(&message)).unwrap().unwrap();

    assert_eq!(decoded, message);
    assert_eq!(used, encoded(&message).len());
}

#[test]
fn record_frame_is_not_a_channel_message_and_vice_versa() {
    let mut record_frame = Vec::new();
    codec::encode(&Record::Progress { exit_index: 1 }, &mut record_frame);
    let ack_frame = encoded(&Message::Ack(Ack { received_through: 1, replayed_through: 1 }));

    let as_message = decode_err(&record_frame);
    let as_record = codec::decode(&ack_frame).unwrap_err();

    assert!(matches!(as_message, CodecError::UnknownTag { what: "channel message", tag: 2 }));
    assert!(matches!(as_record, CodecError::UnknownTag { what: "record", tag: 0x83 }));
}

#[test]
fn invalid_role_is_rejected() {
    let mut body = encoded(&Message::Hello(primary()));
    body.truncate(body.len() - 4);
    let mut body = body.split_off(4);
    body[3] = 0;

    let err = decode_err(&frame_with_body(&body));

    assert!(matches!(err, CodecError::UnknownTag { what: "role", tag: 0 }));
}

#[test]
fn invalid_refuse_code_and_verdict_are_rejected() {
    let bad_code = frame_with_body(&[0x82, 2, 0, 0, 0, 0, 0]);
    let bad_verdict = frame_with_body(&[0x82, 0]);

    assert!(matches!(decode_err(&bad_code), CodecError::UnknownTag { what: "refuse code", tag: 0 }));
    assert!(matches!(decode_err(&bad_verdict), CodecError::UnknownTag { what: "hello reply verdict", tag: 0 }));
}

#[test]
fn refusal_text_that_is_not_utf8_is_malformed() {
    let err = decode_err(&frame_with_body(&[0x82, 2, 1, 2, 0, 0, 0, 0xff, 0xfe]));

    assert!(matches!(&err, CodecError::Malformed { what } if what.contains("UTF-8")), "{err}");
}

#[test]
fn refusal_text_longer_than_the_frame_is_malformed() {
    let err = decode_err(&frame_with_body(&[0x82, 2, 1, 0xff, 0xff, 0xff, 0xff, b'x']));

    assert!(matches!(err, CodecError::Malformed { .. }));
}

#[test]
fn ack_replaying_past_what_was_received_is_malformed() {
    let mut body = vec![0x83];
    body.extend_from_slice(&5u64.to_le_bytes());
    body.extend_from_slice(&6u64.to_le_bytes());

    let err = decode_err(&frame_with_body(&body));

    assert!(matches!(err, CodecError::Malformed { .. }));
}

#[test]
fn message_reader_reads_a_handshake_then_acks() {
    let conversation =
        [Message::HelloReply(HelloReply::Accept), Message::Ack(Ack { received_through: 9, replayed_through: 4 })];
    let mut bytes = Vec::new();
    for m in &conversation {
        encode(m, &mut bytes);
    }
    let mut reader = MessageReader::new(Cursor::new(bytes));

    assert_eq!(reader.next_message().unwrap().as_ref(), Some(&conversation[0]));
    assert_eq!(reader.next_message().unwrap().as_ref(), Some(&conversation[1]));
    assert!(reader.next_message().unwrap().is_none());
}

#[test]
fn matching_primary_and_backup_pair() {
    assert_eq!(primary().evaluate(&backup()), HelloReply::Accept);
    assert_eq!(backup().evaluate(&primary()), HelloReply::Accept);
}

#[test]
fn other_protocol_version_is_refused() {
    let peer = Hello { protocol_version: PROTOCOL_VERSION + 1, ..primary() };

    assert_eq!(refuse_code(peer.evaluate(&backup())), RefuseCode::VersionMismatch);
}

#[test]
fn a_peer_of_version_2_which_cannot_read_packed_frames_is_refused_and_told_why() {
    assert_eq!(PROTOCOL_VERSION, 3, "version 3 packs state transfers and resumed logs");
    let old = Hello { protocol_version: 2, ..backup() };
    // The primary reads the old backup's hello, and the old backup the primary's.
    let HelloReply::Refuse { code, reason } = old.evaluate(&primary()) else { panic!("a version 2 peer paired") };
    assert_eq!(code, RefuseCode::VersionMismatch);
    assert!(reason.contains("protocol version 2, this node speaks 3"), "{reason}");
    assert!(reason.contains("packs state transfers") && reason.contains("same ftvmm build"), "{reason}");
    assert_eq!(refuse_code(primary().evaluate(&old)), RefuseCode::VersionMismatch);
}

#[test]
fn two_primaries_are_refused() {
    assert_eq!(refuse_code(primary().evaluate(&primary())), RefuseCode::RoleConflict);
}

#[test]
fn different_machine_is_refused_naming_the_field() {
    let peer = Hello { mem_size: 1 << 30, ..primary() };

    let reply = peer.evaluate(&backup());

    assert!(
        matches!(&reply, HelloReply::Refuse { code: RefuseCode::MachineMismatch, reason }
        if reason.contains("memory size")),
        "{reply:?}"
    );
}

#[test]
fn peer_from_an_older_epoch_is_refused_and_a_newer_one_accepted() {
    let old = Hello { epoch: 2, ..primary() };
    let new = Hello { epoch: 4, ..primary() };

    assert_eq!(refuse_code(old.evaluate(&backup())), RefuseCode::StaleEpoch);
    assert_eq!(new.evaluate(&backup()), HelloReply::Accept);
}

#[test]
fn a_follower_that_names_another_group_is_refused_and_one_that_names_none_pairs() {
    let named = |name: &str| Hello { group: GroupName::new(name).expect("name"), ..backup() };
    assert_eq!(primary().evaluate(&named("10.77.0.10-0badc0de")), HelloReply::Accept);
    let reply = primary().evaluate(&named("prod-a"));
    assert!(
        matches!(&reply, HelloReply::Refuse { code: RefuseCode::GroupMismatch, reason } if reason.contains("prod-a")),
        "{reply:?}"
    );
    assert_eq!(refuse_code(named("prod-a").evaluate(&primary())), RefuseCode::GroupMismatch);
    assert_eq!(backup().evaluate(&primary()), HelloReply::Accept);
}

/// A hello body with `group` as its raw group-name field.
fn hello_with_raw_group(len: u8, group: &[u8]) -> Vec<u8> {
    let mut body = encoded(&Message::Hello(backup()));
    body.truncate(body.len() - 4); // the crc
    let mut body = body.split_off(4); // the length prefix
    body.pop(); // the empty group's length
    body.push(len);
    body.extend_from_slice(group);
    body
}

#[test]
fn a_hello_with_a_group_name_past_the_limit_or_not_a_name_is_malformed() {
    let longest = vec![b'a'; MAX_GROUP_NAME];
    let ok = decode(&frame_with_body(&hello_with_raw_group(MAX_GROUP_NAME as u8, &longest))).unwrap().unwrap();
    assert!(matches!(ok.0, Message::Hello(h) if h.group.as_str().len() == MAX_GROUP_NAME));
    let past = vec![b'a'; MAX_GROUP_NAME + 1];
    let err = decode_err(&frame_with_body(&hello_with_raw_group(MAX_GROUP_NAME as u8 + 1, &past)));
    assert!(matches!(&err, CodecError::Malformed { what } if what.contains("at most")), "{err}");
    for bad in [&b"../etc"[..], b"a/b", b"\xff\xfe", b"-x"] {
        let err = decode_err(&frame_with_body(&hello_with_raw_group(bad.len() as u8, bad)));
        assert!(matches!(err, CodecError::Malformed { .. }), "{bad:?}: {err}");
    }
    // A length that says more than the frame holds.
    assert!(matches!(decode_err(&frame_with_body(&hello_with_raw_group(9, b"abc"))), CodecError::Malformed { .. }));
}

proptest! {
    #[test]
    fn every_message_round_trips(message in arb_message()) {
        let buf = encoded(&message);

        let (decoded, used) = decode(&buf).unwrap().unwrap();

        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn every_strict_prefix_needs_more_bytes_or_is_truncated(message in arb_message()) {
        let buf = encoded(&message);
        for cut in 0..buf.len() {
            prop_assert!(decode(&buf[..cut]).unwrap().is_none());
            let end = MessageReader::new(Cursor::new(&buf[..cut])).next_message();
            if cut == 0 {
                prop_assert!(matches!(end, Ok(None)));
            } else {
                prop_assert!(matches!(end, Err(CodecError::Truncated)), "{:?}", end);
            }
        }
    }

    #[test]
    fn flipping_any_byte_is_an_error_never_another_message(
        message in arb_message(),
        mask in 1u8..=255,
    ) {
        let original = encoded(&message);
        for at in 0..original.len() {
            let mut buf = original.clone();
            buf[at] ^= mask;

            prop_assert!(!matches!(decode(&buf), Ok(Some(_))), "byte {}", at);
            prop_assert!(MessageReader::new(Cursor::new(&buf)).next_message().is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let mut reader = MessageReader::new(Cursor::new(&bytes));
        while let Ok(Some(_)) = reader.next_message() {}
    }

    #[test]
    fn random_payload_in_a_valid_frame_only_decodes_canonically(
        tag in 0x80u8..0x87,
        payload in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut body = vec![tag];
        body.extend_from_slice(&payload);
        let frame = frame_with_body(&body);

        if let Ok(Some((message, _))) = decode(&frame) {
            prop_assert_eq!(encoded(&message), frame);
        }
    }
}
