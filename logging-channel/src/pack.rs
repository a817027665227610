//! Packed frames: a run of whole frames compressed into one frame, for what a
//! rejoining follower is sent in bulk — a state transfer's pages (`state`) and the
//! records a resume sends from the backlog. The live log stream is never packed:
//! a record waits for nothing before it goes (its latency is the Output Rule's),
//! and neither are files (a log or checkpoint on disk is read by `ftvmm replay`
//! and older builds as it is).
//!
//! ```text
//!  0xA0 Packed  codec u8 (1 = zstd) | raw_len u32 (1..=MAX_PACKED_RAW) | compressed bytes (the rest)
//!
//!  sender:   whole frames f1 .. fn (none packed), at most MAX_PACKED_RAW bytes
//!              --zstd, level ZSTD_LEVEL--> Packed{raw_len = |f1 .. fn|}
//!            or f1 .. fn as they were, where compressing does not shrink them or
//!            the result would not fit a frame (MAX_FRAME_LEN)
//!  receiver: Packed --codec known, 1 <= raw_len <= MAX_PACKED_RAW-->
//!              decompress into a buffer of raw_len bytes (never more)
//!              --> exactly raw_len bytes, whole frames, none packed
//!              --> each decoded (its CRC checked) as if it had come alone
//! ```
//!
//! A hostile or corrupt packed frame costs the receiver at most a buffer of what
//! it really unpacks to, never more than `raw_len` <= [`MAX_PACKED_RAW`] bytes, and
//! a decoding time linear in that: output past `raw_len` (a decompression bomb)
//! stops the decoder with an error, as do a short output, a truncated or corrupt
//! stream, and a window larger than `2^WINDOW_LOG_MAX` (zstd's own buffer). What it
//! unpacks to is checked again by whoever decodes it (every frame's CRC), and a
//! state transfer still ends with the whole-state digest. Both peers pack only at
//! `PROTOCOL_VERSION` 3 and up: the handshake refuses a peer of another version
//! before anything is sent.
//!
//! Compressing before TLS encrypts lets the size of what goes out depend on the
//! contents (the CRIME/BREACH kind of side channel): someone who both sees the
//! encrypted connection and puts chosen bytes into the guest's memory could learn
//! something of other memory from a transfer's length. It gets one measurement per
//! state transfer or resume (a rejoin), not per request, and the live log stream,
//! which goes out at every exit, is never packed.
//!
//! # Why zstd, level 1
//!
//! Measured on this machine (2 cores shared with other work, load average ~8; the
//! second of two runs, times the best of 5 and still noisy) on what the rejoin
//! benchmark moves (`scripts/bench-rejoin.sh`), cut into the 1 MiB batches a state
//! transfer's wire flushes: a follower's log of an idle guest (timer ticks, what an
//! idle resume sends), its log under INCR load (a loaded resume), a full checkpoint
//! (every non-zero page: a full copy) and an incremental one taken under INCR load
//! (the ~280 pages the guest rewrote in 2 s: what a diff transfer after an outage
//! under load sends). Packed size / raw, and ms per MiB of frames to compress /
//! decompress (`cargo run --release -p logging-channel --example pack-ratio -- FILE...`):
//!
//! ```text
//!                        raw bytes   zstd -1              zstd -3              lz4 (lz4_flex)
//!   idle log               329497    22.4 %  1.6 / 0.5    20.5 %  2.8 / 0.5    34.7 %  1.1 / 0.2
//!   log under load        1189150    23.9 %  1.5 / 0.6    21.6 %  6.5 / 0.6    34.9 %  1.2 / 0.3
//!   all non-zero pages    1606859    11.5 %  0.8 / 0.2    10.4 %  1.3 / 0.3    14.9 %  0.5 / 0.2
//!   pages rewritten       1160227     1.0 %  0.2 / 0.1     0.9 %  0.3 / 0.1     1.7 %  0.1 / 0.1
//! ```
//!
//! The pages the guest rewrites under load pack to 1 %: a delta against the joiner's
//! copy (block hashes, rsync-style, another round trip while the guest may be paused)
//! could save at most that 1 % of the ~74 % of a full copy they are, ~0.7 points of
//! a full copy, so it was not built.
//! zstd -1 leaves a third less than lz4 of the logs (which a resume sends) at about
//! the same speed, and -3 buys 1–2 points for two to four times the time: zstd -1,
//! ~1.5 ms per MiB, so packing a whole 1.6 MB state costs a stop-and-copy's pause ~1 ms.
use crate::codec::frame::{CRC_BYTES, LEN_BYTES};
use crate::codec::CodecError;
use crate::MAX_FRAME_LEN;
use std::io::Read;

