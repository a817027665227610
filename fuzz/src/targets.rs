//! The fuzz targets: each takes arbitrary bytes and must return without panicking,
//! looping or allocating more than its input justifies.
use std::io::Cursor;

use logging_channel::channel::{self, MessageReader};
use logging_channel::state::{self, StateReader};
use logging_channel::{codec, pack, LogReader, RecordReader, Sequencer};
use resp_kv::sites::link::Inbound;
use resp_kv::sites::{wire, Policy, SiteStore};
use resp_kv::{Conn, ConnStatus, Limits, ServerInfo, Store};

use crate::rng::Rng;
use crate::seeds;

/// One decoder (or decoder plus what consumes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `codec::decode` frame by frame (each decoded record re-encodes to the same
    /// bytes), after the packed frames a resume starts with (`pack::split_packed`), and
    /// `RecordReader` with a `Sequencer` over the same bytes.
    LogFrame,
    /// `LogReader`: a record file as `ftvmm replay --log` opens it.
    LogFile,
    /// Handshake and attach messages (`channel::decode`, `MessageReader`).
    Channel,
    /// State-transfer messages (`state::decode`, `StateReader`, which unpacks packed frames).
    State,
    /// RESP parsing and the command layer: a connection fed the bytes in pieces.
    Resp,
    /// Site-link frames (`sites::wire::decode`).
    SitesWire,
    /// A site's inbound link applying the bytes to a real site store.
    SitesLink,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 7] = [
        Target::LogFrame,
        Target::LogFile,
        Target::Channel,
        Target::State,
        Target::Resp,
        Target::SitesWire,
        Target::SitesLink,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::LogFrame => "log-frame",
            Target::LogFile => "log-file",
            Target::Channel => "channel",
            Target::State => "state",
            Target::Resp => "resp",
            Target::SitesWire => "sites-wire",
            Target::SitesLink => "sites-link",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// A valid input for this target.
    pub fn seed(self, rng: &mut Rng) -> Vec<u8> {
        match self {
            Target::LogFrame => seeds::log_stream(rng),
            Target::LogFile => seeds::log_file(rng),
            Target::Channel => seeds::channel_messages(rng),
            Target::State => seeds::state_transfer(rng),
            Target::Resp => seeds::resp_requests(rng),
            Target::SitesWire | Target::SitesLink => {
                let policy = *rng.pick(&[Policy::Lww, Policy::SiteId, Policy::Manual, Policy::Merge]);
                seeds::site_link_stream(rng, policy)
            }
        }
    }

    /// The largest single allocation this target may make for inputs of at most
    /// `largest_input` bytes: [`crate::alloc_bound`], and for the targets that unpack
    /// packed frames (log-frame, state) up to `pack::MAX_PACKED_RAW` more: a packed frame
    /// of a few bytes may honestly unpack to that much (a decompression bomb stops there).
    pub fn alloc_bound(self, largest_input: usize) -> usize {
        let unpacks = matches!(self, Target::LogFrame | Target::State);
        crate::alloc_bound(largest_input) + if unpacks { pack::MAX_PACKED_RAW } else { 0 }
    }

    /// Runs the target on `data`. Panics only on a bug (the campaign catches it).
    pub fn run(self, data: &[u8]) {
        match self {
            Target::LogFrame => log_frame(data),
            Target::LogFile => log_file(data),
            Target::Channel => channel_target(data),
            Target::State => state_target(data),
            Target::Resp => resp(data),
            Target::SitesWire => sites_wire(data),
            Target::SitesLink => sites_link(data),
        }
    }
}

/// Decoding can never take more records than there are bytes.
fn bounded<T>(data: &[u8], mut next: impl FnMut() -> Option<T>) {
    for _ in 0..=data.len() {
        if next().is_none() {
            return;
        }
    }
    panic!("a reader returned more items than its input has bytes");
}

