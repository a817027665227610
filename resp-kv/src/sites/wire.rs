//! The site link's wire format: a pure codec, no I/O.
//!
//! ```text
//! frame:  | len: u32 LE | crc32(body): u32 LE | body: len bytes, 1..=MAX_FRAME |
//! body:   | kind: u8 | fields, all integers little-endian |
//!   1 HELLO    | version u16 | site u8 | sites_digest u64 | policy u8 |   sender -> receiver, first
//!   2 WELCOME  | site u8 | resume_after u64 |                              receiver -> sender: "send from resume_after + 1"
//!   3 REFUSE   | reason: u16 len + UTF-8, <= MAX_REASON |                  either way, then close
//!   4 WRITE    | seq u64 | write |                                         sender -> receiver, seq = 1, 2, 3...
//!   5 ACK      | seq u64 |                                                 receiver -> sender: "applied up to seq"
//! write:  | dot.site u8 | dot.counter u64 | hlc.wall_ms u64 | hlc.logical u32 |
//!         | ctx: n u8 (<= MAX_SITES), n x (site u8, counter u64) | key: bytes | op |
//! op:     1 ASSIGN value clear | 2 COUNTER total i64, reset u8, clear | 3 SADD elems | 4 SREM elems
//! value:  0 absent | 1 bytes | 2 elems
//! clear:  n u8 (<= MAX_SITES), n x (site u8, dot u64, total i64)
//! elems:  n u32 (<= MAX_ELEMS), n x bytes;     bytes: len u32 + data
//! ```
//!
//! The decoder takes whatever arrived: it returns `Ok(None)` until a whole frame is
//! there, and an error (never a panic) for a bad length, checksum, kind or field.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;

use super::hlc::Timestamp;
use super::keystate::{CounterMark, Op, Policy, Value, Write};
use super::vv::{Dot, VersionVector};
use super::MAX_SITES;

/// Largest frame body. A write carries at most one request's worth of data (512 KiB
/// by default) or a whole set, so 4 MiB leaves room and still bounds a hostile peer.
pub const MAX_FRAME: usize = 4 << 20;
/// Most members one set op or value may carry.
pub const MAX_ELEMS: usize = 1 << 20;
/// Longest REFUSE reason.
pub const MAX_REASON: usize = 512;
const HEADER: usize = 8;

/// One message on the site link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The connecting site introduces itself.
    Hello { version: u16, site: u8, sites_digest: u64, policy: u8 },
    /// The accepting site agrees and says where to resume.
    Welcome { site: u8, resume_after: u64 },
    /// Either side gives up, saying why.
    Refuse { reason: Vec<u8> },
    /// One of the sender's own writes.
    Write { seq: u64, write: Write },
    /// The receiver has applied the sender's writes up to `seq`.
    Ack { seq: u64 },
}

/// Why bytes could not be decoded. The connection should be closed; nothing applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A frame's length is 0 or above [`MAX_FRAME`].
    BadLength(u32),
    /// The body does not match its checksum: corrupted or not a site link at all.
    Checksum,
    /// Unknown frame kind.
    UnknownKind(u8),
    /// A field ends past the frame's end.
    Truncated,
    /// A field has an impossible value.
    BadField(&'static str),
    /// Bytes left over after the last field.
    TrailingBytes,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadLength(n) => {
                write!(f, "frame length {n} outside 1..={MAX_FRAME}: not a site link peer, or a corrupted stream")
            }
            WireError::Checksum => write!(f, "frame checksum mismatch: corrupted stream or not a site link peer"),
            WireError::UnknownKind(k) => {
                write!(f, "unknown frame kind {k}: is the peer running another protocol version?")
            }
            WireError::Truncated => write!(f, "a field runs past the end of its frame"),
            WireError::BadField(what) => write!(f, "bad field: {what}"),
            WireError::TrailingBytes => write!(f, "bytes left over after the frame's last field"),
        }
    }
}