/// The packed frame's tag: outside the ranges of records (1..), channel messages
/// (0x81..) and state messages (0x91..).
pub const TAG: u8 = 0xA0;
/// The codec byte of a zstd frame (the only one so far; 0 is never valid).
pub const CODEC_ZSTD: u8 = 1;
/// The most one packed frame unpacks to: the receiver's buffer for it.
pub const MAX_PACKED_RAW: usize = 2 << 20;
/// The largest zstd window the receiver accepts (2^21 = MAX_PACKED_RAW): the
/// sender compresses at most that much at a time, so never needs more.
pub const WINDOW_LOG_MAX: u32 = 21;
/// zstd's fastest standard level: the pages and logs here compress well enough at
/// it, and a stop-and-copy's pause includes the compression.
pub const ZSTD_LEVEL: i32 = 1;
/// tag | codec | raw_len: the bytes of a packed frame's body before its data.
const HEAD: usize = 1 + 1 + 4;

/// Why a packed frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("a packed frame is too short for its header (tag, codec, length): it is corrupt")]
    Short,
    #[error("not a packed frame (tag {0:#04x})")]
    NotPacked(u8),
    #[error(
        "packed frame uses codec {0}, which this build does not know (1 = zstd): run the same ftvmm on every member"
    )]
    UnknownCodec(u8),
    #[error("packed frame claims {0} bytes unpacked (1..={MAX_PACKED_RAW}): corrupt, or a peer of another protocol")]
    BadLength(u64),
    #[error("packed frame does not decompress into its {raw_len} bytes: {why} (corrupt, truncated, or a decompression bomb)")]
    Corrupt { raw_len: usize, why: String },
    #[error("packed frame unpacks to {got} bytes, but says {raw_len}: it is corrupt")]
    WrongLength { raw_len: usize, got: usize },
    #[error("packed frame's contents are not whole frames: {0}")]
    NotFrames(String),
    #[error("the zstd library could not make a decoder: {0}")]
    Decoder(String),
}

/// Appends `frames` (whole frames, none packed, as the crate's encoders write them)
/// to `out`, compressed into packed frames of at most [`MAX_PACKED_RAW`] bytes each
/// where that makes them smaller, as they are elsewhere. Returns the bytes appended.
pub fn pack(frames: &[u8], out: &mut Vec<u8>) -> usize {
    let before = out.len();
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
    let mut rest = frames;
    while !rest.is_empty() {
        let chunk = whole_frames(rest);
        if chunk == 0 {
            // Not a whole frame (no encoder here writes that): it goes as it is.
            out.extend_from_slice(rest);
            break;
        }
        let (now, later) = rest.split_at(chunk);
        let packed = compressor.as_mut().and_then(|c| c.compress(now).ok());
        match packed {
            // The frame's body must fit MAX_FRAME_LEN, and be worth its header.
            Some(data)
                if HEAD + data.len() <= MAX_FRAME_LEN && data.len() + HEAD + LEN_BYTES + CRC_BYTES < now.len() =>
            {
                crate::codec::frame::write_frame(out, |b| {
                    b.push(TAG);
                    b.push(CODEC_ZSTD);
                    b.extend_from_slice(&(now.len() as u32).to_le_bytes());
                    b.extend_from_slice(&data);
                });
            }
            _ => out.extend_from_slice(now),
        }
        rest = later;
    }
    out.len() - before
}

