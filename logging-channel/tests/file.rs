mod common;

use std::io::Cursor;

use common::*;
use logging_channel::codec::encode;
use logging_channel::file::{FILE_VERSION, HEADER_LEN, MAX_CONFIG_LEN};
use logging_channel::{CodecError, Event, FileError, LogHeader, LogReader, LogWriter, Record};
use proptest::prelude::*;

fn write_log(header: &LogHeader, records: &[Record]) -> Vec<u8> {
    let mut writer = LogWriter::new(Vec::new(), header).unwrap();
    for r in records {
        writer.write(r).unwrap();
    }
    writer.flush().unwrap();
    writer.into_inner()
}

fn read_log(bytes: &[u8]) -> Result<(LogHeader, Vec<Record>, bool), FileError> {
    let (mut reader, header) = LogReader::open(Cursor::new(bytes))?;
    let mut records = Vec::new();
    while let Some(r) = reader.next_record()? {
        records.push(r);
    }
    Ok((header, records, reader.is_complete()))
}

fn open_err(bytes: &[u8]) -> FileError {
    match LogReader::open(Cursor::new(bytes)) {
        Err(e) => e,
        Ok((_, header)) => panic!("expected an error, opened {header:?}"),
    }
}

/// Rewrites header bytes and fixes up the checksum, to test checks past it.
fn with_valid_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
    bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn header_has_documented_layout() {
    let header = sample_header();

    let bytes = header.to_bytes();

    assert_eq!(&bytes[..8], b"FTVMMLOG");
    assert_eq!(bytes[8..10], FILE_VERSION.to_le_bytes());
    assert_eq!(bytes[10..12], [0, 0]);
    assert_eq!(bytes[12..44], header.guest_image_digest);
    assert_eq!(bytes[44..52], header.mem_size.to_le_bytes());
    assert_eq!(bytes[52..84], header.cpuid_digest);
    assert_eq!(bytes[84..88], header.tick_hz.to_le_bytes());
    assert_eq!(bytes[88..92], crc32fast::hash(&bytes[..88]).to_le_bytes());
}

#[test]
fn log_with_network_frames_round_trips() {
    let records = vec![
        Record::Entry {
            exit_index: 10,
            sig: sample_sig(),
            events: vec![Event::DeviceInput { device: 1, bytes: b"\x00\x11\x22 frame".to_vec() }],
        },
        Record::Progress { exit_index: 12 },
    ];

    let (header, read, complete) = read_log(&write_log(&sample_header(), &records)).unwrap();

    assert_eq!(header, sample_header());
    assert_eq!(read, records);
    assert!(!complete, "no End record was written");
}

#[test]
fn bad_magic_is_not_a_log() {
    let mut bytes = write_log(&sample_header(), &[]);
    bytes[0] = b'X';

    assert!(matches!(open_err(&bytes), FileError::NotALog));
    assert!(matches!(open_err(b"hello"), FileError::NotALog));
    assert!(open_err(b"#!/bin/sh\n").to_string().contains("not an ftvmm log"));
}

#[test]
fn other_version_is_unsupported() {
    let mut bytes = write_log(&sample_header(), &[]);
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());

    let err = open_err(&with_valid_crc(bytes));

    assert!(matches!(err, FileError::UnsupportedVersion { found: 3, supported: 2 }), "{err}");
    assert!(err.to_string().contains("versions 1 to 2"), "{err}");
}

/// A version 2 header with an empty guest configuration block.
fn header_bytes() -> Vec<u8> {
    let mut bytes = sample_header().to_bytes().to_vec();
    bytes.extend_from_slice(&[0; 8]);
    bytes
}

#[test]
fn the_guest_configuration_round_trips_and_a_version_1_log_has_none() {
    let config = b"--guest-ip=10.77.0.10/24\n--workload=kv-server\n";
    let mut w = LogWriter::with_config(Vec::new(), &sample_header(), config).unwrap();
    w.write(&entry(3)).unwrap();
    let bytes = w.into_inner();
    let (mut reader, header) = LogReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!((header, reader.config()), (sample_header(), Some(&config[..])));
    assert_eq!(reader.next_record().unwrap(), Some(entry(3)));

    // What an ftvmm of version 1 wrote: no block after the header.
    let mut old = with_valid_crc({
        let mut b = sample_header().to_bytes().to_vec();
        b[8..10].copy_from_slice(&logging_channel::file::FILE_VERSION_1.to_le_bytes());
        b
    });
    encode(&entry(3), &mut old);
    let (mut reader, _) = LogReader::open(Cursor::new(&old)).unwrap();
    assert_eq!(reader.config(), None);
    assert_eq!(reader.next_record().unwrap(), Some(entry(3)));
}

#[test]
fn a_configuration_past_the_limit_is_refused_by_writer_and_reader() {
    let at_limit = vec![b'x'; MAX_CONFIG_LEN];
    assert!(LogWriter::with_config(Vec::new(), &sample_header(), &at_limit).is_ok());
    let over = vec![b'x'; MAX_CONFIG_LEN + 1];
    assert!(LogWriter::with_config(Vec::new(), &sample_header(), &over).is_err());
    let mut bytes = sample_header().to_bytes().to_vec();
    bytes.extend_from_slice(&((MAX_CONFIG_LEN + 1) as u32).to_le_bytes());
    let err = open_err(&bytes);
    assert!(matches!(err, FileError::ConfigTooLarge { .. }), "{err}");
}