// A compile-time loop over a fixed-size table: indices are in bounds by construction.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}
static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE), as zlib computes it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        let i = usize::from((c as u8) ^ b);
        c = CRC_TABLE.get(i).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

/// Append `frame`, framed and checksummed, to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    match frame {
        Frame::Hello { version, site, sites_digest, policy } => {
            out.push(1);
            out.extend_from_slice(&version.to_le_bytes());
            out.push(*site);
            out.extend_from_slice(&sites_digest.to_le_bytes());
            out.push(*policy);
        }
        Frame::Welcome { site, resume_after } => {
            out.push(2);
            out.push(*site);
            out.extend_from_slice(&resume_after.to_le_bytes());
        }
        Frame::Refuse { reason } => {
            out.push(3);
            let r = reason.get(..MAX_REASON).unwrap_or(reason);
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend_from_slice(r);
        }
        Frame::Write { seq, write } => {
            out.push(4);
            out.extend_from_slice(&seq.to_le_bytes());
            encode_write(write, out);
        }
        Frame::Ack { seq } => {
            out.push(5);
            out.extend_from_slice(&seq.to_le_bytes());
        }
    }
    let body = out.get(start.saturating_add(HEADER)..).unwrap_or(&[]);
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    let crc = crc32(body).to_le_bytes();
    if let Some(h) = out.get_mut(start..start.saturating_add(HEADER)) {
        let (l, c) = h.split_at_mut(4);
        l.copy_from_slice(&len);
        c.copy_from_slice(&crc);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_elems<'a>(out: &mut Vec<u8>, n: usize, elems: impl Iterator<Item = &'a Vec<u8>>) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
    elems.for_each(|e| put_bytes(out, e));
}