/// The length of the longest run of whole frames at the front of `buf` that fits
/// [`MAX_PACKED_RAW`] (at least one frame, if `buf` starts with a whole one: a frame
/// is at most `MAX_FRAME_LEN` + 8 bytes).
fn whole_frames(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some(len) = frame_len(&buf[at..]) {
        if at + len > MAX_PACKED_RAW {
            break;
        }
        at += len;
    }
    at
}

/// The whole length of the frame at the front of `buf`, if `buf` holds all of it and
/// its length prefix is one the codec accepts (not empty, at most `MAX_FRAME_LEN`).
fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = crate::codec::frame::check_len(u32::from_le_bytes(*buf.first_chunk::<LEN_BYTES>()?)).ok()?;
    let whole = LEN_BYTES.checked_add(len)?.checked_add(CRC_BYTES)?;
    (whole <= buf.len()).then_some(whole)
}

/// Whether the frame at the front of `buf` is a packed one (by its tag; its length and
/// checksum are checked when it is split off).
pub fn is_packed(buf: &[u8]) -> bool {
    buf.get(LEN_BYTES) == Some(&TAG)
}

/// If the frame at the front of `buf` is packed and whole: the frames it holds, and
/// the bytes of `buf` it took. `Ok(None)` if `buf` holds only part of it, or if it is
/// not packed (see [`is_packed`]).
pub fn split_packed(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, CodecError> {
    if !is_packed(buf) {
        return Ok(None);
    }
    let Some((body, used)) = crate::codec::frame::split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some((unpack(body)?, used)))
}

/// Unpacks a packed frame's body (tag and payload, its CRC already checked): the
/// frames it holds, exactly `raw_len` bytes of whole frames, none of them packed.
pub fn unpack(body: &[u8]) -> Result<Vec<u8>, PackError> {
    let (head, data) = body.split_first_chunk::<HEAD>().ok_or(PackError::Short)?;
    if head[0] != TAG {
        return Err(PackError::NotPacked(head[0]));
    }
    if head[1] != CODEC_ZSTD {
        return Err(PackError::UnknownCodec(head[1]));
    }
    let raw_len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
    if raw_len == 0 || raw_len > MAX_PACKED_RAW {
        return Err(PackError::BadLength(raw_len as u64));
    }
    let out = decompress(data, raw_len)?;
    check_frames(&out)?;
    Ok(out)
}

/// Decompresses `data` into at most `raw_len` bytes: exactly `raw_len`, or an error.
/// The buffer grows only as output comes (never past `raw_len`, whatever the frame
/// claims), so a small corrupt frame costs little; a bomb stops at `raw_len`.
fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, PackError> {
    let corrupt = |why: String| PackError::Corrupt { raw_len, why };
    let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| PackError::Decoder(e.to_string()))?;
    d.window_log_max(WINDOW_LOG_MAX).map_err(|e| PackError::Decoder(e.to_string()))?;
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; STEP];
    loop {
        let n = match d.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if out.len() + n > raw_len {
            return Err(corrupt(format!("it unpacks to more than {raw_len} bytes")));
        }
        if out.capacity() < out.len() + n {
            // Doubling, capped at raw_len: at most raw_len bytes are ever held.
            let want = (out.len() * 2).max(out.len() + n).min(raw_len);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.len() != raw_len {
        return Err(PackError::WrongLength { raw_len, got: out.len() });
    }
    Ok(out)
}

/// Output taken from the decoder at a time.
const STEP: usize = 64 << 10;

/// `buf` is whole frames, none of them packed (their contents are checked when decoded).
fn check_frames(buf: &[u8]) -> Result<(), PackError> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let len = frame_len(rest).ok_or_else(|| {
            PackError::NotFrames(format!("the bytes at offset {at} of {} are not a whole frame", buf.len()))
        })?;
        if is_packed(rest) {
            return Err(PackError::NotFrames(format!("a packed frame inside another at offset {at}")));
        }
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
