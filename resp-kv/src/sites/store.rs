//! A site's replicated keyspace: local writes, remote writes, the outgoing log and
//! the per-peer cursors. All of it is plain memory, so it lives in the guest and is
//! replicated (and replayed) with the rest of the VM.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use super::hlc::{Hlc, Timestamp};
use super::keystate::{Applied, KeyState, Op, Policy, Value, Write};
use super::vv::SiteId;
use super::{Fnv, SiteConfig};

/// A remote write whose HLC is further ahead of our clock than this is refused:
/// a peer with a broken clock would otherwise win every lww conflict forever.
pub const MAX_FUTURE_MS: u64 = 60_000;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteError {
    /// Local write refused: the outgoing log holds `bytes` not yet acknowledged by `peer`.
    LogFull { peer: SiteId, bytes: usize },
    /// Local write refused: the keyspace is at its memory limit.
    OutOfMemory,
    /// Remote record from a site not in `--sites`.
    UnknownSite(SiteId),
    /// Remote record claiming to come from this very site.
    FromSelf,
    /// Remote record skipping sequence numbers: records were lost.
    Gap { origin: SiteId, expected: u64, got: u64 },
    /// Remote record timestamped too far ahead of this site's clock.
    Future { wall_ms: u64, now_ms: u64 },
    /// Remote record whose op does not exist under this site's policy, or whose dot
    /// names another origin.
    BadRecord(&'static str),
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteError::LogFull { peer, bytes } => write!(
                f,
                "site link log full: {bytes} bytes not yet acknowledged by site {peer}; writes resume once it reconnects and catches up"
            ),
            SiteError::OutOfMemory => write!(f, "keyspace at its memory limit; delete keys or give the VM more memory"),
            SiteError::UnknownSite(s) => write!(f, "record from site {s}, which is not in --sites; start every site with the same --sites"),
            SiteError::FromSelf => write!(f, "record claims to come from this site; two sites share a --site-id"),
            SiteError::Gap { origin, expected, got } => {
                write!(f, "record {got} from site {origin} but {expected} expected: records lost; the link reconnects from the cursor")
            }
            SiteError::Future { wall_ms, now_ms } => write!(
                f,
                "record timestamped {wall_ms} ms, more than {MAX_FUTURE_MS} ms ahead of this site's clock ({now_ms} ms); fix the peer's clock"
            ),
            SiteError::BadRecord(why) => write!(f, "malformed record: {why}"),
        }
    }
}

/// Counters INFO reports under `# Sites`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SiteStats {
    /// Writes accepted from this site's clients.
    pub local_writes: u64,
    /// Remote writes applied.
    pub remote_applied: u64,
    /// Remote writes already seen by a write this site had (their effect was included).
    pub remote_superseded: u64,
    /// Remote records skipped because they were applied before (a resent tail).
    pub duplicates: u64,
    /// Writes found concurrent with another live write.
    pub conflicts: u64,
    /// lww / site-id: conflicting writes whose value was dropped (the handbook's data loss).
    pub lost_writes: u64,
    /// manual: siblings beyond [`super::MAX_SIBLINGS`] left out of CONFLICTS.
    pub siblings_folded: u64,
    /// Remote records refused (bad site, gap, future timestamp...).
    pub refused: u64,
}

/// One entry of the outgoing log: this site's `seq`-th write, already framed for the
/// site link (encoded once, however many peers it goes to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// 1-based, per origin, across all keys.
    pub seq: u64,
    /// The WRITE frame, as [`super::wire::encode`] made it.
    pub frame: Vec<u8>,
}

/// A site's keyspace and replication state.
#[derive(Debug, Clone)]
pub struct SiteStore {
    config: SiteConfig,
    hlc: Hlc,
    keys: BTreeMap<Vec<u8>, KeyState>,
    used_bytes: usize,
    log: VecDeque<LogEntry>,
    log_bytes: usize,
    next_seq: u64,
    /// Per origin: highest of its records applied here (the receive cursor).
    applied: BTreeMap<SiteId, u64>,
    /// Per peer: highest of our records it acknowledged (the send cursor's floor).
    acked: BTreeMap<SiteId, u64>,
    stats: SiteStats,
}

impl SiteStore {
    /// An empty keyspace for the site `config` describes.
    pub fn new(config: SiteConfig) -> Self {
        SiteStore {
            config,
            hlc: Hlc::default(),
            keys: BTreeMap::new(),
            used_bytes: 0,
            log: VecDeque::new(),
            log_bytes: 0,
            next_seq: 1,
            applied: BTreeMap::new(),
            acked: BTreeMap::new(),
            stats: SiteStats::default(),
        }
    }