fn put_clear(out: &mut Vec<u8>, clear: &[CounterMark]) {
    out.push(u8::try_from(clear.len()).unwrap_or(u8::MAX));
    for &(site, dot, total) in clear {
        out.push(site);
        out.extend_from_slice(&dot.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
    }
}

fn encode_write(w: &Write, out: &mut Vec<u8>) {
    out.push(w.dot.site);
    out.extend_from_slice(&w.dot.counter.to_le_bytes());
    out.extend_from_slice(&w.hlc.wall_ms.to_le_bytes());
    out.extend_from_slice(&w.hlc.logical.to_le_bytes());
    out.push(u8::try_from(w.ctx.len()).unwrap_or(u8::MAX));
    for (site, n) in w.ctx.entries() {
        out.push(site);
        out.extend_from_slice(&n.to_le_bytes());
    }
    put_bytes(out, &w.key);
    match &w.op {
        Op::Assign { value, clear } => {
            out.push(1);
            match value {
                Value::Absent => out.push(0),
                Value::Str(v) => {
                    out.push(1);
                    put_bytes(out, v);
                }
                Value::Set(m) => {
                    out.push(2);
                    put_elems(out, m.len(), m.iter());
                }
            }
            put_clear(out, clear);
        }
        Op::Counter { total, clear, reset } => {
            out.push(2);
            out.extend_from_slice(&total.to_le_bytes());
            out.push(u8::from(*reset));
            put_clear(out, clear);
        }
        Op::SetAdd(m) => {
            out.push(3);
            put_elems(out, m.len(), m.iter());
        }
        Op::SetRem(m) => {
            out.push(4);
            put_elems(out, m.len(), m.iter());
        }
    }
}

/// Decode the first frame in `buf`: `Ok(Some((frame, bytes used)))`, `Ok(None)` if
/// more bytes are needed, or an error if the stream is bad.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(header) = buf.get(..HEADER) else { return Ok(None) };
    let mut r = Reader { buf: header, pos: 0 };
    let len = r.u32()?;
    let crc = r.u32()?;
    let body_len = usize::try_from(len).map_err(|_| WireError::BadLength(len))?;
    if body_len == 0 || body_len > MAX_FRAME {
        return Err(WireError::BadLength(len));
    }
    let total = HEADER.saturating_add(body_len);
    let Some(body) = buf.get(HEADER..total) else { return Ok(None) };
    if crc32(body) != crc {
        return Err(WireError::Checksum);
    }
    let mut r = Reader { buf: body, pos: 0 };
    let frame = match r.u8()? {
        1 => Frame::Hello { version: r.u16()?, site: r.u8()?, sites_digest: r.u64()?, policy: r.u8()? },
        2 => Frame::Welcome { site: r.u8()?, resume_after: r.u64()? },
        3 => {
            let n = usize::from(r.u16()?);
            if n > MAX_REASON {
                return Err(WireError::BadField("refusal reason too long"));
            }
            Frame::Refuse { reason: r.take(n)?.to_vec() }
        }
        4 => Frame::Write { seq: r.u64()?, write: r.write()? },
        5 => Frame::Ack { seq: r.u64()? },
        k => return Err(WireError::UnknownKind(k)),
    };
    if r.pos != body.len() {
        return Err(WireError::TrailingBytes);
    }
    Ok(Some((frame, total)))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = usize::try_from(self.u32()?).map_err(|_| WireError::Truncated)?;
        Ok(self.take(n)?.to_vec())
    }

    fn elems(&mut self) -> Result<Vec<Vec<u8>>, WireError> {
        let n = usize::try_from(self.u32()?).map_err(|_| WireError::Truncated)?;
        if n > MAX_ELEMS {
            return Err(WireError::BadField("too many set members"));
        }
        // Each member needs at least its 4-byte length: a lying count fails before it allocates.
        if n.saturating_mul(4) > self.buf.len().saturating_sub(self.pos) {
            return Err(WireError::Truncated);
        }
        (0..n).map(|_| self.bytes()).collect()
    }

    fn clear(&mut self) -> Result<Vec<CounterMark>, WireError> {
        let n = usize::from(self.u8()?);
        if n > MAX_SITES {
            return Err(WireError::BadField("more counter marks than sites"));
        }
        (0..n).map(|_| Ok((self.u8()?, self.u64()?, self.i64()?))).collect()
    }

    fn write(&mut self) -> Result<Write, WireError> {
        let dot = Dot { site: self.u8()?, counter: self.u64()? };
        if dot.site == 0 || dot.counter == 0 {
            return Err(WireError::BadField("dot with site or counter 0"));
        }
        let hlc = Timestamp { wall_ms: self.u64()?, logical: self.u32()? };
        let n = usize::from(self.u8()?);
        if n > MAX_SITES {
            return Err(WireError::BadField("version vector longer than the site limit"));
        }
        let mut ctx = VersionVector::new();
        for _ in 0..n {
            let (site, counter) = (self.u8()?, self.u64()?);
            if site == 0 {
                return Err(WireError::BadField("version vector names site 0"));
            }
            ctx.add(Dot { site, counter });
        }
        let key = self.bytes()?;
        let op = match self.u8()? {
            1 => {
                let value = match self.u8()? {
                    0 => Value::Absent,
                    1 => Value::Str(self.bytes()?),
                    2 => Value::Set(self.elems()?.into_iter().collect::<BTreeSet<_>>()),
                    _ => return Err(WireError::BadField("unknown value type")),
                };
                Op::Assign { value, clear: self.clear()? }
            }
            2 => {
                let total = self.i64()?;
                let reset = match self.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::BadField("counter reset flag not 0 or 1")),
                };
                Op::Counter { total, reset, clear: self.clear()? }
            }
            3 => Op::SetAdd(self.elems()?),
            4 => Op::SetRem(self.elems()?),
            _ => return Err(WireError::BadField("unknown op")),
        };
        Ok(Write { key, dot, hlc, ctx, op })
    }
}

/// The policy byte HELLO carries.
pub fn policy_byte(p: Policy) -> u8 {
    p as u8
}
