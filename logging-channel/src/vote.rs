//! The election's messages, exchanged on each member's peer port (`ftvmm
//! replica`): a candidate asks for votes, anyone asks who leads.
//!
//! They use the crate's usual frame (see the crate docs) with tags in their own
//! range, 0xA1.., so a record or channel message read where a vote message was
//! expected is an `UnknownTag` error, never a misparse. One request and one
//! reply per connection:
//!
//! ```text
//!  0xA1 VoteRequest  group u64 | epoch u64 | candidate u64 | priority u8
//!                    | log_epoch u64 | log_exit u64
//!  0xA2 VoteReply    group u64 | epoch u64 | voter u64 | granted u8 (0/1)
//!                    | len u32 | len bytes UTF-8 text (why, when refused)
//!  0xA3 Probe        group u64 | from u64
//!  0xA4 ProbeReply   group u64 | member u64 | epoch u64 | role u8 | priority u8
//!                    | primary u64 (0: none heard now) | log_epoch u64 | log_exit u64
//!                    | voted_for u64 (0: nobody)
//!
//!   candidate                         voter
//!     | -- VoteRequest(epoch, me, position) --> |  at most one vote per epoch,
//!     | <-- VoteReply(epoch, granted, why) ---- |  only for a log at least as new
//! ```
//!
//! `group` is a tag of the membership and the machine (both sides compute it the
//! same way): a message from another group is refused, never counted.
use crate::codec::frame::{self, Cursor};
use crate::codec::CodecError;
use std::io::Read;

mod tag {
    pub const VOTE_REQUEST: u8 = 0xA1;
    pub const VOTE_REPLY: u8 = 0xA2;
    pub const PROBE: u8 = 0xA3;
    pub const PROBE_REPLY: u8 = 0xA4;
}

/// The longest refusal reason sent; longer ones are cut (a reason is for a log line).
pub const MAX_REASON_LEN: usize = 512;

/// What a member is doing, as it tells a prober.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// Started, looking for a primary, no VM yet.
    Starting = 1,
    /// Following a primary (or looking for a new one after losing it).
    Follower = 2,
    /// Standing for election.
    Candidate = 3,
    /// Running the VM and releasing its output.
    Primary = 4,
    /// Restarted after it had been in the group: it lost the log it had acknowledged,
    /// so it neither votes nor stands until a state transfer gives it one again.
    Rejoining = 5,
}

impl PeerRole {
    fn from_u8(v: u8) -> Option<PeerRole> {
        Some(match v {
            1 => PeerRole::Starting,
            2 => PeerRole::Follower,
            3 => PeerRole::Candidate,
            4 => PeerRole::Primary,
            5 => PeerRole::Rejoining,
            _ => return None,
        })
    }

    /// Its name in logs and status.
    pub fn name(self) -> &'static str {
        match self {
            PeerRole::Starting => "starting",
            PeerRole::Follower => "follower",
            PeerRole::Candidate => "candidate",
            PeerRole::Primary => "primary",
            PeerRole::Rejoining => "rejoining",
        }
    }
}

/// A candidate asks for a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoteRequest {
    pub group: u64,
    pub epoch: u64,
    pub candidate: u64,
    pub priority: u8,
    /// The epoch of the last record in the candidate's log.
    pub log_epoch: u64,
    /// The last exit the candidate's log holds completely.
    pub log_exit: u64,
}

/// A voter's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VoteReply {
    pub group: u64,
    /// The voter's epoch after the request (higher than asked: the candidate is behind).
    pub epoch: u64,
    pub voter: u64,
    pub granted: bool,
    /// Why not, when refused.
    pub why: String,
}

/// Who leads, and what do you hold?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    pub group: u64,
    pub from: u64,
}

