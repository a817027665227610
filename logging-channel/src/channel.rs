//! Messages between primary and backup other than log records: the pairing
//! handshake and the backup's acks. No transport yet; these are the frames.
//!
//! They use the same frame as records (see the crate docs) with tags in a
//! separate range, 0x81.., so a record read where a message was expected (or
//! the reverse) is an `UnknownTag` error, never a misparse:
//!
//! ```text
//!  0x81 Hello       protocol_version u16 | role u8 | guest_image_digest [32]
//!                   | mem_size u64 | cpuid_digest [32] | tick_hz u32 | epoch u64
//!                   | group_len u8 | group_len bytes (the group name; 0: none)
//!  0x82 HelloReply  verdict u8: 1 Accept
//!                             | 2 Refuse  code u8 | len u32 | len bytes UTF-8 text
//!  0x83 Ack         received_through u64 | replayed_through u64
//!  0x84 Attach      kind u8: 1 Fresh
//!                          | 2 Resume  epoch u64 | exit_index u64
//!  0x85 AttachReply kind u8: 1 Resume  from u64 | through u64
//!                          | 2 State   len u32 | len bytes UTF-8 text (why)
//!                          | 3 Refuse  len u32 | len bytes UTF-8 text (why)
//! ```
//!
//! The primary opens with `Hello`, the backup answers `HelloReply` and its own
//! `Hello`, the primary answers `HelloReply`. Then the backup says what it
//! wants (`Attach`): a fresh state, or to resume the log after the exit it
//! holds, in the epoch it had there. The primary answers `AttachReply`:
//!
//! ```text
//!   primary                               backup
//!     | -- Hello --------------------------> |
//!     | <-- HelloReply, Hello -------------- |
//!     | -- HelloReply ---------------------> |
//!     | <-- Attach(Fresh | Resume{epoch, p}) |
//!     |        (the primary's vCPU stops at its next exit J)
//!     | -- AttachReply(Resume{p, J}) ------> |  then record frames after p, through J
//!     |  or AttachReply(State{why}) -------> |  then the state of J (0x91..), then records
//!     |  or AttachReply(Refuse{why}), close  |
//!     | <-- Ack ... ------------------------ |  while the primary streams records
//! ```

use std::fmt;
use std::io::Read;

use crate::codec::frame::{self, Cursor};
use crate::codec::CodecError;
use crate::file::LogHeader;
use crate::group_name::{GroupName, MAX_GROUP_NAME};
use crate::record::Hash;
use crate::PROTOCOL_VERSION;

mod tag {
    pub const HELLO: u8 = 0x81;
    pub const HELLO_REPLY: u8 = 0x82;
    pub const ACK: u8 = 0x83;
    pub const ATTACH: u8 = 0x84;
    pub const ATTACH_REPLY: u8 = 0x85;

    pub const ACCEPT: u8 = 1;
    pub const REFUSE: u8 = 2;

    pub const FRESH: u8 = 1;
    pub const RESUME: u8 = 2;

    pub const REPLY_RESUME: u8 = 1;
    pub const REPLY_STATE: u8 = 2;
    pub const REPLY_REFUSE: u8 = 3;
}

/// Which side of a pair a node wants to be.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Never valid on the wire; exists so that 0 is rejected.
    Invalid = 0,
    Primary = 1,
    Backup = 2,
}

impl Role {
    pub const VALID: [Role; 2] = [Role::Primary, Role::Backup];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::VALID.into_iter().find(|r| *r as u8 == value)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Invalid => "invalid",
            Role::Primary => "primary",
            Role::Backup => "backup",
        })
    }
}

/// Opens a pairing: who the sender is and what it runs. Pairing needs the
/// same protocol, opposite roles, an identical machine, and no stale epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    pub protocol_version: u16,
    pub role: Role,
    pub guest_image_digest: Hash,
    pub mem_size: u64,
    pub cpuid_digest: Hash,
    /// Part of the machine's identity because guest time is counted in ticks.
    pub tick_hz: u32,
    /// Replication epoch; every go-live and every new pairing starts a new one.
    pub epoch: u64,
    /// The group this node belongs to (protocol version 2): a primary sends its group's
    /// name, which the follower adopts; a follower sends only a name it was given
    /// (`--group-name`), or none. Two different names refuse the pairing.
    pub group: GroupName,
}

