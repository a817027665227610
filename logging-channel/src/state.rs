//! Transferring a running VM's state to a new backup (`docs/design.md`, "Attaching a follower").
//!
//! After the handshake, a primary that takes on a backup pauses at a counted
//! exit and sends its state; the log then continues from the next exit. The
//! frames are the crate's usual frame, with tags in their own range (0x91..):
//!
//! ```text
//!  0x91 Begin  exit_index u64 | epoch u64 | mem_size u64
//!  0x92 Pages  first_page u64 | count u32 (1..=MAX_PAGES) | count x PAGE_SIZE bytes
//!  0x93 Blob   kind u8 | len u32 | len bytes        (vCPU registers, device state)
//!  0x94 End    exit_index u64 | state_digest [32]
//!  0x95 Zero   first_page u64 | count u32 (1..)   pages the receiver must clear
//!  0x96 Have   last u8 (0|1) | count u32 (0..=MAX_HAVE) | count x (page u32 | hash [16])
//!  0xA0 Packed  any run of the frames above but Have, compressed (`crate::pack`);
//!               the sender packs every state it sends, the reader unpacks transparently
//!
//!  receiver --Have..Have(last)--> sender       (the receiver's non-zero pages, ascending)
//!  sender   --Begin, Pages/Zero.., Blob x5, End--> receiver   (packed: batches of ~1 MiB)
//!
//!  The receiver first says what it has: a hash of each of its non-zero pages
//!  (`Have`, in ascending page order; a VM that has nothing sends one empty
//!  `Have` with `last` set). The sender sends only the pages whose hash differs
//!  or that the receiver lacks (`Pages`), and clears the ones it has that are
//!  zero here (`Zero`), then one Blob of each kind, then End. The receiver
//!  applies them on top of what it had, hashes its state and must reach End's
//!  digest: a diff transfer, and with nothing in common a full one.
//! ```
use crate::codec::frame::{self, Cursor};
use crate::codec::CodecError;
use crate::Hash;
use std::io::Read;

mod tag {
    pub const BEGIN: u8 = 0x91;
    pub const PAGES: u8 = 0x92;
    pub const BLOB: u8 = 0x93;
    pub const END: u8 = 0x94;
    pub const ZERO: u8 = 0x95;
    pub const HAVE: u8 = 0x96;
}

pub const PAGE_SIZE: usize = 4096;
/// Pages in one frame: keeps a frame under `MAX_FRAME_LEN`.
pub const MAX_PAGES: usize = 255;
/// Page hashes in one `Have` frame (20 bytes each: well under `MAX_FRAME_LEN`).
pub const MAX_HAVE: usize = 16_384;

/// A page's short hash in a `Have` (the first 16 bytes of its BLAKE3). A collision
/// cannot go unnoticed: the receiver checks the whole-state digest at the end.
pub type PageHash = [u8; 16];

/// What a blob holds. The vCPU blobs are the raw KVM structures: sender and
/// receiver have passed the handshake, so they run the same build on the same CPU model.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Invalid = 0,
    Regs = 1,
    Sregs = 2,
    Fpu = 3,
    VcpuEvents = 4,
    Devices = 5,
}

