use super::*;
use crate::codec;
use crate::record::{Event, ExitKind, ExitSig, Record};
use crate::state::{self, StateMessage, StateReader, PAGE_SIZE};

/// Timer-tick-like entries: what an idle guest logs.
fn ticks(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let sig =
            ExitSig { kind: ExitKind::Hlt, addr: 0, data: i % 3, regs_hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15) };
        codec::encode(
            &Record::Entry { exit_index: 100 + i * 7, sig, events: vec![Event::Interrupt { vector: 32 }] },
            &mut out,
        );
        codec::encode(&Record::Progress { exit_index: 100 + i * 7 + 3 }, &mut out);
    }
    out
}

fn packed_frame(codec: u8, raw_len: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::codec::frame::write_frame(&mut out, |b| {
        b.extend_from_slice(&[TAG, codec]);
        b.extend_from_slice(&raw_len.to_le_bytes());
        b.extend_from_slice(data);
    });
    out
}

fn body(frame: &[u8]) -> &[u8] {
    &frame[LEN_BYTES..frame.len() - CRC_BYTES]
}

#[test]
fn records_pack_smaller_and_unpack_to_the_same_bytes() {
    let raw = ticks(2000);
    let mut wire = Vec::new();
    let n = pack(&raw, &mut wire);
    assert_eq!(n, wire.len());
    // Each entry carries 12 bytes that never repeat (its registers hash and CRC) of 65.
    assert!(wire.len() * 2 < raw.len(), "{} of {} bytes: tick records are repetitive", wire.len(), raw.len());
    let (frames, used) = split_packed(&wire).expect("valid").expect("whole");
    assert_eq!((frames, used), (raw, wire.len()));
    assert!(split_packed(&wire[..wire.len() - 1]).expect("a prefix is not an error").is_none());
}