fn log_frame(data: &[u8]) {
    let mut rest = data;
    // A resume's records come packed: unpacked as the follower does, then decoded.
    while pack::is_packed(rest) {
        let Ok(Some((frames, used))) = pack::split_packed(rest) else { break };
        assert!(used > 0 && used <= rest.len() && frames.len() <= pack::MAX_PACKED_RAW);
        let mut inner = frames.as_slice();
        while let Ok(Some((_, n))) = codec::decode(inner) {
            inner = &inner[n..];
        }
        rest = &rest[used..];
    }
    while let Ok(Some((record, used))) = codec::decode(rest) {
        assert!(used > 0 && used <= rest.len(), "decode consumed {used} of {}", rest.len());
        let mut again = Vec::new();
        codec::encode(&record, &mut again);
        assert_eq!(again, rest[..used], "a decoded record re-encodes differently");
        rest = &rest[used..];
    }
    let mut reader = RecordReader::new(Cursor::new(data));
    let mut sequencer = Sequencer::new();
    bounded(data, || {
        let record = reader.next_record().ok()??;
        sequencer.check(&record).ok()
    });
}

fn log_file(data: &[u8]) {
    let Ok((mut reader, _header)) = LogReader::open(Cursor::new(data)) else { return };
    bounded(data, || reader.next_record().ok()?);
    let _ = reader.is_complete();
}

fn channel_target(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((message, used))) = channel::decode(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut again = Vec::new();
        channel::encode(&message, &mut again);
        assert_eq!(channel::decode(&again).ok().flatten().map(|(m, _)| m), Some(message), "round trip");
        rest = &rest[used..];
    }
    let mut reader = MessageReader::new(Cursor::new(data));
    bounded(data, || reader.next_message().ok()?);
}

fn state_target(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((message, used))) = state::decode(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
        let _ = message;
    }
    let mut reader = StateReader::new(Cursor::new(data));
    bounded(data, || reader.next_message().ok()?);
}

/// Small limits, so that the memory limit, the output cap and the backlog are reached.
fn resp_limits() -> Limits {
    Limits { max_memory_bytes: 256 * 1024, max_conn_buffer: 64 * 1024, ..Limits::default() }
}

fn resp(data: &[u8]) {
    let mut store = Store::new(resp_limits());
    let mut conn = Conn::new();
    let info = ServerInfo::default();
    let mut out = Vec::new();
    // The first byte picks the segment size: requests split anywhere, as TCP does.
    let (size, body) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b).max(1) * 7, rest),
        None => (1, data),
    };
    for (i, chunk) in body.chunks(size).enumerate() {
        let now = 1_000 + i as u64 * 250;
        if conn.feed(chunk, &mut store, now, &info, &mut out) == ConnStatus::Close {
            return;
        }
        // Drain a backlog the way the guest does; each call makes progress.
        for _ in 0..=body.len() {
            if !conn.has_backlog() {
                break;
            }
            out.clear();
            if conn.feed(&[], &mut store, now, &info, &mut out) == ConnStatus::Close {
                return;
            }
        }
        assert!(!conn.has_backlog(), "a backlog that never drains");
        out.clear();
        store.expire_some(now, 16);
    }
}

fn sites_wire(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, used))) = wire::decode(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut again = Vec::new();
        wire::encode(&frame, &mut again);
        assert_eq!(wire::decode(&again).ok().flatten().map(|(f, _)| f), Some(frame), "round trip");
        rest = &rest[used..];
    }
}

fn sites_link(data: &[u8]) {
    let policy = match data.first().map(|b| b % 4) {
        Some(0) => Policy::Lww,
        Some(1) => Policy::SiteId,
        Some(2) => Policy::Manual,
        _ => Policy::Merge,
    };
    let mut store = SiteStore::new(seeds::site_config(1, policy));
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    for (i, chunk) in data.get(1..).unwrap_or(&[]).chunks(97).enumerate() {
        if inbound.receive(chunk, &mut store, 2_000 + i as u64, &mut out).is_err() {
            return;
        }
        out.clear();
    }
}