impl BlobKind {
    pub const VALID: [BlobKind; 5] =
        [BlobKind::Regs, BlobKind::Sregs, BlobKind::Fpu, BlobKind::VcpuEvents, BlobKind::Devices];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::VALID.into_iter().find(|k| *k as u8 == v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateMessage {
    Begin {
        exit_index: u64,
        epoch: u64,
        mem_size: u64,
    },
    Pages {
        first_page: u64,
        data: Vec<u8>,
    },
    Blob {
        kind: BlobKind,
        bytes: Vec<u8>,
    },
    End {
        exit_index: u64,
        state_digest: Hash,
    },
    /// Pages `first_page..first_page + count` are zero at the sender.
    Zero {
        first_page: u64,
        count: u32,
    },
    /// Some of the receiver's non-zero pages and their hashes; `last` ends the list.
    Have {
        last: bool,
        pages: Vec<(u32, PageHash)>,
    },
}

pub fn encode(message: &StateMessage, out: &mut Vec<u8>) {
    frame::write_frame(out, |b| match message {
        StateMessage::Begin { exit_index, epoch, mem_size } => {
            b.push(tag::BEGIN);
            for v in [exit_index, epoch, mem_size] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        StateMessage::Pages { first_page, data } => {
            b.push(tag::PAGES);
            b.extend_from_slice(&first_page.to_le_bytes());
            b.extend_from_slice(&((data.len() / PAGE_SIZE) as u32).to_le_bytes());
            b.extend_from_slice(data);
        }
        StateMessage::Blob { kind, bytes } => {
            b.push(tag::BLOB);
            b.push(*kind as u8);
            b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            b.extend_from_slice(bytes);
        }
        StateMessage::End { exit_index, state_digest } => {
            b.push(tag::END);
            b.extend_from_slice(&exit_index.to_le_bytes());
            b.extend_from_slice(state_digest);
        }
        StateMessage::Zero { first_page, count } => {
            b.push(tag::ZERO);
            b.extend_from_slice(&first_page.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
        }
        StateMessage::Have { last, pages } => {
            b.push(tag::HAVE);
            b.push(u8::from(*last));
            b.extend_from_slice(&(pages.len() as u32).to_le_bytes());
            for (page, hash) in pages {
                b.extend_from_slice(&page.to_le_bytes());
                b.extend_from_slice(hash);
            }
        }
    });
}

pub fn decode(buf: &[u8]) -> Result<Option<(StateMessage, usize)>, CodecError> {
    let Some((body, consumed)) = frame::split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, consumed)))
}

fn decode_body(body: &[u8]) -> Result<StateMessage, CodecError> {
    let mut c = Cursor::new(body);
    let message = match c.u8("state message tag")? {
        tag::BEGIN => StateMessage::Begin {
            exit_index: c.u64("begin exit index")?,
            epoch: c.u64("begin epoch")?,
            mem_size: c.u64("begin memory size")?,
        },
        tag::PAGES => {
            let first_page = c.u64("pages first page")?;
            let count = c.u32("pages count")? as usize;
            if count == 0 || count > MAX_PAGES {
                return Err(CodecError::Malformed {
                    what: format!("pages frame with {count} pages (1..={MAX_PAGES})"),
                });
            }
            let data = c.bytes(count * PAGE_SIZE, "page data")?.to_vec();
            StateMessage::Pages { first_page, data }
        }
        tag::BLOB => {
            let raw = c.u8("blob kind")?;
            let kind = BlobKind::from_u8(raw).ok_or(CodecError::UnknownTag { what: "blob kind", tag: raw })?;
            let len = c.count("blob length", 1)?;
            StateMessage::Blob { kind, bytes: c.bytes(len, "blob bytes")?.to_vec() }
        }
        tag::END => StateMessage::End { exit_index: c.u64("end exit index")?, state_digest: c.hash("end digest")? },
        tag::ZERO => {
            let first_page = c.u64("zero first page")?;
            let count = c.u32("zero count")?;
            if count == 0 {
                return Err(CodecError::Malformed { what: "zero frame with no pages".into() });
            }
            StateMessage::Zero { first_page, count }
        }
        tag::HAVE => {
            let last = c.bool("have last")?;
            let count = c.count("have count", 20)?;
            if count > MAX_HAVE {
                return Err(CodecError::Malformed { what: format!("have frame with {count} pages (0..={MAX_HAVE})") });
            }
            let mut pages = Vec::with_capacity(count);
            for _ in 0..count {
                let page = c.u32("have page")?;
                let hash: PageHash = c.bytes(16, "have hash")?.try_into().expect("16 bytes");
                pages.push((page, hash));
            }
            StateMessage::Have { last, pages }
        }
        other => return Err(CodecError::UnknownTag { what: "state message", tag: other }),
    };
    c.finish("state message")?;
    Ok(message)
}

/// Reads state messages one frame at a time; a packed frame ([`crate::pack`]) is
/// unpacked and its messages read one by one, as if they had come alone.
pub struct StateReader<R: Read> {
    inner: R,
    body: Vec<u8>,
    /// The frames of the last packed frame, and how far they have been read.
    unpacked: Vec<u8>,
    at: usize,
}

impl<R: Read> StateReader<R> {
    pub fn new(inner: R) -> Self {
        StateReader { inner, body: Vec::new(), unpacked: Vec::new(), at: 0 }
    }

