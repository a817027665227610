//! The keyspace: byte-string keys to byte-string values, with optional expiry times.
//!
//! Keys are kept in a `BTreeMap` ordered by a 64-bit FNV-1a hash of the key (a bucket
//! per hash value holds the rare collisions). Ordered maps keep iteration and memory use
//! deterministic, which matters because the VMM replays the guest: the same inputs must
//! give the same store on every replica. Hash order, rather than key order, is what
//! lets SCAN hand out a plain integer cursor (the next hash to look at) that stays
//! valid while keys come and go, as Redis' cursor does.
//!
//! `watch.rs` holds WATCH's registry (which connection watches which key); every
//! change to a key goes through [`Store::insert`] or [`Store::take`], which flag its
//! watchers. `iter.rs` has the walks over the whole keyspace (KEYS, SCAN, RANDOMKEY).

mod bucket;
mod iter;
mod watch;

use alloc::collections::{btree_map, BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::parse::parse_i64;
use crate::sites::{SiteConfig, SiteStore};
use crate::Limits;
use bucket::Bucket;

/// Bookkeeping cost charged per key besides its bytes (tree node, `Vec` headers...).
const ENTRY_OVERHEAD: usize = 64;
/// Extra cost of a key with a TTL: its copy in the expiry index plus the node.
const EXPIRY_OVERHEAD: usize = 48;
/// Redis keeps strings up to this length in one allocation with their header
/// (`OBJ_ENCODING_EMBSTR_SIZE_LIMIT`); OBJECT ENCODING reports it.
const EMBSTR_MAX: usize = 44;

/// The write would push memory use past `Limits::max_memory_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// How Redis would hold a string, as `OBJECT ENCODING` reports it. It depends on the
/// command that wrote the value, not only on its bytes, so it is kept per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enc {
    Int,
    Embstr,
    Raw,
}

impl Enc {
    /// What SET, MSET, GETSET... store (Redis' `tryObjectEncoding`): an integer that
    /// fits a `long` becomes `int`, a short string `embstr`, anything else `raw`.
    pub(crate) fn natural(value: &[u8]) -> Enc {
        if value.len() <= 20 && parse_i64(value).is_some() {
            Enc::Int
        } else {
            Enc::created(value)
        }
    }

    /// A freshly made string object that is not tried as an integer (INCRBYFLOAT).
    pub(crate) fn created(value: &[u8]) -> Enc {
        if value.len() <= EMBSTR_MAX {
            Enc::Embstr
        } else {
            Enc::Raw
        }
    }

    /// The name OBJECT ENCODING replies.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Enc::Int => "int",
            Enc::Embstr => "embstr",
            Enc::Raw => "raw",
        }
    }
}

/// What a write does to the key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// Remove any TTL (plain SET).
    Clear,
    /// Keep the key's current TTL (KEEPTTL, INCR, APPEND...).
    Keep,
    /// Expire at this guest-clock millisecond.
    At(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    /// Guest-clock millisecond after which the key no longer exists.
    pub(crate) expires_at: Option<u64>,
    pub(crate) enc: Enc,
}

/// The keyspace, shared by all connections.
#[derive(Debug, Clone)]
pub struct Store {
    limits: Limits,
    buckets: BTreeMap<u64, Bucket>,
    keys: usize,
    /// `(expires_at, key)` for every key with a TTL, soonest first, so sweeps are cheap.
    expiry_index: BTreeSet<(u64, Vec<u8>)>,
    used_bytes: usize,
    next_client_id: u64,
    /// RANDOMKEY draws: part of the state, so a replica draws the same keys.
    random_draws: u64,
    watches: watch::Watches,
    /// Multi-leader sites mode: key commands go to this replicated keyspace instead.
    pub(crate) sites: Option<alloc::boxed::Box<SiteStore>>,
}