/// Why a pairing was refused.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseCode {
    /// Never valid on the wire; exists so that 0 is rejected.
    Invalid = 0,
    VersionMismatch = 1,
    /// Both sides claim the same role (or a role is invalid).
    RoleConflict = 2,
    /// Guest image, memory size, CPUID table or tick rate differ.
    MachineMismatch = 3,
    /// The peer belongs to an older epoch and must stand down.
    StaleEpoch = 4,
    /// The node already has a peer.
    Busy = 5,
    /// Both name their group, and the names differ.
    GroupMismatch = 6,
}

impl RefuseCode {
    pub const VALID: [RefuseCode; 6] = [
        RefuseCode::VersionMismatch,
        RefuseCode::RoleConflict,
        RefuseCode::MachineMismatch,
        RefuseCode::StaleEpoch,
        RefuseCode::Busy,
        RefuseCode::GroupMismatch,
    ];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::VALID.into_iter().find(|c| *c as u8 == value)
    }
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HelloReply {
    Accept,
    /// `reason` is for humans (logs, the CLI); `code` is for programs.
    Refuse {
        code: RefuseCode,
        reason: String,
    },
}

/// Backup -> primary: how far the backup has got. Exit indices count exits,
/// so the first exit is 1 and 0 means "nothing yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// Every record up to this exit is in the backup's memory (drives the
    /// Output Rule).
    pub received_through: u64,
    /// The backup's vCPU has executed up to this exit. Never exceeds
    /// `received_through`.
    pub replayed_through: u64,
}

/// Backup -> primary, once paired: what it needs to follow the primary's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachRequest {
    /// The VM's whole state (a new backup).
    Fresh,
    /// The log after `exit_index`: the backup holds every record through it, and the
    /// primary's last word on the epoch there was `epoch` (a backup reconnecting).
    Resume { epoch: u64, exit_index: u64 },
}

/// Primary -> backup: how it will follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttachReply {
    /// Record frames follow: every exit after `from`, through `through`.
    Resume { from: u64, through: u64 },
    /// The VM's state follows (state-transfer frames), then the log; `why` says
    /// why a resume was not possible (empty for a fresh backup).
    State { why: String },
    /// Nothing follows; the primary closes the connection.
    Refuse { why: String },
}

/// Any channel message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    Hello(Hello),
    HelloReply(HelloReply),
    Ack(Ack),
    Attach(AttachRequest),
    AttachReply(AttachReply),
}

impl Hello {
    /// The machine identity this hello carries, as a log file stores it.
    pub fn machine(&self) -> LogHeader {
        LogHeader {
            guest_image_digest: self.guest_image_digest,
            mem_size: self.mem_size,
            cpuid_digest: self.cpuid_digest,
            tick_hz: self.tick_hz,
        }
    }

    /// Decides how a node described by `local` answers this (the peer's)
    /// hello.
    pub fn evaluate(&self, local: &Hello) -> HelloReply {
        let refuse = |code, reason: String| HelloReply::Refuse { code, reason };
        if self.protocol_version != local.protocol_version {
            return refuse(
                RefuseCode::VersionMismatch,
                format!(
                    "peer speaks protocol version {}, this node speaks {} (version 3 packs state transfers and \
                     resumed logs, which older ones cannot read): run the same ftvmm build on every member",
                    self.protocol_version, local.protocol_version
                ),
            );
        }
        if self.role == Role::Invalid || self.role == local.role {
            return refuse(
                RefuseCode::RoleConflict,
                format!("peer wants to be {}, and this node is {}", self.role, local.role),
            );
        }
        if let Err(mismatch) = self.machine().check_matches(&local.machine()) {
            return refuse(RefuseCode::MachineMismatch, mismatch.to_string());
        }
        if !self.group.is_none() && !local.group.is_none() && self.group != local.group {
            return refuse(
                RefuseCode::GroupMismatch,
                format!(
                    "peer belongs to group {}, this node to group {} (--group-name differs; members of one \
                     group normally give none and learn it from their primary)",
                    self.group, local.group
                ),
            );
        }
        if self.epoch < local.epoch {
            return refuse(
                RefuseCode::StaleEpoch,
                format!(
                    "peer is from epoch {}, this node is at epoch {}; the peer must stand down",
                    self.epoch, local.epoch
                ),
            );
        }
        HelloReply::Accept
    }
}

/// A hello for this build's protocol version, naming `group` (or [`GroupName::NONE`]).
pub fn hello(role: Role, machine: &LogHeader, epoch: u64, group: GroupName) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        role,
        guest_image_digest: machine.guest_image_digest,
        mem_size: machine.mem_size,
        cpuid_digest: machine.cpuid_digest,
        tick_hz: machine.tick_hz,
        epoch,
        group,
    }
}

