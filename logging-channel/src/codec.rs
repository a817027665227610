//! Wire encoding of [`Record`]s: framing, streaming decode, and the ordering
//! rules a log must obey. See the crate docs for the byte layout.

pub(crate) mod frame;
mod sequencer;

use std::io::Read;

pub use sequencer::Sequencer;

use crate::record::{DigestScope, EndReason, Event, ExitKind, ExitSig, Record};
use crate::MAX_FRAME_LEN;
use frame::Cursor;

/// Everything that can be wrong with a stream of frames.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("log stream is truncated: it ends in the middle of a frame")]
    Truncated,
    #[error(
        "frame length {len} exceeds the maximum of {MAX_FRAME_LEN} bytes \
         (corrupt length prefix, or a peer speaking another protocol)"
    )]
    FrameTooLarge { len: u64 },
    #[error("frame has length 0, but every frame carries at least a tag byte")]
    EmptyFrame,
    /// `expected` is the checksum carried by the frame, `found` the one
    /// computed over the bytes received.
    #[error(
        "frame checksum mismatch: frame carries crc32 {expected:#010x} but its contents \
         hash to {found:#010x} (corrupted in transit or on disk)"
    )]
    BadChecksum { expected: u32, found: u32 },
    #[error("unknown {what} tag {tag} (0 is never valid; corrupt data or a newer peer?)")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("malformed frame: {what}")]
    Malformed { what: String },
    #[error("out-of-order log: {record} at exit {exit_index} after exit {previous}: {rule}")]
    OutOfOrder { record: &'static str, exit_index: u64, previous: u64, rule: &'static str },
    #[error(transparent)]
    Packed(#[from] crate::pack::PackError),
    #[error("I/O error on log stream: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) mod tag {
    pub const ENTRY: u8 = 1;
    pub const PROGRESS: u8 = 2;
    pub const DIGEST: u8 = 3;
    pub const RELEASED: u8 = 4;
    pub const END: u8 = 5;
    pub const STANDING: u8 = 6;

    pub const EVENT_INTERRUPT: u8 = 1;
    pub const EVENT_DEVICE_INPUT: u8 = 2;
}

/// Bytes of an [`ExitSig`] on the wire: kind, addr, data, regs_hash.
const SIG_LEN: usize = 1 + 8 + 8 + 8;
/// The smallest event (an interrupt: tag + vector); bounds event counts.
const MIN_EVENT_LEN: usize = 2;

/// Appends one frame holding `record` to `out`.
///
/// Encoding never fails. A record that [`validate`] rejects (an entry with no
/// events, an `Invalid` discriminant, a frame over [`MAX_FRAME_LEN`]) is still
/// written as is, and [`decode`] then rejects it with the same error;
/// [`crate::file::LogWriter`] validates before writing so a log file never
/// holds such a record.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    frame::write_frame(out, |b| encode_body(record, b));
}

fn put_u32_len(out: &mut Vec<u8>, n: usize) {
    // Saturation only happens for bodies far beyond MAX_FRAME_LEN, which the
    // decoder rejects by frame length anyway.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn encode_body(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Entry { exit_index, sig, events } => {
            out.push(tag::ENTRY);
            out.extend_from_slice(&exit_index.to_le_bytes());
            out.push(sig.kind as u8);
            out.extend_from_slice(&sig.addr.to_le_bytes());
            out.extend_from_slice(&sig.data.to_le_bytes());
            out.extend_from_slice(&sig.regs_hash.to_le_bytes());
            put_u32_len(out, events.len());
            for event in events {
                encode_event(event, out);
            }
        }
        Record::Progress { exit_index } => {
            out.push(tag::PROGRESS);
            out.extend_from_slice(&exit_index.to_le_bytes());
        }
        Record::Digest { exit_index, scope, hash } => {
            out.push(tag::DIGEST);
            out.extend_from_slice(&exit_index.to_le_bytes());
            out.push(*scope as u8);
            out.extend_from_slice(hash);
        }
        Record::Released { exit_index } => {
            out.push(tag::RELEASED);
            out.extend_from_slice(&exit_index.to_le_bytes());
        }
        Record::Standing { exit_index, epoch, eligible } => {
            out.push(tag::STANDING);
            out.extend_from_slice(&exit_index.to_le_bytes());
            out.extend_from_slice(&epoch.to_le_bytes());
            out.push(u8::from(*eligible));
        }
        Record::End { exit_index, reason, state_digest } => {
            out.push(tag::END);
            out.extend_from_slice(&exit_index.to_le_bytes());
            out.push(*reason as u8);
            match state_digest {
                None => out.push(0),
                Some(hash) => {
                    out.push(1);
                    out.extend_from_slice(hash);
                }
            }
        }
    }
}

fn encode_event(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Interrupt { vector } => {
            out.push(tag::EVENT_INTERRUPT);
            out.push(*vector);
        }
        Event::DeviceInput { device, bytes } => {
            out.push(tag::EVENT_DEVICE_INPUT);
            out.extend_from_slice(&device.to_le_bytes());
            put_u32_len(out, bytes.len());
            out.extend_from_slice(bytes);
        }
    }
}