fn cost(key_len: usize, value_len: usize, has_ttl: bool) -> usize {
    let ttl_cost = if has_ttl { key_len.saturating_add(EXPIRY_OVERHEAD) } else { 0 };
    key_len.saturating_add(value_len).saturating_add(ENTRY_OVERHEAD).saturating_add(ttl_cost)
}

fn entry_cost(key: &[u8], entry: &Entry) -> usize {
    cost(key.len(), entry.value.len(), entry.expires_at.is_some())
}

fn is_expired(entry: &Entry, now_ms: u64) -> bool {
    // As Redis: a key expiring at T still exists at T and is gone after it.
    entry.expires_at.is_some_and(|at| now_ms > at)
}

/// FNV-1a, 64-bit, then splitmix64's finalizer: deterministic on every replica (no
/// per-process seed). The finalizer matters: FNV alone leaves keys that differ only in
/// their last bytes (`key:1`, `key:2`) with nearly equal high bits, which would bunch
/// them together in hash order and make RANDOMKEY favour a few keys.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let fnv = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    iter::mix(fnv)
}

impl Store {
    /// An empty keyspace bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Store {
            limits,
            buckets: BTreeMap::new(),
            keys: 0,
            expiry_index: BTreeSet::new(),
            used_bytes: 0,
            next_client_id: 1,
            random_draws: 0,
            watches: watch::Watches::default(),
            sites: None,
        }
    }

    /// A store in multi-leader sites mode: the key commands GET/SET/DEL/INCR/SADD...
    /// work on a replicated keyspace that [`Store::sites_mut`] exposes to the site link.
    pub fn with_sites(limits: Limits, config: SiteConfig) -> Self {
        let mut store = Store::new(limits);
        store.sites = Some(alloc::boxed::Box::new(SiteStore::new(config)));
        store
    }

    /// The replicated keyspace, in sites mode.
    pub fn sites(&self) -> Option<&SiteStore> {
        self.sites.as_deref()
    }

    /// The replicated keyspace, in sites mode (the site link applies remote writes here).
    pub fn sites_mut(&mut self) -> Option<&mut SiteStore> {
        self.sites.as_deref_mut()
    }

    /// Number of stored keys, including expired keys not yet swept (see
    /// [`Store::expire_some`]); `DBSIZE` sweeps first, so it never counts those.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Approximate bytes held by the keyspace (keys, values and per-key overhead);
    /// the figure `max_memory_bytes` is checked against.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// The limits this store (and every connection using it) enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Active expiry: remove at most `budget` keys whose TTL passed before `now_ms`;
    /// returns how many. Cost is O(budget · log n), so the guest calls it from its main
    /// loop on its tick clock, and a replay removes the same keys at the same points.
    pub fn expire_some(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut removed = 0usize;
        while removed < budget {
            let Some((at, key)) = self.expiry_index.first().cloned() else {
                break;
            };
            if now_ms <= at {
                break;
            }
            self.take(&key);
            removed = removed.saturating_add(1);
        }
        removed
    }

    /// Sweep every expired key (used before reporting key counts).
    pub(crate) fn expire_all(&mut self, now_ms: u64) {
        self.expire_some(now_ms, usize::MAX);
    }

    /// Number of keys carrying a TTL.
    pub(crate) fn expires_count(&self) -> usize {
        self.expiry_index.len()
    }

    /// A fresh id for a connection that asks (`CLIENT ID`, `HELLO`, `WATCH`); deterministic.
    pub(crate) fn allocate_client_id(&mut self) -> u64 {
        let id = self.next_client_id;
        self.next_client_id = id.saturating_add(1);
        id
    }

    fn find(&self, key: &[u8]) -> Option<&Entry> {
        self.buckets.get(&key_hash(key))?.find(key)
    }

    fn find_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.buckets.get_mut(&key_hash(key))?.find_mut(key)
    }

    /// Drop `key` if its TTL has passed, so every read sees only live keys.
    pub(crate) fn purge_if_expired(&mut self, key: &[u8], now_ms: u64) {
        if self.find(key).is_some_and(|e| is_expired(e, now_ms)) {
            self.take(key);
        }
    }

    /// The live entry at `key`.
    pub(crate) fn entry(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.purge_if_expired(key, now_ms);
        self.find(key)
    }

    /// The live value of `key`.
    pub(crate) fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        self.entry(key, now_ms).map(|e| e.value.as_slice())
    }

    /// Whether `key` exists (after lazy expiry).
    pub(crate) fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.entry(key, now_ms).is_some()
    }

    /// The live key's expiry time: `None` if absent, `Some(None)` if it has no TTL.
    pub(crate) fn expiry(&mut self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        self.entry(key, now_ms).map(|e| e.expires_at)
    }

    /// Delete `key`; true if a live key was removed.
    pub(crate) fn delete(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.purge_if_expired(key, now_ms);
        self.take(key).is_some()
    }

    /// Delete everything (FLUSHALL); watchers of keys that existed are flagged.
    pub(crate) fn clear(&mut self) {
        let watched: Vec<Vec<u8>> = self.watches.keys().filter(|k| self.find(k).is_some()).cloned().collect();
        for key in &watched {
            self.watches.touch(key);
        }
        self.buckets.clear();
        self.keys = 0;
        self.expiry_index.clear();
        self.used_bytes = 0;
    }

    /// Bytes `key` currently costs (0 if absent).
    fn cost_of(&self, key: &[u8]) -> usize {
        self.find(key).map_or(0, |e| entry_cost(key, e))
    }

    /// Would replacing `old` bytes with `new` bytes stay within the memory limit?
    /// Shrinking writes are always allowed.
    fn fits(&self, old: usize, new: usize) -> bool {
        new <= old || self.used_bytes.saturating_sub(old).saturating_add(new) <= self.limits.max_memory_bytes
    }

    /// Store `value` (SET's encoding rules) under `key`. `expires_at: None` keeps the
    /// key's current TTL when `keep_ttl`, else removes it.
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        expires_at: Option<u64>,
        keep_ttl: bool,
        now_ms: u64,
    ) -> Result<(), OutOfMemory> {
        let ttl = match (expires_at, keep_ttl) {
            (Some(at), _) => Ttl::At(at),
            (None, true) => Ttl::Keep,
            (None, false) => Ttl::Clear,
        };
        let enc = Enc::natural(&value);
        self.write(key, value, enc, ttl, now_ms)
    }

    /// Store `value` under `key` with the given encoding and TTL rule. The store is
    /// unchanged when the write does not fit.
    pub(crate) fn write(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        enc: Enc,
        ttl: Ttl,
        now_ms: u64,
    ) -> Result<(), OutOfMemory> {
        self.purge_if_expired(key, now_ms);
        let expires_at = match ttl {
            Ttl::Keep => self.find(key).and_then(|e| e.expires_at),
            Ttl::Clear => None,
            Ttl::At(at) => Some(at),
        };
        let new_cost = cost(key.len(), value.len(), expires_at.is_some());
        let old_cost = self.cost_of(key);
        if !self.fits(old_cost, new_cost) {
            return Err(OutOfMemory);
        }
        let Some(entry) = self.find_mut(key) else {
            self.insert(key.to_vec(), Entry { value, expires_at, enc });
            return Ok(());
        };
        // Overwrite in place: no tree node or bucket is freed and made again.
        let old_at = core::mem::replace(entry, Entry { value, expires_at, enc }).expires_at;
        self.reindex_expiry(key, old_at, expires_at);
        self.used_bytes = self.used_bytes.saturating_sub(old_cost).saturating_add(new_cost);
        self.watches.touch(key);
        Ok(())
    }

    /// Change the TTL of a live key (`None` removes it); false if the key is absent.
    pub(crate) fn set_expiry(&mut self, key: &[u8], expires_at: Option<u64>, now_ms: u64) -> Result<bool, OutOfMemory> {
        self.purge_if_expired(key, now_ms);
        let Some(value_len) = self.find(key).map(|e| e.value.len()) else {
            return Ok(false);
        };
        let new_cost = cost(key.len(), value_len, expires_at.is_some());
        let old_cost = self.cost_of(key);
        if !self.fits(old_cost, new_cost) {
            return Err(OutOfMemory);
        }
        let old_at = self.find_mut(key).and_then(|entry| core::mem::replace(&mut entry.expires_at, expires_at));
        self.reindex_expiry(key, old_at, expires_at);
        self.used_bytes = self.used_bytes.saturating_sub(old_cost).saturating_add(new_cost);
        self.watches.touch(key);
        Ok(true)
    }

    /// Moves a live `key` in the expiry index from `old_at` to `new_at` (either may be
    /// none: no expiry); nothing when they are the same.
    fn reindex_expiry(&mut self, key: &[u8], old_at: Option<u64>, new_at: Option<u64>) {
        if old_at == new_at {
            return;
        }
        if let Some(at) = old_at {
            self.expiry_index.remove(&(at, key.to_vec()));
        }
        if let Some(at) = new_at {
            self.expiry_index.insert((at, key.to_vec()));
        }
    }

    /// Append `suffix` to the value at `key` (creating it), keeping any TTL; returns the
    /// new length. In place, so repeated appends stay linear rather than quadratic.
    pub(crate) fn append(&mut self, key: &[u8], suffix: &[u8], now_ms: u64) -> Result<usize, OutOfMemory> {
        let len = self.find_live_len(key, now_ms);
        let Some(len) = len else {
            // A new key is stored as SET would store it; appending makes it raw.
            self.write(key, suffix.to_vec(), Enc::natural(suffix), Ttl::Clear, now_ms)?;
            return Ok(suffix.len());
        };
        self.splice(key, len, suffix)
    }

    /// SETRANGE: overwrite `bytes` at `offset`, zero-padding a gap, creating the key if
    /// absent; returns the new length. The caller checks `offset + len` is allowed.
    pub(crate) fn set_range(
        &mut self,
        key: &[u8],
        offset: usize,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<usize, OutOfMemory> {
        let Some(len) = self.find_live_len(key, now_ms) else {
            let mut value = Vec::new();
            let total = offset.saturating_add(bytes.len());
            if !self.fits(0, cost(key.len(), total, false)) || value.try_reserve_exact(total).is_err() {
                return Err(OutOfMemory);
            }
            value.resize(offset, 0);
            value.extend_from_slice(bytes);
            self.write(key, value, Enc::Raw, Ttl::Clear, now_ms)?;
            return Ok(total);
        };
        self.splice(key, offset, bytes).map(|new_len| new_len.max(len))
    }

    fn find_live_len(&mut self, key: &[u8], now_ms: u64) -> Option<usize> {
        self.entry(key, now_ms).map(|e| e.value.len())
    }

    /// Write `bytes` at `offset` of an existing value in place (growing it with zeros
    /// as needed); the value becomes `raw`, as Redis unshares it. Returns the length.
    fn splice(&mut self, key: &[u8], offset: usize, bytes: &[u8]) -> Result<usize, OutOfMemory> {
        let old_len = self.find(key).map_or(0, |e| e.value.len());
        let end = offset.saturating_add(bytes.len());
        let growth = end.saturating_sub(old_len);
        if !self.fits(0, growth) {
            return Err(OutOfMemory);
        }
        let Some(entry) = self.find_mut(key) else {
            return Ok(0);
        };
        if entry.value.try_reserve(growth).is_err() {
            return Err(OutOfMemory);
        }
        if entry.value.len() < end {
            entry.value.resize(end, 0);
        }
        if let Some(dst) = entry.value.get_mut(offset..end) {
            dst.copy_from_slice(bytes);
        }
        entry.enc = Enc::Raw;
        let new_len = entry.value.len();
        self.used_bytes = self.used_bytes.saturating_add(growth);
        self.watches.touch(key);
        Ok(new_len)
    }

    /// Set several keys at once (clearing their TTLs), all or nothing: when the batch
    /// as a whole would not fit, nothing is written. Later duplicates win, as in MSET.
    pub(crate) fn set_many(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>, now_ms: u64) -> Result<(), OutOfMemory> {
        let mut last: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (key, value) in pairs {
            last.insert(key, value);
        }
        let mut old_total = 0usize;
        let mut new_total = 0usize;
        for (key, value) in &last {
            self.purge_if_expired(key, now_ms);
            old_total = old_total.saturating_add(self.cost_of(key));
            new_total = new_total.saturating_add(cost(key.len(), value.len(), false));
        }
        if !self.fits(old_total, new_total) {
            return Err(OutOfMemory);
        }
        for (key, value) in last {
            self.take(&key);
            let enc = Enc::natural(&value);
            self.insert(key, Entry { value, expires_at: None, enc });
        }
        Ok(())
    }

    /// RENAME: move the live `src` (value, TTL, encoding) to `dst`, replacing it.
    /// False when `src` does not exist. Renaming a key to itself changes nothing.
    pub(crate) fn rename(&mut self, src: &[u8], dst: &[u8], now_ms: u64) -> bool {
        self.purge_if_expired(src, now_ms);
        self.purge_if_expired(dst, now_ms);
        if self.find(src).is_none() {
            return false;
        }
        if src == dst {
            return true;
        }
        self.take(dst);
        if let Some((_, entry)) = self.take(src) {
            self.insert(dst.to_vec(), entry);
        }
        true
    }

    /// COPY: duplicate the live `src` (value, TTL, encoding) into `dst`.
    pub(crate) fn copy(&mut self, src: &[u8], dst: &[u8], now_ms: u64) -> Result<bool, OutOfMemory> {
        self.purge_if_expired(src, now_ms);
        self.purge_if_expired(dst, now_ms);
        let Some(entry) = self.find(src) else {
            return Ok(false);
        };
        let new_cost = cost(dst.len(), entry.value.len(), entry.expires_at.is_some());
        if !self.fits(self.cost_of(dst), new_cost) {
            return Err(OutOfMemory);
        }
        let mut value = Vec::new();
        if value.try_reserve_exact(entry.value.len()).is_err() {
            return Err(OutOfMemory);
        }
        value.extend_from_slice(&entry.value);
        let copy = Entry { value, expires_at: entry.expires_at, enc: entry.enc };
        self.take(dst);
        self.insert(dst.to_vec(), copy);
        Ok(true)
    }

    /// Add a key (absent before). Every change of a key goes through here, `take`, or
    /// an in-place update that also flags the connections watching it.
    fn insert(&mut self, key: Vec<u8>, entry: Entry) {
        self.used_bytes = self.used_bytes.saturating_add(entry_cost(&key, &entry));
        if let Some(at) = entry.expires_at {
            self.expiry_index.insert((at, key.clone()));
        }
        self.watches.touch(&key);
        self.keys = self.keys.saturating_add(1);
        match self.buckets.entry(key_hash(&key)) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert(Bucket::One(key, entry));
            }
            btree_map::Entry::Occupied(mut slot) => slot.get_mut().push(key, entry),
        }
    }

    /// Remove a key, expired or not; flags its watchers.
    fn take(&mut self, key: &[u8]) -> Option<(Vec<u8>, Entry)> {
        let hash = key_hash(key);
        let ((owned_key, entry), now_empty) = self.buckets.get_mut(&hash)?.remove(key)?;
        if now_empty {
            self.buckets.remove(&hash);
        }
        self.keys = self.keys.saturating_sub(1);
        self.used_bytes = self.used_bytes.saturating_sub(entry_cost(&owned_key, &entry));
        if let Some(at) = entry.expires_at {
            self.expiry_index.remove(&(at, owned_key.clone()));
        }
        self.watches.touch(&owned_key);
        Some((owned_key, entry))
    }
}

#[cfg(test)]
mod tests;