    /// `Ok(None)` at a clean end of stream.
    pub fn next_message(&mut self) -> Result<Option<StateMessage>, CodecError> {
        loop {
            if self.at < self.unpacked.len() {
                // `unpack` left whole frames only; one that does not decode is an error.
                let (message, used) = decode(&self.unpacked[self.at..])?.ok_or(CodecError::Truncated)?;
                self.at += used;
                return Ok(Some(message));
            }
            if !frame::read_frame(&mut self.inner, &mut self.body)? {
                return Ok(None);
            }
            if self.body.first() != Some(&crate::pack::TAG) {
                return decode_body(&self.body).map(Some);
            }
            // At least one frame (raw_len >= 1, whole frames): the loop never spins.
            self.unpacked = crate::pack::unpack(&self.body)?;
            self.at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: StateMessage) {
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        let (back, used) = decode(&buf).expect("decodes").expect("complete");
        assert_eq!((back, used), (m, buf.len()));
    }

    #[test]
    fn every_state_message_round_trips() {
        round_trip(StateMessage::Begin { exit_index: 7, epoch: 3, mem_size: 64 << 20 });
        round_trip(StateMessage::Pages { first_page: 9, data: vec![0xab; 3 * PAGE_SIZE] });
        round_trip(StateMessage::Blob { kind: BlobKind::Sregs, bytes: vec![1, 2, 3] });
        round_trip(StateMessage::End { exit_index: 7, state_digest: [5; 32] });
        round_trip(StateMessage::Zero { first_page: 12, count: 3 });
        round_trip(StateMessage::Have { last: true, pages: vec![] });
        round_trip(StateMessage::Have { last: false, pages: vec![(3, [1; 16]), (9, [2; 16])] });
    }

    #[test]
    fn a_have_frame_past_its_limit_or_claiming_more_than_it_holds_is_refused() {
        let mut buf = Vec::new();
        let pages = vec![(0u32, [0u8; 16]); MAX_HAVE + 1];
        encode(&StateMessage::Have { last: true, pages }, &mut buf);
        assert!(matches!(decode(&buf), Err(CodecError::Malformed { .. })), "one past MAX_HAVE");
        let mut buf = Vec::new();
        frame::write_frame(&mut buf, |b| {
            b.extend_from_slice(&[tag::HAVE, 1]);
            b.extend_from_slice(&u32::MAX.to_le_bytes());
        });
        assert!(decode(&buf).is_err(), "a count the frame cannot hold allocates nothing");
        let mut buf = Vec::new();
        frame::write_frame(&mut buf, |b| {
            b.push(tag::ZERO);
            b.extend_from_slice(&[0; 12]);
        });
        assert!(matches!(decode(&buf), Err(CodecError::Malformed { .. })), "a zero frame of no pages");
    }

    #[test]
    fn hostile_page_counts_and_kinds_are_refused() {
        let mut buf = Vec::new();
        frame::write_frame(&mut buf, |b| {
            b.push(tag::PAGES);
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&1000u32.to_le_bytes());
        });
        assert!(matches!(decode(&buf), Err(CodecError::Malformed { .. })));
        let mut buf = Vec::new();
        frame::write_frame(&mut buf, |b| b.extend_from_slice(&[tag::BLOB, 0, 0, 0, 0, 0]));
        assert!(matches!(decode(&buf), Err(CodecError::UnknownTag { what: "blob kind", .. })));
        let mut buf = Vec::new();
        frame::write_frame(&mut buf, |b| {
            b.push(tag::PAGES);
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&2u32.to_le_bytes());
            b.extend_from_slice(&[0; PAGE_SIZE]);
        });
        assert!(decode(&buf).is_err(), "fewer bytes than the count promises");
    }
}
