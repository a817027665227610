//! The keyspace: byte-string keys to byte-string values, with optional expiry times.
//!
//! Ordered maps keep iteration and memory use deterministic, which matters because the
//! VMM replays the guest: the same inputs must give the same store on every replica.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::sites::{SiteConfig, SiteStore};
use crate::Limits;

/// Bookkeeping cost charged per key besides its bytes (tree node, `Vec` headers...).
const ENTRY_OVERHEAD: usize = 64;
/// Extra cost of a key with a TTL: its copy in the expiry index plus the node.
const EXPIRY_OVERHEAD: usize = 48;

/// The write would push memory use past `Limits::max_memory_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    /// Guest-clock millisecond after which the key no longer exists.
    expires_at: Option<u64>,
}

/// The keyspace, shared by all connections.
#[derive(Debug, Clone)]
pub struct Store {
    limits: Limits,
    entries: BTreeMap<Vec<u8>, Entry>,
    /// `(expires_at, key)` for every key with a TTL, soonest first, so sweeps are cheap.
    expiry_index: BTreeSet<(u64, Vec<u8>)>,
    used_bytes: usize,
    next_client_id: u64,
    /// Multi-leader sites mode: key commands go to this replicated keyspace instead.
    pub(crate) sites: Option<alloc::boxed::Box<SiteStore>>,
}

fn cost(key_len: usize, value_len: usize, has_ttl: bool) -> usize {
    let ttl_cost = if has_ttl { key_len.saturating_add(EXPIRY_OVERHEAD) } else { 0 };
    key_len.saturating_add(value_len).saturating_add(ENTRY_OVERHEAD).saturating_add(ttl_cost)
}

fn is_expired(entry: &Entry, now_ms: u64) -> bool {
    // As Redis: a key expiring at T still exists at T and is gone after it.
    entry.expires_at.is_some_and(|at| now_ms > at)
}

impl Store {
    /// An empty keyspace bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Store {
            limits,
            entries: BTreeMap::new(),
            expiry_index: BTreeSet::new(),
            used_bytes: 0,
            next_client_id: 1,
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
        self.entries.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

    /// Remove at most `budget` keys whose TTL passed before `now_ms`; returns how many.
    /// Cost is O(budget · log n), so the guest can call it from its main loop.
    pub fn expire_some(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut removed = 0usize;
        while removed < budget {
            let Some((at, key)) = self.expiry_index.first().cloned() else {
                break;
            };
            if now_ms <= at {
                break;
            }
            self.remove(&key);
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

    /// A fresh id for a connection that asks (`CLIENT ID`, `HELLO`); deterministic.
    pub(crate) fn allocate_client_id(&mut self) -> u64 {
        let id = self.next_client_id;
        self.next_client_id = id.saturating_add(1);
        id
    }

    /// Drop `key` if its TTL has passed, so every read sees only live keys.
    fn purge_if_expired(&mut self, key: &[u8], now_ms: u64) {
        if self.entries.get(key).is_some_and(|e| is_expired(e, now_ms)) {
            self.remove(key);
        }
    }

    /// The live value of `key`.
    pub(crate) fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        self.purge_if_expired(key, now_ms);
        self.entries.get(key).map(|e| e.value.as_slice())
    }

    /// Whether `key` exists (after lazy expiry).
    pub(crate) fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// The live key's expiry time: `None` if absent, `Some(None)` if it has no TTL.
    pub(crate) fn expiry(&mut self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        self.purge_if_expired(key, now_ms);
        self.entries.get(key).map(|e| e.expires_at)
    }

    /// Delete `key`; true if a live key was removed.
    pub(crate) fn delete(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.purge_if_expired(key, now_ms);
        self.remove(key)
    }

    /// Delete everything.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.expiry_index.clear();
        self.used_bytes = 0;
    }

    /// Bytes `key` currently costs (0 if absent).
    fn cost_of(&self, key: &[u8]) -> usize {
        self.entries.get(key).map_or(0, |e| cost(key.len(), e.value.len(), e.expires_at.is_some()))
    }

    /// Would replacing `old` bytes with `new` bytes stay within the memory limit?
    /// Shrinking writes are always allowed.
    fn fits(&self, old: usize, new: usize) -> bool {
        new <= old || self.used_bytes.saturating_sub(old).saturating_add(new) <= self.limits.max_memory_bytes
    }

