mod common;

use std::io::Cursor;

use common::*;
use logging_channel::codec::{decode, encode, validate};
use logging_channel::{EndReason, Event, ExitKind, ExitSig, Record, RecordReader};
use proptest::prelude::*;

fn round_trip(record: &Record) -> Record {
    let mut buf = Vec::new();
    encode(record, &mut buf);
    let (decoded, consumed) = decode(&buf).expect("valid frame").expect("complete frame");
    assert_eq!(consumed, buf.len());
    decoded
}

#[test]
fn entry_with_device_input_round_trips() {
    let record = Record::Entry {
        exit_index: 42,
        sig: ExitSig { kind: ExitKind::MmioRead, addr: 0xfeb0_0000, data: 7, regs_hash: 99 },
        events: vec![Event::DeviceInput { device: 1, bytes: vec![0xff; 1514] }, Event::Interrupt { vector: 33 }],
    };

    let decoded = round_trip(&record);

    assert_eq!(decoded, record);
}

#[test]
fn end_without_state_digest_round_trips() {
    let record = Record::End { exit_index: u64::MAX, reason: EndReason::GuestExit, state_digest: None };

    assert_eq!(round_trip(&record), record);
}

#[test]
fn progress_frame_has_documented_layout() {
    let mut buf = Vec::new();

    encode(&Record::Progress { exit_index: 0x0102 }, &mut buf);

    let body = [2, 0x02, 0x01, 0, 0, 0, 0, 0, 0];
    let mut expected = vec![9, 0, 0, 0];
    expected.extend_from_slice(&body);
    expected.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    assert_eq!(buf, expected);
}

#[test]
fn device_input_at_the_frame_limit_round_trips() {
    // tag + index + sig + count + event header (tag, device, len)
    let overhead = 1 + 8 + 25 + 4 + 1 + 2 + 4;
    let record = Record::Entry {
        exit_index: 1,
        sig: sample_sig(),
        events: vec![Event::DeviceInput { device: 0, bytes: vec![7; logging_channel::MAX_FRAME_LEN - overhead] }],
    };

    assert!(validate(&record).is_ok());
    assert_eq!(round_trip(&record), record);
}

proptest! {
    #[test]
    fn every_record_variant_round_trips(record in arb_record()) {
        prop_assert!(validate(&record).is_ok());

        let decoded = round_trip(&record);

        prop_assert_eq!(decoded, record);
    }

    #[test]
    fn concatenated_frames_decode_in_order(records in prop::collection::vec(arb_record(), 0..8)) {
        let buf = encode_all(&records);

        let mut decoded = Vec::new();
        let mut rest = &buf[..];
        while let Some((record, used)) = decode(rest).unwrap() {
            decoded.push(record);
            rest = &rest[used..];
        }

        prop_assert!(rest.is_empty());
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn record_reader_reads_back_every_record(records in prop::collection::vec(arb_record(), 0..8)) {
        let mut reader = RecordReader::new(Cursor::new(encode_all(&records)));

        let mut decoded = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            decoded.push(record);
        }

        prop_assert_eq!(decoded, records);
    }
}