/// A member's answer to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeReply {
    pub group: u64,
    pub member: u64,
    pub epoch: u64,
    pub role: PeerRole,
    /// Its `--priority`, so that equally up-to-date members know who stands first.
    pub priority: u8,
    /// The primary it is, or hears from now (0: none). A member that hears a primary
    /// keeps others from standing (Raft's pre-vote).
    pub primary: u64,
    pub log_epoch: u64,
    pub log_exit: u64,
    /// Whom it voted for in `epoch` (0: nobody).
    pub voted_for: u64,
}

/// One message on a peer port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerMessage {
    VoteRequest(VoteRequest),
    VoteReply(VoteReply),
    Probe(Probe),
    ProbeReply(ProbeReply),
}

/// Appends one frame holding `message` to `out`.
pub fn encode(message: &PeerMessage, out: &mut Vec<u8>) {
    frame::write_frame(out, |b| match message {
        PeerMessage::VoteRequest(r) => {
            b.push(tag::VOTE_REQUEST);
            for v in [r.group, r.epoch, r.candidate] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.push(r.priority);
            b.extend_from_slice(&r.log_epoch.to_le_bytes());
            b.extend_from_slice(&r.log_exit.to_le_bytes());
        }
        PeerMessage::VoteReply(r) => {
            b.push(tag::VOTE_REPLY);
            for v in [r.group, r.epoch, r.voter] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.push(u8::from(r.granted));
            let why = cut(&r.why);
            b.extend_from_slice(&(why.len() as u32).to_le_bytes());
            b.extend_from_slice(why.as_bytes());
        }
        PeerMessage::Probe(p) => {
            b.push(tag::PROBE);
            b.extend_from_slice(&p.group.to_le_bytes());
            b.extend_from_slice(&p.from.to_le_bytes());
        }
        PeerMessage::ProbeReply(p) => {
            b.push(tag::PROBE_REPLY);
            for v in [p.group, p.member, p.epoch] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.push(p.role as u8);
            b.push(p.priority);
            for v in [p.primary, p.log_epoch, p.log_exit, p.voted_for] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
    });
}

/// `text` cut to at most [`MAX_REASON_LEN`] bytes, on a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_REASON_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Decodes one message from the front of `buf`: `Ok(None)` means more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(PeerMessage, usize)>, CodecError> {
    let Some((body, consumed)) = frame::split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, consumed)))
}

/// Reads one message from a byte stream (`Ok(None)`: it closed before a frame began).
pub fn read<R: Read>(r: &mut R) -> Result<Option<PeerMessage>, CodecError> {
    let mut body = Vec::new();
    if !frame::read_frame(r, &mut body)? {
        return Ok(None);
    }
    decode_body(&body).map(Some)
}

