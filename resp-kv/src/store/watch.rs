//! WATCH's registry: which connections watch which keys, and which connections saw a
//! watched key change since (their next EXEC fails, as Redis' `CLIENT_DIRTY_CAS`).
//!
//! It lives in the store because the change may come from any connection, or from
//! expiry. Connections are named by their client id; a connection that goes away must
//! call [`crate::Conn::release`] so its entries do not outlive it.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::Store;

#[derive(Debug, Clone, Default)]
pub(super) struct Watches {
    /// Watched key to the connections watching it.
    by_key: BTreeMap<Vec<u8>, BTreeSet<u64>>,
    /// Connections one of whose watched keys changed.
    dirty: BTreeSet<u64>,
}

impl Watches {
    /// `key` changed: flag everyone watching it.
    pub(super) fn touch(&mut self, key: &[u8]) {
        if let Some(clients) = self.by_key.get(key) {
            self.dirty.extend(clients.iter().copied());
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.by_key.keys()
    }
}

impl Store {
    /// WATCH `key` for connection `client`. A key whose TTL has passed is removed
    /// first, so the watch starts from the key's logical state (Redis reaches the same
    /// outcome through its "expired when watched" flag).
    pub(crate) fn watch(&mut self, client: u64, key: &[u8], now_ms: u64) {
        self.purge_if_expired(key, now_ms);
        self.watches.by_key.entry(key.to_vec()).or_default().insert(client);
    }

    /// Forget `client`'s watches on `keys` and its dirty flag (EXEC, DISCARD, UNWATCH).
    pub(crate) fn unwatch(&mut self, client: u64, keys: &[Vec<u8>]) {
        for key in keys {
            let now_empty = self.watches.by_key.get_mut(key).is_some_and(|clients| {
                clients.remove(&client);
                clients.is_empty()
            });
            if now_empty {
                self.watches.by_key.remove(key);
            }
        }
        self.watches.dirty.remove(&client);
    }

    /// Whether a key `client` watches changed since it watched it. Keys past their TTL
    /// are swept first: a watched key that expired is a change, as in Redis 7.
    pub(crate) fn watch_broken(&mut self, client: u64, keys: &[Vec<u8>], now_ms: u64) -> bool {
        for key in keys {
            self.purge_if_expired(key, now_ms);
        }
        self.watches.dirty.contains(&client)
    }

    /// Connections with a watch registered (for tests of the cleanup).
    pub fn watching_clients(&self) -> usize {
        let mut all: BTreeSet<u64> = BTreeSet::new();
        self.watches.by_key.values().for_each(|c| all.extend(c.iter().copied()));
        all.extend(self.watches.dirty.iter().copied());
        all.len()
    }
}