/// Appends one frame holding `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    frame::write_frame(out, |b| match message {
        Message::Hello(h) => {
            b.push(tag::HELLO);
            b.extend_from_slice(&h.protocol_version.to_le_bytes());
            b.push(h.role as u8);
            b.extend_from_slice(&h.guest_image_digest);
            b.extend_from_slice(&h.mem_size.to_le_bytes());
            b.extend_from_slice(&h.cpuid_digest);
            b.extend_from_slice(&h.tick_hz.to_le_bytes());
            b.extend_from_slice(&h.epoch.to_le_bytes());
            let name = h.group.as_str().as_bytes();
            // At most MAX_GROUP_NAME (< 256) bytes: GroupName checks that.
            b.push(name.len() as u8);
            b.extend_from_slice(name);
        }
        Message::HelloReply(HelloReply::Accept) => b.extend_from_slice(&[tag::HELLO_REPLY, tag::ACCEPT]),
        Message::HelloReply(HelloReply::Refuse { code, reason }) => {
            b.extend_from_slice(&[tag::HELLO_REPLY, tag::REFUSE, *code as u8]);
            // Saturation only for texts far beyond MAX_FRAME_LEN, which the
            // decoder rejects by frame length anyway.
            let len = u32::try_from(reason.len()).unwrap_or(u32::MAX);
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(reason.as_bytes());
        }
        Message::Ack(a) => {
            b.push(tag::ACK);
            b.extend_from_slice(&a.received_through.to_le_bytes());
            b.extend_from_slice(&a.replayed_through.to_le_bytes());
        }
        Message::Attach(AttachRequest::Fresh) => b.extend_from_slice(&[tag::ATTACH, tag::FRESH]),
        Message::Attach(AttachRequest::Resume { epoch, exit_index }) => {
            b.extend_from_slice(&[tag::ATTACH, tag::RESUME]);
            b.extend_from_slice(&epoch.to_le_bytes());
            b.extend_from_slice(&exit_index.to_le_bytes());
        }
        Message::AttachReply(AttachReply::Resume { from, through }) => {
            b.extend_from_slice(&[tag::ATTACH_REPLY, tag::REPLY_RESUME]);
            b.extend_from_slice(&from.to_le_bytes());
            b.extend_from_slice(&through.to_le_bytes());
        }
        Message::AttachReply(AttachReply::State { why }) => {
            b.extend_from_slice(&[tag::ATTACH_REPLY, tag::REPLY_STATE]);
            put_text(b, why);
        }
        Message::AttachReply(AttachReply::Refuse { why }) => {
            b.extend_from_slice(&[tag::ATTACH_REPLY, tag::REPLY_REFUSE]);
            put_text(b, why);
        }
    });
}

fn put_text(b: &mut Vec<u8>, text: &str) {
    // Saturation only for texts far beyond MAX_FRAME_LEN, which the decoder
    // rejects by frame length anyway.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(text.as_bytes());
}

fn text(c: &mut Cursor<'_>, what: &'static str) -> Result<String, CodecError> {
    let len = c.count(what, 1)?;
    Ok(std::str::from_utf8(c.bytes(len, what)?)
        .map_err(|e| CodecError::Malformed { what: format!("{what} is not UTF-8: {e}") })?
        .to_owned())
}

/// Decodes one message from the front of `buf`, like [`crate::codec::decode`]
/// does for records: `Ok(None)` means more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, CodecError> {
    let Some((body, consumed)) = frame::split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, consumed)))
}

fn decode_body(body: &[u8]) -> Result<Message, CodecError> {
    let mut c = Cursor::new(body);
    let (message, name) = match c.u8("message tag")? {
        tag::HELLO => (Message::Hello(decode_hello(&mut c)?), "hello"),
        tag::HELLO_REPLY => (Message::HelloReply(decode_reply(&mut c)?), "hello reply"),
        tag::ACK => {
            let received_through = c.u64("ack received-through")?;
            let replayed_through = c.u64("ack replayed-through")?;
            if replayed_through > received_through {
                return Err(CodecError::Malformed {
                    what: format!(
                        "ack claims replay through exit {replayed_through} but receipt only \
                         through exit {received_through}"
                    ),
                });
            }
            let ack = Ack { received_through, replayed_through };
            (Message::Ack(ack), "ack")
        }
        tag::ATTACH => (Message::Attach(decode_attach(&mut c)?), "attach request"),
        tag::ATTACH_REPLY => (Message::AttachReply(decode_attach_reply(&mut c)?), "attach reply"),
        other => return Err(CodecError::UnknownTag { what: "channel message", tag: other }),
    };
    c.finish(name)?;
    Ok(message)
}

