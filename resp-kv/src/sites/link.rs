//! The site link's two ends as sans-I/O state machines: the guest moves bytes between
//! them and TCP sockets; everything they decide is a function of those bytes and the
//! store, so it replays.
//!
//! ```text
//!  sender (connected out)                 receiver (accepted)
//!  HELLO {version, site, digest, policy} ->  check all four; else REFUSE + close
//!                                         <- WELCOME {site, resume_after = receive cursor}
//!  WRITE {seq = resume_after + 1} ...    ->  apply (or skip a duplicate) in seq order
//!                                         <- ACK {seq}   (the sender's log drops what all peers hold)
//! ```
//!
//! The receive cursor and the log live in the [`SiteStore`], in guest memory: a site
//! whose primary host dies goes on from its backup with the same cursors, so no write
//! is lost or applied twice; a reconnect after a partition resumes from the cursor.

use alloc::vec::Vec;
use core::fmt;

use super::store::{SiteError, SiteStore};
use super::vv::SiteId;
use super::wire::{self, Frame, WireError};

/// Version of the site-link protocol HELLO carries.
pub const PROTOCOL_VERSION: u16 = 1;
/// A connection that buffers more than this of undecoded input is dropped (a frame
/// is at most [`wire::MAX_FRAME`]).
pub const MAX_PENDING: usize = wire::MAX_FRAME + 64 * 1024;

/// Why a link was closed. Nothing from the offending frame was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The bytes are not a well-formed site-link stream.
    Wire(WireError),
    /// The handshake found a mismatch (the text says which and what to do).
    Handshake(&'static str),
    /// A write record was refused.
    Record(SiteError),
    /// The peer refused us, with its reason.
    Refused(Vec<u8>),
    /// A frame that makes no sense at this point of the conversation.
    Unexpected(&'static str),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Wire(e) => write!(f, "{e}"),
            LinkError::Handshake(why) => write!(f, "handshake refused: {why}"),
            LinkError::Record(e) => write!(f, "write refused: {e}"),
            LinkError::Refused(why) => write!(f, "peer refused the link: {}", core::str::from_utf8(why).unwrap_or("?")),
            LinkError::Unexpected(what) => write!(f, "unexpected frame: {what}"),
        }
    }
}

impl From<WireError> for LinkError {
    fn from(e: WireError) -> Self {
        LinkError::Wire(e)
    }
}

/// Takes complete frames off the front of `pending`.
fn next_frame(pending: &mut Vec<u8>) -> Result<Option<Frame>, LinkError> {
    match wire::decode(pending)? {
        Some((frame, used)) => {
            pending.drain(..used.min(pending.len()));
            Ok(Some(frame))
        }
        None if pending.len() > MAX_PENDING => Err(LinkError::Wire(WireError::BadLength(u32::MAX))),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    SendHello,
    AwaitWelcome,
    Streaming,
}

/// The sending end: this site connected out to `peer` and streams its writes to it.
#[derive(Debug, Clone)]
pub struct Outbound {
    peer: SiteId,
    state: OutState,
    next: u64,
    pending: Vec<u8>,
}

impl Outbound {
    /// A fresh connection to `peer` (a reconnect makes a new one).
    pub fn new(peer: SiteId) -> Self {
        Outbound { peer, state: OutState::SendHello, next: 1, pending: Vec::new() }
    }

    /// The peer this link feeds.
    pub fn peer(&self) -> SiteId {
        self.peer
    }

    /// True once the peer has welcomed us.
    pub fn streaming(&self) -> bool {
        self.state == OutState::Streaming
    }

    /// Bytes from the peer (WELCOME, ACKs, REFUSE). An error means: close the connection.
    pub fn receive(&mut self, data: &[u8], store: &mut SiteStore) -> Result<(), LinkError> {
        self.pending.extend_from_slice(data);
        while let Some(frame) = next_frame(&mut self.pending)? {
            match (self.state, frame) {
                (_, Frame::Refuse { reason }) => return Err(LinkError::Refused(reason)),
                (OutState::AwaitWelcome, Frame::Welcome { site, resume_after }) => {
                    if site != self.peer {
                        return Err(LinkError::Handshake(
                            "the peer at this address has another site id; check --sites",
                        ));
                    }
                    if resume_after >= store.next_seq() {
                        return Err(LinkError::Handshake("the peer claims writes of ours we never made"));
                    }
                    let resume = resume_after.saturating_add(1);
                    if resume < store.next_seq() && store.log_entry(resume).is_none() {
                        return Err(LinkError::Handshake(
                            "the peer needs writes our log no longer holds: it lost its state; rebuild it from a live site",
                        ));
                    }
                    store.ack(self.peer, resume_after);
                    self.next = resume;
                    self.state = OutState::Streaming;
                }
                (OutState::Streaming, Frame::Ack { seq }) => {
                    if seq >= self.next {
                        return Err(LinkError::Unexpected("ACK for a write not yet sent"));
                    }
                    store.ack(self.peer, seq);
                }
                _ => {
                    return Err(LinkError::Unexpected("the receiver sent something other than WELCOME, ACK or REFUSE"))
                }
            }
        }
        Ok(())
    }

    /// Append what to send now to `out`: HELLO first, then log records from the
    /// cursor while `out` is shorter than `budget`. Returns how many records.
    pub fn transmit(&mut self, store: &SiteStore, out: &mut Vec<u8>, budget: usize) -> usize {
        match self.state {
            OutState::SendHello => {
                let c = store.config();
                let hello = Frame::Hello {
                    version: PROTOCOL_VERSION,
                    site: c.site_id,
                    sites_digest: c.sites_digest(),
                    policy: wire::policy_byte(c.policy),
                };
                wire::encode(&hello, out);
                self.state = OutState::AwaitWelcome;
                0
            }
            OutState::AwaitWelcome => 0,
            OutState::Streaming => {
                let mut sent = 0usize;
                while out.len() < budget {
                    let Some(entry) = store.log_entry(self.next) else { break };
                    out.extend_from_slice(&entry.frame);
                    self.next = self.next.saturating_add(1);
                    sent = sent.saturating_add(1);
                }
                sent
            }
        }
    }

    /// Sequence number of the next record to send (records below it were sent).
    pub fn next_to_send(&self) -> u64 {
        self.next
    }

    /// Whether records are waiting to be sent.
    pub fn has_backlog(&self, store: &SiteStore) -> bool {
        self.state == OutState::SendHello || (self.streaming() && self.next < store.next_seq())
    }
}

/// The receiving end: a peer connected to us and streams its writes.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    peer: Option<SiteId>,
    pending: Vec<u8>,
}