    /// The configuration this store was made with.
    pub fn config(&self) -> &SiteConfig {
        &self.config
    }

    /// The conflict policy.
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// INFO counters.
    pub fn stats(&self) -> &SiteStats {
        &self.stats
    }

    /// This site's physical clock: boot wall time (plus offset) plus guest uptime.
    pub fn phys_ms(&self, now_ms: u64) -> u64 {
        self.config.wall_base_ms.saturating_add(now_ms)
    }

    /// The HLC's latest timestamp.
    pub fn hlc(&self) -> Timestamp {
        self.hlc.last()
    }

    /// A key's state, tombstones included.
    pub fn key(&self, key: &[u8]) -> Option<&KeyState> {
        self.keys.get(key)
    }

    /// What a read of `key` returns under the policy.
    pub fn read(&self, key: &[u8]) -> Value {
        self.keys.get(key).map_or(Value::Absent, |k| k.read(self.config.policy))
    }

    /// Keys whose read is not absent.
    pub fn live_len(&self) -> usize {
        self.keys.values().filter(|k| k.read(self.config.policy) != Value::Absent).count()
    }

    /// Keys holding concurrent values (what manual asks a client to RESOLVE).
    pub fn conflicted_keys(&self) -> usize {
        self.keys.values().filter(|k| k.conflicted()).count()
    }

