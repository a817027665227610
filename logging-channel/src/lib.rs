//! Log records, their wire codec and the record-file format of ftvmm.
//!
//! The primary records every nondeterministic event at the synchronous VM exit
//! where it entered the guest (its *exit index*); a backup replays them. This
//! crate is the shared vocabulary: [`Record`]s, how they are framed on a
//! socket or in a file ([`codec`]), and the file that `ftvmm record --log`
//! writes ([`file`](mod@file)), plus the handshake and acks between primary
//! and backup ([`channel`]). It is pure and has no KVM in it.
//!
//! # Frame
//!
//! Every integer is little-endian.
//!
//! ```text
//!  0        4     5                      4+len     8+len
//!  +--------+-----+----------------------+---------+
//!  | len    | tag | payload              | crc32   |
//!  | u32 LE | u8  | (len - 1 bytes)      | u32 LE  |
//!  +--------+-----+----------------------+---------+
//!           \________ len bytes ________/
//!           1 <= len <= MAX_FRAME_LEN     crc32 covers tag + payload
//! ```
//!
//! Record payloads (tag 0 is never valid, nor is discriminant 0 of any enum):
//!
//! ```text
//!  1 Entry     exit_index u64 | kind u8 | addr u64 | data u64 | regs_hash u64
//!              | count u32 (>= 1) | count x Event
//!  2 Progress  exit_index u64
//!  3 Digest    exit_index u64 | scope u8 | hash [32]
//!  4 Released  exit_index u64
//!  5 End       exit_index u64 | reason u8 | has_digest u8 (0/1) | [hash [32]]
//!  6 Standing  exit_index u64 | epoch u64 | eligible u8 (0/1)
//!
//!  Event:  1 Interrupt    vector u8
//!          2 DeviceInput  device u16 | len u32 | len bytes
//! ```
//!
//! # Record file
//!
//! ```text
//!  offset  size
//!   0       8   magic "FTVMMLOG"
//!   8       2   version u16 (file::FILE_VERSION = 2; version 1 has no config block)
//!  10       2   reserved u16 (= 0)
//!  12      32   guest_image_digest
//!  44       8   mem_size u64
//!  52      32   cpuid_digest
//!  84       4   tick_hz u32
//!  88       4   crc32 of bytes 0..88
//!  92       4   config_len u32 (version 2 only, at most file::MAX_CONFIG_LEN)
//!  96       n   the guest configuration it was recorded with (opaque here)
//!  96+n     4   crc32 of the configuration
//!  ...    ...   frame | frame | ... | frame(End)
//! ```
//!
//! A log whose recorder died ends without `End`, possibly inside its last
//! frame; readers report that rather than guess.
#![forbid(unsafe_code)]

pub mod channel;
pub mod codec;
pub mod file;
pub mod group_name;
pub mod pack;
pub mod pipe;
mod record;
pub mod state;
pub mod vote;

pub use codec::{CodecError, RecordReader, Sequencer};
pub use file::{FileError, LogHeader, LogReader, LogWriter};
pub use group_name::{GroupName, GroupNameError, MAX_GROUP_NAME};
pub use record::{full_hex, short_hex, DigestScope, EndReason, Event, ExitKind, ExitSig, Hash, Record};

/// Version of the handshake (`channel::Hello`): 2 adds the group name; 3 packs
/// (compresses) state transfers and the records a resume sends ([`pack`]), which a
/// peer of version 2 could not read. Peers of different versions do not pair. The
/// record file has its own (`file::FILE_VERSION`), and is never packed.
pub const PROTOCOL_VERSION: u16 = 3;

/// Largest tag+payload a frame may carry. Bounds what a decoder buffers for
/// one frame, whatever a hostile length prefix says.
pub const MAX_FRAME_LEN: usize = 1 << 20;