    /// Store `value` under `key`. `expires_at: None` keeps the key's current TTL when
    /// `keep_ttl`, else removes it. The store is unchanged when the write does not fit.
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        expires_at: Option<u64>,
        keep_ttl: bool,
        now_ms: u64,
    ) -> Result<(), OutOfMemory> {
        self.purge_if_expired(key, now_ms);
        let expires_at = match (expires_at, keep_ttl) {
            (None, true) => self.entries.get(key).and_then(|e| e.expires_at),
            (at, _) => at,
        };
        let new_cost = cost(key.len(), value.len(), expires_at.is_some());
        if !self.fits(self.cost_of(key), new_cost) {
            return Err(OutOfMemory);
        }
        self.remove(key);
        self.insert(key.to_vec(), Entry { value, expires_at });
        Ok(())
    }

    /// Change the TTL of a live key (`None` removes it); false if the key is absent.
    pub(crate) fn set_expiry(&mut self, key: &[u8], expires_at: Option<u64>, now_ms: u64) -> Result<bool, OutOfMemory> {
        self.purge_if_expired(key, now_ms);
        let Some(value_len) = self.entries.get(key).map(|e| e.value.len()) else {
            return Ok(false);
        };
        let new_cost = cost(key.len(), value_len, expires_at.is_some());
        if !self.fits(self.cost_of(key), new_cost) {
            return Err(OutOfMemory);
        }
        if let Some((owned_key, mut entry)) = self.take(key) {
            entry.expires_at = expires_at;
            self.insert(owned_key, entry);
        }
        Ok(true)
    }

    /// Append `suffix` to the value at `key` (creating it), keeping any TTL; returns the
    /// new length. In place, so repeated appends stay linear rather than quadratic.
    pub(crate) fn append(&mut self, key: &[u8], suffix: &[u8], now_ms: u64) -> Result<usize, OutOfMemory> {
        self.purge_if_expired(key, now_ms);
        if !self.entries.contains_key(key) {
            self.set(key, suffix.to_vec(), None, false, now_ms)?;
            return Ok(suffix.len());
        }
        if !self.fits(0, suffix.len()) {
            return Err(OutOfMemory);
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return Ok(0);
        };
        entry.value.extend_from_slice(suffix);
        self.used_bytes = self.used_bytes.saturating_add(suffix.len());
        Ok(entry.value.len())
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
            self.remove(&key);
            let entry = Entry { value, expires_at: None };
            self.insert(key, entry);
        }
        Ok(())
    }

    fn insert(&mut self, key: Vec<u8>, entry: Entry) {
        let entry_cost = cost(key.len(), entry.value.len(), entry.expires_at.is_some());
        self.used_bytes = self.used_bytes.saturating_add(entry_cost);
        if let Some(at) = entry.expires_at {
            self.expiry_index.insert((at, key.clone()));
        }
        self.entries.insert(key, entry);
    }

    fn take(&mut self, key: &[u8]) -> Option<(Vec<u8>, Entry)> {
        let (owned_key, entry) = self.entries.remove_entry(key)?;
        let entry_cost = cost(key.len(), entry.value.len(), entry.expires_at.is_some());
        self.used_bytes = self.used_bytes.saturating_sub(entry_cost);
        if let Some(at) = entry.expires_at {
            self.expiry_index.remove(&(at, owned_key.clone()));
        }
        Some((owned_key, entry))
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        self.take(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_bytes_returns_to_zero_after_deleting_everything() {
        let mut store = Store::new(Limits::default());
        store.set(b"a", b"1".to_vec(), Some(10), false, 0).unwrap();
        store.set(b"b", b"22".to_vec(), None, false, 0).unwrap();
        store.set_expiry(b"b", Some(5), 0).unwrap();
        assert!(store.delete(b"a", 0));
        assert!(store.delete(b"b", 0));
        assert_eq!(store.used_bytes(), 0);
        assert_eq!(store.expires_count(), 0);
    }

    #[test]
    fn expire_some_respects_budget_and_time() {
        let mut store = Store::new(Limits::default());
        for k in 0u8..5 {
            store.set(&[k], b"v".to_vec(), Some(u64::from(k)), false, 0).unwrap();
        }
        assert_eq!(store.expire_some(3, 2), 2);
        assert_eq!(store.expire_some(3, 10), 1);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn keep_ttl_preserves_expiry_on_overwrite() {
        let mut store = Store::new(Limits::default());
        store.set(b"k", b"1".to_vec(), Some(100), false, 0).unwrap();
        store.set(b"k", b"2".to_vec(), None, true, 0).unwrap();
        assert_eq!(store.expiry(b"k", 0), Some(Some(100)));
        store.set(b"k", b"3".to_vec(), None, false, 0).unwrap();
        assert_eq!(store.expiry(b"k", 0), Some(None));
    }
}