fn decode_hello(c: &mut Cursor<'_>) -> Result<Hello, CodecError> {
    let protocol_version = c.u16("hello protocol version")?;
    let raw_role = c.u8("hello role")?;
    let role = Role::from_u8(raw_role).ok_or(CodecError::UnknownTag { what: "role", tag: raw_role })?;
    Ok(Hello {
        protocol_version,
        role,
        guest_image_digest: c.hash("hello guest image digest")?,
        mem_size: c.u64("hello memory size")?,
        cpuid_digest: c.hash("hello CPUID digest")?,
        tick_hz: c.u32("hello tick rate")?,
        epoch: c.u64("hello epoch")?,
        group: decode_group(c)?,
    })
}

fn decode_group(c: &mut Cursor<'_>) -> Result<GroupName, CodecError> {
    let len = usize::from(c.u8("hello group name length")?);
    if len > MAX_GROUP_NAME {
        return Err(CodecError::Malformed { what: format!("a group name of {len} bytes (at most {MAX_GROUP_NAME})") });
    }
    let bytes = c.bytes(len, "hello group name")?;
    let text = std::str::from_utf8(bytes)
        .map_err(|e| CodecError::Malformed { what: format!("group name is not UTF-8: {e}") })?;
    GroupName::new(text).map_err(|e| CodecError::Malformed { what: e.to_string() })
}

fn decode_attach(c: &mut Cursor<'_>) -> Result<AttachRequest, CodecError> {
    match c.u8("attach request kind")? {
        tag::FRESH => Ok(AttachRequest::Fresh),
        tag::RESUME => {
            Ok(AttachRequest::Resume { epoch: c.u64("resume epoch")?, exit_index: c.u64("resume exit index")? })
        }
        other => Err(CodecError::UnknownTag { what: "attach request kind", tag: other }),
    }
}

fn decode_attach_reply(c: &mut Cursor<'_>) -> Result<AttachReply, CodecError> {
    match c.u8("attach reply kind")? {
        tag::REPLY_RESUME => {
            let from = c.u64("resume from")?;
            let through = c.u64("resume through")?;
            if through < from {
                return Err(CodecError::Malformed {
                    what: format!("resume from exit {from} through an earlier exit {through}"),
                });
            }
            Ok(AttachReply::Resume { from, through })
        }
        tag::REPLY_STATE => Ok(AttachReply::State { why: text(c, "state reason")? }),
        tag::REPLY_REFUSE => Ok(AttachReply::Refuse { why: text(c, "attach refusal reason")? }),
        other => Err(CodecError::UnknownTag { what: "attach reply kind", tag: other }),
    }
}

fn decode_reply(c: &mut Cursor<'_>) -> Result<HelloReply, CodecError> {
    match c.u8("hello reply verdict")? {
        tag::ACCEPT => Ok(HelloReply::Accept),
        tag::REFUSE => {
            let raw_code = c.u8("refuse code")?;
            let code =
                RefuseCode::from_u8(raw_code).ok_or(CodecError::UnknownTag { what: "refuse code", tag: raw_code })?;
            let len = c.count("refuse reason length", 1)?;
            let reason = std::str::from_utf8(c.bytes(len, "refuse reason")?)
                .map_err(|e| CodecError::Malformed { what: format!("refuse reason is not UTF-8: {e}") })?
                .to_owned();
            Ok(HelloReply::Refuse { code, reason })
        }
        other => Err(CodecError::UnknownTag { what: "hello reply verdict", tag: other }),
    }
}

/// Reads channel messages one frame at a time from a byte stream. After any
/// error the stream position is unspecified: drop the connection.
#[derive(Debug)]
pub struct MessageReader<R: Read> {
    inner: R,
    body: Vec<u8>,
}

impl<R: Read> MessageReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, body: Vec::new() }
    }

    /// The next message, or `Ok(None)` at a clean end of stream between
    /// frames. An end of stream inside a frame is [`CodecError::Truncated`].
    pub fn next_message(&mut self) -> Result<Option<Message>, CodecError> {
        if !frame::read_frame(&mut self.inner, &mut self.body)? {
            return Ok(None);
        }
        decode_body(&self.body).map(Some)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}