#[test]
fn more_than_max_packed_raw_goes_in_several_frames_and_incompressible_data_as_it_was() {
    // 3 full page frames of 255 pages each: ~3 MiB, over MAX_PACKED_RAW.
    let mut raw = Vec::new();
    for f in 0..3u64 {
        let data: Vec<u8> = (0..255 * PAGE_SIZE).map(|i| (i as u64 * 31 + f) as u8 & 0x0f).collect();
        state::encode(&StateMessage::Pages { first_page: f * 255, data }, &mut raw);
    }
    let mut wire = Vec::new();
    pack(&raw, &mut wire);
    let mut unpacked = Vec::new();
    let mut rest = wire.as_slice();
    let mut frames = 0;
    while let Some((inner, used)) = split_packed(rest).expect("valid") {
        assert!(inner.len() <= MAX_PACKED_RAW);
        unpacked.extend_from_slice(&inner);
        rest = &rest[used..];
        frames += 1;
    }
    assert!(rest.is_empty() && frames >= 2, "{frames} packed frames");
    assert_eq!(unpacked, raw);

    // Random bytes do not shrink: they go as they were, still whole frames.
    let mut x = 0x1234_5678_9abc_def0u64;
    let noise: Vec<u8> = (0..8 * PAGE_SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut raw = Vec::new();
    state::encode(&StateMessage::Pages { first_page: 1, data: noise }, &mut raw);
    let mut wire = Vec::new();
    pack(&raw, &mut wire);
    assert_eq!(wire, raw);
}

#[test]
fn a_state_reader_reads_packed_and_plain_frames_alike() {
    let messages = vec![
        StateMessage::Begin { exit_index: 9, epoch: 2, mem_size: 1 << 20 },
        StateMessage::Pages { first_page: 3, data: vec![7; 4 * PAGE_SIZE] },
        StateMessage::Zero { first_page: 9, count: 2 },
        StateMessage::End { exit_index: 12, state_digest: [3; 32] },
    ];
    let mut raw = Vec::new();
    for m in &messages[..3] {
        state::encode(m, &mut raw);
    }
    let mut wire = Vec::new();
    pack(&raw, &mut wire);
    assert!(is_packed(&wire));
    state::encode(&messages[3], &mut wire);
    let mut reader = StateReader::new(wire.as_slice());
    let mut back = Vec::new();
    while let Some(m) = reader.next_message().expect("reads") {
        back.push(m);
    }
    assert_eq!(back, messages);
}

#[test]
fn a_decompression_bomb_or_a_length_past_max_packed_raw_is_refused() {
    // 4 MiB of zeros compress to a few hundred bytes; the frame says MAX_PACKED_RAW.
    let bomb = zstd::bulk::compress(&vec![0u8; 2 * MAX_PACKED_RAW], 1).expect("compress");
    let f = packed_frame(CODEC_ZSTD, MAX_PACKED_RAW as u32, &bomb);
    let err = unpack(body(&f)).unwrap_err();
    assert!(matches!(err, PackError::Corrupt { .. }), "{err}");
    // Exactly MAX_PACKED_RAW is allowed (and is not frames: refused for that), one more is not.
    let max = zstd::bulk::compress(&vec![0u8; MAX_PACKED_RAW], 1).expect("compress");
    let err = unpack(body(&packed_frame(CODEC_ZSTD, MAX_PACKED_RAW as u32, &max))).unwrap_err();
    assert!(matches!(err, PackError::NotFrames(_)), "{err}");
    let err = unpack(body(&packed_frame(CODEC_ZSTD, MAX_PACKED_RAW as u32 + 1, &max))).unwrap_err();
    assert!(matches!(err, PackError::BadLength(_)), "{err}");
    let err = unpack(body(&packed_frame(CODEC_ZSTD, u32::MAX, &max))).unwrap_err();
    assert!(err.to_string().contains("claims 4294967295 bytes"), "{err}");
    assert!(matches!(unpack(body(&packed_frame(CODEC_ZSTD, 0, &max))), Err(PackError::BadLength(0))));
}

#[test]
fn a_window_past_window_log_max_is_refused() {
    // A frame compressed with a 4 MiB window needs a window buffer of that size: the
    // decoder must refuse it rather than allocate it.
    let raw = ticks(60_000);
    assert!(raw.len() > MAX_PACKED_RAW);
    // A streaming encoder that is told no size keeps the window it is given.
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
    e.window_log(WINDOW_LOG_MAX + 1).expect("window");
    e.include_contentsize(false).expect("flag");
    std::io::Write::write_all(&mut e, &raw[..MAX_PACKED_RAW - 100]).expect("compress");
    let data = e.finish().expect("finish");
    let err = unpack(body(&packed_frame(CODEC_ZSTD, (MAX_PACKED_RAW - 100) as u32, &data))).unwrap_err();
    assert!(matches!(err, PackError::Corrupt { .. }), "{err}");
}

#[test]
fn truncated_corrupt_short_or_foreign_packed_frames_are_refused() {
    let raw = ticks(100);
    let data = zstd::bulk::compress(&raw, 1).expect("compress");
    let good = packed_frame(CODEC_ZSTD, raw.len() as u32, &data);
    assert_eq!(unpack(body(&good)).expect("good"), raw);
    let cut = packed_frame(CODEC_ZSTD, raw.len() as u32, &data[..data.len() - 5]);
    assert!(matches!(unpack(body(&cut)), Err(PackError::Corrupt { .. } | PackError::WrongLength { .. })));
    let mut flipped = data.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    // A flipped bit either fails zstd's own checks or unpacks to other bytes, which are
    // then not whole frames or fail their CRC when decoded: never a panic.
    if let Ok(bytes) = unpack(body(&packed_frame(CODEC_ZSTD, raw.len() as u32, &flipped))) {
        let mut rest = bytes.as_slice();
        let mut failed = false;
        while !rest.is_empty() {
            match codec::decode(rest) {
                Ok(Some((_, n))) => rest = &rest[n..],
                _ => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed || bytes != raw, "a corrupted frame decoded to the original");
    }
    let long = packed_frame(CODEC_ZSTD, raw.len() as u32 + 1, &data);
    assert!(matches!(unpack(body(&long)), Err(PackError::WrongLength { .. })), "fewer bytes than it says");
    assert!(matches!(unpack(body(&packed_frame(2, raw.len() as u32, &data))), Err(PackError::UnknownCodec(2))));
    assert!(matches!(unpack(&[TAG, CODEC_ZSTD, 1]), Err(PackError::Short)));
    assert!(matches!(unpack(&[0x92, 1, 1, 0, 0, 0]), Err(PackError::NotPacked(_))));
}

#[test]
fn contents_that_are_not_whole_frames_or_hold_a_packed_frame_are_refused() {
    let raw = ticks(10);
    let cut = &raw[..raw.len() - 3];
    let f = packed_frame(CODEC_ZSTD, cut.len() as u32, &zstd::bulk::compress(cut, 1).expect("compress"));
    assert!(matches!(unpack(body(&f)), Err(PackError::NotFrames(_))));
    let inner = packed_frame(CODEC_ZSTD, raw.len() as u32, &zstd::bulk::compress(&raw, 1).expect("compress"));
    let nested = packed_frame(CODEC_ZSTD, inner.len() as u32, &zstd::bulk::compress(&inner, 1).expect("compress"));
    let err = unpack(body(&nested)).unwrap_err();
    assert!(err.to_string().contains("inside another"), "{err}");
}

proptest::proptest! {
    #[test]
    fn unpacking_arbitrary_bytes_never_panics(codec in 0u8..3, raw_len in 0u32..(3 << 20), data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = unpack(body(&packed_frame(codec, raw_len, &data)));
        let _ = split_packed(&data);
        let mut reader = StateReader::new(data.as_slice());
        while let Ok(Some(_)) = reader.next_message() {}
    }
}