/// Checks that `record` would decode back to itself: returns exactly the
/// error [`decode`] would give for its frame, without encoding it.
pub fn validate(record: &Record) -> Result<(), CodecError> {
    let body_len: u64 = match record {
        Record::Entry { sig, events, .. } => {
            check_discriminant("exit kind", sig.kind as u8, sig.kind == ExitKind::Invalid)?;
            if events.is_empty() {
                return Err(empty_entry());
            }
            let events_len: u64 = events
                .iter()
                .map(|e| match e {
                    Event::Interrupt { .. } => MIN_EVENT_LEN as u64,
                    Event::DeviceInput { bytes, .. } => 1 + 2 + 4 + bytes.len() as u64,
                })
                .sum();
            1 + 8 + SIG_LEN as u64 + 4 + events_len
        }
        Record::Progress { .. } | Record::Released { .. } => 1 + 8,
        Record::Standing { .. } => 1 + 8 + 8 + 1,
        Record::Digest { scope, .. } => {
            check_discriminant("digest scope", *scope as u8, *scope == DigestScope::Invalid)?;
            1 + 8 + 1 + 32
        }
        Record::End { reason, state_digest, .. } => {
            check_discriminant("end reason", *reason as u8, *reason == EndReason::Invalid)?;
            1 + 8 + 1 + 1 + if state_digest.is_some() { 32 } else { 0 }
        }
    };
    if body_len > MAX_FRAME_LEN as u64 {
        return Err(CodecError::FrameTooLarge { len: body_len });
    }
    Ok(())
}

fn check_discriminant(what: &'static str, tag: u8, invalid: bool) -> Result<(), CodecError> {
    if invalid {
        Err(CodecError::UnknownTag { what, tag })
    } else {
        Ok(())
    }
}

fn empty_entry() -> CodecError {
    CodecError::Malformed {
        what: "entry carries no events (an exit where nothing happened is covered by progress)".into(),
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` if `buf` holds only part of a frame (read more and call
/// again with the bytes appended), or the record and how many bytes of `buf`
/// it used. Oversized and empty length prefixes are rejected as soon as the
/// four length bytes are in, before the rest of the frame arrives.
pub fn decode(buf: &[u8]) -> Result<Option<(Record, usize)>, CodecError> {
    let Some((body, consumed)) = frame::split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, consumed)))
}

/// Decodes a checksummed frame body (tag + payload).
pub(crate) fn decode_body(body: &[u8]) -> Result<Record, CodecError> {
    let mut c = Cursor::new(body);
    let record = match c.u8("record tag")? {
        tag::ENTRY => {
            let exit_index = c.u64("entry exit index")?;
            let sig = decode_sig(&mut c)?;
            let count = c.count("entry event count", MIN_EVENT_LEN)?;
            if count == 0 {
                return Err(empty_entry());
            }
            // Bounded by `count`'s check against the frame's remaining bytes.
            let mut events = Vec::with_capacity(count);
            for _ in 0..count {
                events.push(decode_event(&mut c)?);
            }
            Record::Entry { exit_index, sig, events }
        }
        tag::PROGRESS => Record::Progress { exit_index: c.u64("progress exit index")? },
        tag::DIGEST => {
            let exit_index = c.u64("digest exit index")?;
            let raw = c.u8("digest scope")?;
            let scope = DigestScope::from_u8(raw).ok_or(CodecError::UnknownTag { what: "digest scope", tag: raw })?;
            Record::Digest { exit_index, scope, hash: c.hash("digest hash")? }
        }
        tag::RELEASED => Record::Released { exit_index: c.u64("released exit index")? },
        tag::STANDING => Record::Standing {
            exit_index: c.u64("standing exit index")?,
            epoch: c.u64("standing epoch")?,
            eligible: c.bool("standing eligible")?,
        },
        tag::END => {
            let exit_index = c.u64("end exit index")?;
            let raw = c.u8("end reason")?;
            let reason = EndReason::from_u8(raw).ok_or(CodecError::UnknownTag { what: "end reason", tag: raw })?;
            let state_digest =
                if c.bool("end state digest present")? { Some(c.hash("end state digest")?) } else { None };
            Record::End { exit_index, reason, state_digest }
        }
        other => return Err(CodecError::UnknownTag { what: "record", tag: other }),
    };
    c.finish(record.name())?;
    Ok(record)
}

fn decode_sig(c: &mut Cursor<'_>) -> Result<ExitSig, CodecError> {
    let raw = c.u8("exit kind")?;
    let kind = ExitKind::from_u8(raw).ok_or(CodecError::UnknownTag { what: "exit kind", tag: raw })?;
    Ok(ExitSig {
        kind,
        addr: c.u64("exit address")?,
        data: c.u64("exit data")?,
        regs_hash: c.u64("exit registers hash")?,
    })
}

fn decode_event(c: &mut Cursor<'_>) -> Result<Event, CodecError> {
    match c.u8("event tag")? {
        tag::EVENT_INTERRUPT => Ok(Event::Interrupt { vector: c.u8("interrupt vector")? }),
        tag::EVENT_DEVICE_INPUT => {
            let device = c.u16("device id")?;
            let len = c.count("device input length", 1)?;
            Ok(Event::DeviceInput { device, bytes: c.bytes(len, "device input bytes")?.to_vec() })
        }
        other => Err(CodecError::UnknownTag { what: "event", tag: other }),
    }
}

/// Reads records one frame at a time from a byte stream (a file or socket).
///
/// It checks framing and content but not ordering; pair it with a
/// [`Sequencer`] (as [`crate::file::LogReader`] does). After any error the
/// stream position is unspecified: drop the reader and the connection.
#[derive(Debug)]
pub struct RecordReader<R: Read> {
    inner: R,
    body: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, body: Vec::new() }
    }

    /// The next record, or `Ok(None)` at a clean end of stream between frames.
    /// An end of stream inside a frame is [`CodecError::Truncated`].
    pub fn next_record(&mut self) -> Result<Option<Record>, CodecError> {
        if !frame::read_frame(&mut self.inner, &mut self.body)? {
            return Ok(None);
        }
        decode_body(&self.body).map(Some)
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}