#[test]
fn a_corrupt_or_truncated_configuration_is_reported() {
    let bytes = LogWriter::with_config(Vec::new(), &sample_header(), b"--mac=52:54:00:00:00:01").unwrap().into_inner();
    let mut corrupt = bytes.clone();
    corrupt[HEADER_LEN + 6] ^= 1;
    assert!(matches!(open_err(&corrupt), FileError::ConfigChecksum));
    for len in HEADER_LEN..bytes.len() {
        let err = open_err(&bytes[..len]);
        assert!(matches!(err, FileError::Truncated { part: "guest configuration" }), "len {len}: {err}");
    }
}

#[test]
fn any_corrupt_header_byte_past_the_version_fails_the_checksum() {
    let clean = write_log(&sample_header(), &[]);
    for at in 10..HEADER_LEN {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;

        let err = open_err(&bytes);

        assert!(matches!(err, FileError::HeaderChecksum), "byte {at}: {err}");
    }
}

#[test]
fn nonzero_reserved_field_is_rejected() {
    let mut bytes = write_log(&sample_header(), &[]);
    bytes[10] = 1;

    let err = open_err(&with_valid_crc(bytes));

    assert!(matches!(err, FileError::ReservedNotZero { value: 1 }));
}

#[test]
fn short_header_is_truncated() {
    let bytes = write_log(&sample_header(), &[]);
    for len in 0..HEADER_LEN {
        let err = open_err(&bytes[..len]);

        assert!(matches!(err, FileError::Truncated { part: "header" }), "len {len}: {err}");
    }
}

#[test]
fn header_only_log_is_empty_but_valid() {
    let (_, records, complete) = read_log(&write_log(&sample_header(), &[])).unwrap();

    assert!(records.is_empty());
    assert!(!complete);
}

#[test]
fn log_ending_inside_its_last_record_is_truncated() {
    let bytes = write_log(&sample_header(), &[entry(1), entry(2)]);

    let err = read_log(&bytes[..bytes.len() - 1]).unwrap_err();

    assert!(matches!(err, FileError::Truncated { part: "last record" }), "{err}");
}

#[test]
fn out_of_order_entries_in_a_file_are_rejected() {
    let mut bytes = header_bytes();
    encode(&entry(5), &mut bytes);
    encode(&entry(4), &mut bytes);

    let err = read_log(&bytes).unwrap_err();

    assert!(matches!(err, FileError::Codec(CodecError::OutOfOrder { exit_index: 4, .. })));
}

#[test]
fn writer_refuses_out_of_order_and_invalid_records_without_writing() {
    let mut writer = LogWriter::new(Vec::new(), &sample_header()).unwrap();
    writer.write(&entry(5)).unwrap();
    let len_before = writer.get_ref().len();
    let empty_entry = Record::Entry { exit_index: 9, sig: sample_sig(), events: vec![] };

    let backwards = writer.write(&entry(3));
    let empty = writer.write(&empty_entry);

    assert!(matches!(backwards, Err(FileError::Codec(CodecError::OutOfOrder { .. }))));
    assert!(matches!(empty, Err(FileError::Codec(CodecError::Malformed { .. }))));
    assert_eq!(writer.get_ref().len(), len_before);
}

#[test]
fn matching_headers_check_ok() {
    assert!(sample_header().check_matches(&sample_header()).is_ok());
}

#[test]
fn each_mismatched_field_is_named() {
    let recorded = sample_header();
    let cases: [(LogHeader, &str, &str); 4] = [
        (LogHeader { guest_image_digest: [0xef; 32], ..recorded }, "guest image digest", "--kernel"),
        (LogHeader { mem_size: 128 << 20, ..recorded }, "memory size", "memory size"),
        (LogHeader { cpuid_digest: [0; 32], ..recorded }, "CPUID table digest", "CPUID"),
        (LogHeader { tick_hz: 1000, ..recorded }, "tick rate", "tick rate"),
    ];
    for (expected, field, hint) in cases {
        let err = recorded.check_matches(&expected).unwrap_err();

        let msg = err.to_string();
        assert!(matches!(err, FileError::Mismatch { field: f, .. } if f == field), "{msg}");
        assert!(msg.contains(hint), "{msg}");
    }
}

#[test]
fn digest_mismatch_message_shows_shortened_digests() {
    let expected = LogHeader { guest_image_digest: [0xef; 32], ..sample_header() };

    let msg = sample_header().check_matches(&expected).unwrap_err().to_string();

    assert_eq!(
        msg,
        "log was recorded with another guest image digest (abababab.. vs efefefef..); \
         replay it with the same ftvmm build / --kernel"
    );
}

#[test]
fn digests_sharing_a_prefix_are_shown_in_full() {
    let mut other = sample_header();
    other.cpuid_digest[31] = 0;

    let err = sample_header().check_matches(&other).unwrap_err();

    assert!(matches!(err, FileError::Mismatch { recorded, .. } if recorded.len() == 64));
}

proptest! {
    #[test]
    fn any_log_round_trips_through_writer_and_reader(header in arb_header(), records in arb_log()) {
        let bytes = write_log(&header, &records);

        let (read_header, read, complete) = read_log(&bytes).unwrap();

        prop_assert_eq!(read_header, header);
        prop_assert_eq!(complete, matches!(records.last(), Some(Record::End { .. })));
        prop_assert_eq!(read, records);
    }

    #[test]
    fn random_bytes_never_panic_the_log_reader(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = read_log(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        let mut bytes = header_bytes();
        bytes.extend_from_slice(&tail);

        let _ = read_log(&bytes);
    }
}
