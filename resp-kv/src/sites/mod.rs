//! Multi-leader replication between sites (handbook chapter 3).
//!
//! Each site is a leader: it accepts writes from its own clients and streams them,
//! asynchronously, to every other site over the site link ([`wire`], [`link`]). Every
//! write carries its origin, a hybrid logical clock timestamp ([`hlc`]) and the key's
//! version vector at the origin ([`vv`]), so each site can tell, per key and
//! deterministically, whether two writes conflict (neither saw the other). What a read
//! then returns is the [`Policy`]'s business ([`keystate`]):
//!
//! | policy  | concurrent writes to one key become...             | what is lost                       |
//! |---------|----------------------------------------------------|------------------------------------|
//! | lww     | the highest HLC timestamp (ties: higher site id)   | every other concurrent write       |
//! | site-id | the highest site id's write                        | lower sites' concurrent writes     |
//! | manual  | all kept as siblings until RESOLVE                 | nothing (until a client picks)     |
//! | merge   | counters add, strings join, sets add-wins          | nothing; but a join may be useless |
//!
//! Nothing here reads a clock: the guest passes its tick-based `now_ms`, and boot info
//! supplies the wall-clock base, so a replayed guest makes exactly the same decisions.

mod cmds;
pub mod hlc;
pub mod keystate;
pub mod link;
mod store;
pub mod vv;
pub mod wire;

pub(crate) use cmds::{lookup as lookup_command, not_replicated_text};
pub use keystate::{Op, Policy, Value, Write};
pub use store::{LogEntry, SiteError, SiteStats, SiteStore, MAX_FUTURE_MS};
pub use vv::{Dot, SiteId, VersionVector};

use alloc::vec::Vec;

/// Most sites one configuration may name (boot info has room for this many).
pub const MAX_SITES: usize = 8;
/// manual: CONFLICTS lists at most this many siblings, newest first; older ones are
/// folded away (counted in INFO as `sites_siblings_folded`). A key never holds more
/// than one sibling per site, so with up to this many sites nothing is ever folded.
pub const MAX_SIBLINGS: usize = 4;

/// One site's address on the site link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteAddr {
    /// 1..=255.
    pub id: SiteId,
    /// IPv4 address of the site's guest.
    pub ip: [u8; 4],
    /// Its site-link port.
    pub port: u16,
}

/// How a site is configured (from boot info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// This site.
    pub site_id: SiteId,
    /// Conflict policy; every site must use the same one.
    pub policy: Policy,
    /// Every site, this one included, sorted by id.
    pub sites: Vec<SiteAddr>,
    /// Unix milliseconds at guest time 0: boot wall clock plus `--clock-offset-ms`.
    pub wall_base_ms: u64,
    /// Local writes are refused while the outgoing log holds this many bytes
    /// not yet acknowledged by every peer.
    pub max_log_bytes: usize,
    /// Local writes are refused past this keyspace size.
    pub max_memory_bytes: usize,
}

impl SiteConfig {
    /// Digest of the site list, compared by the site link's handshake.
    pub fn sites_digest(&self) -> u64 {
        let mut h = Fnv::new();
        let mut sites = self.sites.clone();
        sites.sort();
        for s in &sites {
            h.byte(s.id);
            h.bytes(&s.ip);
            h.u64(u64::from(s.port));
        }
        h.finish()
    }

    /// This site's own entry.
    pub fn me(&self) -> Option<&SiteAddr> {
        self.sites.iter().find(|s| s.id == self.site_id)
    }
}

/// FNV-1a, 64-bit: a small, dependency-free, deterministic hash for digests (not for
/// security: the site link is for cooperating sites; its checksum is CRC-32).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv {
    /// The FNV offset basis.
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Hash one byte.
    pub fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }

    /// Hash a length-prefixed byte string (so `"ab","c"` differs from `"a","bc"`).
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        b.iter().for_each(|&x| self.byte(x));
    }

    /// Hash a u64, little-endian.
    pub fn u64(&mut self, v: u64) {
        v.to_le_bytes().iter().for_each(|&x| self.byte(x));
    }

    /// The digest.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// `format!` into bytes without `alloc::fmt::format`, whose unwinding landing pads the
/// `panic = "abort"` guest cannot link.
pub(crate) fn text(args: core::fmt::Arguments) -> Vec<u8> {
    struct Bytes(Vec<u8>);
    impl core::fmt::Write for Bytes {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    let mut b = Bytes(Vec::new());
    let _ = core::fmt::write(&mut b, args);
    b.0
}