impl Inbound {
    /// A freshly accepted connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The peer, once its HELLO was accepted.
    pub fn peer(&self) -> Option<SiteId> {
        self.peer
    }

    /// Bytes from the peer; replies (WELCOME, ACK, or REFUSE before an error) go to
    /// `out`. An error means: send `out`, then close the connection.
    pub fn receive(
        &mut self,
        data: &[u8],
        store: &mut SiteStore,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), LinkError> {
        self.pending.extend_from_slice(data);
        let mut applied_any = false;
        let result = self.run(store, now_ms, out, &mut applied_any);
        if let (true, Some(peer)) = (applied_any, self.peer) {
            wire::encode(&Frame::Ack { seq: store.applied_from(peer) }, out);
        }
        if let Err(e) = &result {
            if !matches!(e, LinkError::Refused(_)) {
                let reason = super::text(format_args!("{e}"));
                wire::encode(&Frame::Refuse { reason }, out);
            }
        }
        result
    }

    fn run(
        &mut self,
        store: &mut SiteStore,
        now_ms: u64,
        out: &mut Vec<u8>,
        applied: &mut bool,
    ) -> Result<(), LinkError> {
        while let Some(frame) = next_frame(&mut self.pending)? {
            match (self.peer, frame) {
                (_, Frame::Refuse { reason }) => return Err(LinkError::Refused(reason)),
                (None, Frame::Hello { version, site, sites_digest, policy }) => {
                    let c = store.config();
                    if version != PROTOCOL_VERSION {
                        return Err(LinkError::Handshake(
                            "another site-link protocol version; run the same ftvmm everywhere",
                        ));
                    }
                    if site == c.site_id {
                        return Err(LinkError::Handshake("the peer has our --site-id; give every site its own"));
                    }
                    if !c.sites.iter().any(|s| s.id == site) {
                        return Err(LinkError::Handshake("unknown site id; start every site with the same --sites"));
                    }
                    if sites_digest != c.sites_digest() {
                        return Err(LinkError::Handshake("--sites differs; start every site with the same --sites"));
                    }
                    if policy != wire::policy_byte(c.policy) {
                        return Err(LinkError::Handshake(
                            "--conflict differs; start every site with the same --conflict",
                        ));
                    }
                    self.peer = Some(site);
                    wire::encode(&Frame::Welcome { site: c.site_id, resume_after: store.applied_from(site) }, out);
                }
                (Some(peer), Frame::Write { seq, write }) => {
                    store.apply_remote(peer, seq, &write, now_ms).map_err(LinkError::Record)?;
                    *applied = true;
                }
                (None, _) => return Err(LinkError::Unexpected("a frame before HELLO")),
                (Some(_), _) => return Err(LinkError::Unexpected("the sender sent something other than WRITE")),
            }
        }
        Ok(())
    }
}