fn decode_body(body: &[u8]) -> Result<PeerMessage, CodecError> {
    let mut c = Cursor::new(body);
    let (message, name) = match c.u8("peer message tag")? {
        tag::VOTE_REQUEST => {
            let r = VoteRequest {
                group: c.u64("group")?,
                epoch: c.u64("epoch")?,
                candidate: c.u64("candidate")?,
                priority: c.u8("priority")?,
                log_epoch: c.u64("log epoch")?,
                log_exit: c.u64("log exit")?,
            };
            (PeerMessage::VoteRequest(r), "vote request")
        }
        tag::VOTE_REPLY => {
            let (group, epoch, voter) = (c.u64("group")?, c.u64("epoch")?, c.u64("voter")?);
            let granted = c.bool("granted")?;
            let len = c.count("refusal reason", 1)?;
            if len > MAX_REASON_LEN {
                return Err(CodecError::Malformed { what: format!("a refusal reason of {len} bytes") });
            }
            let why = std::str::from_utf8(c.bytes(len, "refusal reason")?)
                .map_err(|e| CodecError::Malformed { what: format!("refusal reason is not UTF-8: {e}") })?
                .to_owned();
            (PeerMessage::VoteReply(VoteReply { group, epoch, voter, granted, why }), "vote reply")
        }
        tag::PROBE => (PeerMessage::Probe(Probe { group: c.u64("group")?, from: c.u64("from")? }), "probe"),
        tag::PROBE_REPLY => {
            let (group, member, epoch) = (c.u64("group")?, c.u64("member")?, c.u64("epoch")?);
            let role = c.u8("role")?;
            let role = PeerRole::from_u8(role).ok_or(CodecError::UnknownTag { what: "peer role", tag: role })?;
            let r = ProbeReply {
                group,
                member,
                epoch,
                role,
                priority: c.u8("priority")?,
                primary: c.u64("primary")?,
                log_epoch: c.u64("log epoch")?,
                log_exit: c.u64("log exit")?,
                voted_for: c.u64("voted for")?,
            };
            (PeerMessage::ProbeReply(r), "probe reply")
        }
        other => return Err(CodecError::UnknownTag { what: "peer message", tag: other }),
    };
    c.finish(name)?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PeerMessage> {
        vec![
            PeerMessage::VoteRequest(VoteRequest {
                group: 7,
                epoch: 3,
                candidate: 2,
                priority: 1,
                log_epoch: 2,
                log_exit: 9_000,
            }),
            PeerMessage::VoteReply(VoteReply { group: 7, epoch: 3, voter: 1, granted: false, why: "behind".into() }),
            PeerMessage::VoteReply(VoteReply { group: 7, epoch: 3, voter: 1, granted: true, why: String::new() }),
            PeerMessage::Probe(Probe { group: 7, from: 3 }),
            PeerMessage::ProbeReply(ProbeReply {
                group: 7,
                member: 1,
                epoch: 3,
                role: PeerRole::Primary,
                priority: 1,
                primary: 1,
                log_epoch: 3,
                log_exit: 12,
                voted_for: 1,
            }),
        ]
    }

    #[test]
    fn every_message_survives_a_round_trip_and_every_cut_is_incomplete_not_wrong() {
        for m in samples() {
            let mut buf = Vec::new();
            encode(&m, &mut buf);
            assert_eq!(decode(&buf).expect("decodes"), Some((m.clone(), buf.len())));
            for cut in 0..buf.len() {
                assert!(matches!(decode(&buf[..cut]), Ok(None)), "{m:?} cut at {cut}");
            }
            assert_eq!(read(&mut &buf[..]).expect("reads"), Some(m));
        }
    }

    #[test]
    fn a_flipped_byte_or_a_foreign_frame_is_an_error_never_a_message() {
        for m in samples() {
            let mut buf = Vec::new();
            encode(&m, &mut buf);
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0x40;
                if let Ok(Some((decoded, _))) = decode(&bad) {
                    panic!("byte {i} flipped still decodes, as {decoded:?}");
                }
            }
        }
        let mut record = Vec::new();
        crate::codec::encode(&crate::Record::Progress { exit_index: 1 }, &mut record);
        assert!(matches!(decode(&record), Err(CodecError::UnknownTag { .. })));
    }

    #[test]
    fn a_reason_past_the_limit_is_cut_when_sent_and_refused_when_received() {
        let long = "é".repeat(MAX_REASON_LEN);
        let m = PeerMessage::VoteReply(VoteReply { group: 1, epoch: 1, voter: 1, granted: false, why: long });
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        let Some((PeerMessage::VoteReply(r), _)) = decode(&buf).expect("decodes") else { panic!("not a reply") };
        assert!(r.why.len() <= MAX_REASON_LEN && r.why.chars().all(|c| c == 'é'));

        let mut forged = Vec::new();
        frame::write_frame(&mut forged, |b| {
            b.push(tag::VOTE_REPLY);
            b.extend_from_slice(&[0; 24]);
            b.push(0);
            b.extend_from_slice(&((MAX_REASON_LEN + 1) as u32).to_le_bytes());
            b.extend_from_slice(&vec![b'x'; MAX_REASON_LEN + 1]);
        });
        assert!(matches!(decode(&forged), Err(CodecError::Malformed { .. })));
    }
}