    /// Approximate keyspace bytes.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Accept a write from a client: `make` turns the key's current state into the op
    /// (or refuses with its own error). The write is applied and queued for every peer.
    pub fn local_write<E>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        make: impl FnOnce(&KeyState, Policy) -> Result<Op, E>,
    ) -> Result<Result<(), SiteError>, E> {
        let empty = KeyState::default();
        let state = self.keys.get(key).unwrap_or(&empty);
        let op = make(state, self.config.policy)?;
        let dot = state.vv().next_dot(self.config.site_id);
        let ctx = state.vv().clone();
        if let Some(err) = self.log_full() {
            return Ok(Err(err));
        }
        let write_bytes = write_size(key, &op);
        if self.used_bytes.saturating_add(write_bytes) > self.config.max_memory_bytes {
            return Ok(Err(SiteError::OutOfMemory));
        }
        let hlc = self.hlc.now(self.phys_ms(now_ms));
        let write = Write { key: key.to_vec(), dot, hlc, ctx, op };
        self.apply(&write);
        self.stats.local_writes = self.stats.local_writes.saturating_add(1);
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        // A site configured alone has nobody to send its log to.
        if self.peers().next().is_some() {
            let mut frame = Vec::new();
            super::wire::encode(&super::wire::Frame::Write { seq, write }, &mut frame);
            self.log_bytes = self.log_bytes.saturating_add(frame.len());
            self.log.push_back(LogEntry { seq, frame });
        }
        Ok(Ok(()))
    }

    /// The peer holding the log past its bound, if any.
    fn log_full(&self) -> Option<SiteError> {
        if self.log_bytes < self.config.max_log_bytes {
            return None;
        }
        let peer = self.peers().min_by_key(|p| self.acked.get(p).copied().unwrap_or(0)).unwrap_or(0);
        Some(SiteError::LogFull { peer, bytes: self.log_bytes })
    }

    /// The other sites' ids.
    pub fn peers(&self) -> impl Iterator<Item = SiteId> + '_ {
        let me = self.config.site_id;
        self.config.sites.iter().map(|s| s.id).filter(move |&id| id != me)
    }

    fn apply(&mut self, w: &Write) -> Applied {
        let policy = self.config.policy;
        let state = self.keys.entry(w.key.clone()).or_default();
        let before = state.approx_bytes();
        let applied = state.apply(w);
        let after = state.approx_bytes();
        let siblings = state.siblings().len();
        self.used_bytes = self.used_bytes.saturating_sub(before).saturating_add(after);
        if applied.conflict {
            self.stats.conflicts = self.stats.conflicts.saturating_add(1);
            if matches!(policy, Policy::Lww | Policy::SiteId) {
                self.stats.lost_writes = self.stats.lost_writes.saturating_add(1);
            }
            if policy == Policy::Manual && siblings > super::MAX_SIBLINGS {
                self.stats.siblings_folded = self.stats.siblings_folded.saturating_add(1);
            }
        }
        applied
    }

    /// Apply record `seq` of `origin`'s log. Records at or below the cursor are
    /// skipped (a reconnect resends a tail); anything refused leaves the data untouched.
    pub fn apply_remote(&mut self, origin: SiteId, seq: u64, w: &Write, now_ms: u64) -> Result<bool, SiteError> {
        let checked = self.check_remote(origin, seq, w, now_ms);
        match checked {
            Ok(false) => {
                self.stats.duplicates = self.stats.duplicates.saturating_add(1);
                return Ok(false);
            }
            Ok(true) => {}
            Err(e) => {
                self.stats.refused = self.stats.refused.saturating_add(1);
                return Err(e);
            }
        }
        self.hlc.observe(w.hlc);
        let applied = self.apply(w);
        if applied.superseded {
            self.stats.remote_superseded = self.stats.remote_superseded.saturating_add(1);
        }
        self.stats.remote_applied = self.stats.remote_applied.saturating_add(1);
        self.applied.insert(origin, seq);
        Ok(true)
    }

    /// Ok(true): apply; Ok(false): a duplicate; Err: refuse.
    fn check_remote(&self, origin: SiteId, seq: u64, w: &Write, now_ms: u64) -> Result<bool, SiteError> {
        if origin == self.config.site_id {
            return Err(SiteError::FromSelf);
        }
        if !self.config.sites.iter().any(|s| s.id == origin) {
            return Err(SiteError::UnknownSite(origin));
        }
        if w.dot.site != origin {
            return Err(SiteError::BadRecord("the write's dot names another origin"));
        }
        if w.ctx.entries().any(|(s, _)| !self.config.sites.iter().any(|c| c.id == s)) {
            return Err(SiteError::BadRecord("the write's version names a site not in --sites"));
        }
        if w.ctx.contains(w.dot) {
            return Err(SiteError::BadRecord("the write's context already contains its own dot"));
        }
        let merge_only = !matches!(w.op, Op::Assign { .. });
        if merge_only && self.config.policy != Policy::Merge {
            return Err(SiteError::BadRecord("a merge-only op under another policy"));
        }
        let done = self.applied_from(origin);
        if seq <= done {
            return Ok(false);
        }
        if seq != done.saturating_add(1) {
            return Err(SiteError::Gap { origin, expected: done.saturating_add(1), got: seq });
        }
        let now = self.phys_ms(now_ms);
        if w.hlc.wall_ms > now.saturating_add(MAX_FUTURE_MS) {
            return Err(SiteError::Future { wall_ms: w.hlc.wall_ms, now_ms: now });
        }
        Ok(true)
    }

    /// Highest record of `origin` applied here.
    pub fn applied_from(&self, origin: SiteId) -> u64 {
        self.applied.get(&origin).copied().unwrap_or(0)
    }

    /// `peer` holds our records up to `seq`; the log drops what every peer holds.
    pub fn ack(&mut self, peer: SiteId, seq: u64) {
        let seq = seq.min(self.next_seq.saturating_sub(1));
        let e = self.acked.entry(peer).or_insert(0);
        *e = (*e).max(seq);
        let floor = self.peers().map(|p| self.acked.get(&p).copied().unwrap_or(0)).min().unwrap_or(seq);
        while self.log.front().is_some_and(|e| e.seq <= floor) {
            if let Some(e) = self.log.pop_front() {
                self.log_bytes = self.log_bytes.saturating_sub(e.frame.len());
            }
        }
    }

    /// Highest of our records `peer` acknowledged.
    pub fn acked_by(&self, peer: SiteId) -> u64 {
        self.acked.get(&peer).copied().unwrap_or(0)
    }

    /// Our log entry `seq`, if still held.
    pub fn log_entry(&self, seq: u64) -> Option<&LogEntry> {
        let first = self.log.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.log.get(index)
    }

    /// Sequence number our next write will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the outgoing log.
    pub fn log_bytes(&self) -> usize {
        self.log_bytes
    }

    /// Digest of the whole replicated keyspace: equal at two sites exactly when they
    /// hold the same writes (tombstones and siblings included).
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        for (key, state) in &self.keys {
            h.bytes(key);
            state.digest(&mut h);
        }
        h.finish()
    }

    /// Keys tracked, deleted ones included: a delete leaves a tombstone, because a late
    /// write the delete had seen must still be recognised as superseded.
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}

/// Rough byte cost of a write in the log (and as growth of the keyspace).
fn write_size(key: &[u8], op: &Op) -> usize {
    let op_bytes = match op {
        Op::Assign { value: Value::Str(v), clear } => v.len().saturating_add(clear.len().saturating_mul(17)),
        Op::Assign { value: Value::Set(m), clear } => {
            m.iter().map(|e| e.len().saturating_add(4)).sum::<usize>().saturating_add(clear.len().saturating_mul(17))
        }
        Op::Assign { value: Value::Absent, clear } | Op::Counter { clear, .. } => clear.len().saturating_mul(17),
        Op::SetAdd(m) | Op::SetRem(m) => m.iter().map(|e| e.len().saturating_add(4)).sum(),
    };
    key.len().saturating_add(op_bytes).saturating_add(64)
}
