//! Walks over the whole keyspace: KEYS, SCAN and RANDOMKEY, all in hash order and all
//! deterministic (no randomness, no per-process seed), so replicas agree.

use alloc::vec::Vec;
use core::ops::Bound;

use super::{is_expired, Store};
use crate::glob::glob_match;

/// Most keys one SCAN call visits, whatever its COUNT (a hint, in Redis too): a
/// COUNT of a billion must not copy the whole keyspace at once in a 64 MiB guest.
pub(crate) const MAX_SCAN_KEYS: usize = 4096;
/// Most key bytes one SCAN call visits (the page ends after the bucket that crosses it).
pub(crate) const MAX_SCAN_BYTES: usize = 1024 * 1024;

/// One SCAN call's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanPage {
    /// The cursor to send next; 0 when the walk is complete.
    pub(crate) cursor: u64,
    pub(crate) keys: Vec<Vec<u8>>,
}

/// splitmix64: spreads consecutive draw numbers over the hash space.
pub(super) fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Store {
    /// Call `each` with every live key matching the Redis glob `pattern` (`*` matches
    /// every key, even ""), as KEYS lists them; returns how many. Expired keys are
    /// skipped, not removed, as in Redis. Nothing is copied: KEYS writes its reply
    /// straight from here, so listing a large keyspace needs no second copy of it.
    pub(crate) fn for_each_matching(&self, pattern: &[u8], now_ms: u64, mut each: impl FnMut(&[u8])) -> usize {
        let all = pattern == b"*";
        let mut n = 0usize;
        for (key, entry) in self.buckets.values().flat_map(|b| b.iter()) {
            if (all || glob_match(pattern, key, false)) && !is_expired(entry, now_ms) {
                each(key);
                n = n.saturating_add(1);
            }
        }
        n
    }

    /// One SCAN step: visit `count` keys (whole hash buckets; at most [`MAX_SCAN_KEYS`]
    /// keys and about [`MAX_SCAN_BYTES`] of them) with a hash at or after `cursor`, and return the live ones matching `pattern` (None: all) and
    /// `type_name` (None: all). The next cursor is the hash after the last bucket
    /// visited, so every key present for a whole walk is returned, once, however the
    /// keyspace changes meanwhile. Expired keys visited are removed, as Redis does.
    pub(crate) fn scan(
        &mut self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        type_name: Option<&[u8]>,
        now_ms: u64,
    ) -> ScanPage {
        let mut visited: Vec<Vec<u8>> = Vec::new();
        let mut visited_bytes = 0usize;
        let mut next = 0u64;
        let want = count.clamp(1, MAX_SCAN_KEYS);
        for (&hash, bucket) in self.buckets.range((Bound::Included(cursor), Bound::Unbounded)) {
            if visited.len() >= want || visited_bytes >= MAX_SCAN_BYTES {
                next = hash;
                break;
            }
            for (key, _) in bucket.iter() {
                visited_bytes = visited_bytes.saturating_add(key.len());
                visited.push(key.clone());
            }
        }
        let mut keys = Vec::new();
        for key in visited {
            if pattern.is_some_and(|p| !glob_match(p, &key, false)) {
                continue;
            }
            if type_name.is_some_and(|t| !t.eq_ignore_ascii_case(b"string")) {
                continue;
            }
            if self.find(&key).is_some_and(|e| is_expired(e, now_ms)) {
                self.take(&key);
                continue;
            }
            keys.push(key);
        }
        ScanPage { cursor: next, keys }
    }

    /// RANDOMKEY: a live key chosen by the store's own draw counter (part of the state,
    /// so a replica or a replay draws the same key), or None when empty. A drawn key
    /// whose TTL has passed is removed and the draw repeated, as in Redis.
    pub(crate) fn random_key(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        loop {
            self.random_draws = self.random_draws.wrapping_add(1);
            let target = mix(self.random_draws);
            let bucket = match self.buckets.range(target..).next() {
                Some((_, bucket)) => bucket,
                None => self.buckets.values().next()?,
            };
            let pick = usize::try_from(target.checked_rem(bucket.len() as u64).unwrap_or(0)).unwrap_or(0);
            let (key, entry) = bucket.get(pick).or_else(|| bucket.get(0))?;
            if !is_expired(entry, now_ms) {
                return Some(key.clone());
            }
            let key = key.clone();
            self.take(&key);
        }
    }

    /// The SCAN cursor that starts at `key`'s bucket (for tests of cursor stability).
    #[cfg(test)]
    pub(crate) fn cursor_of(key: &[u8]) -> u64 {
        super::key_hash(key)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Limits, Store};
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    fn store_with(n: u32) -> Store {
        let mut store = Store::new(Limits::default());
        for i in 0..n {
            let key = alloc::format!("key:{i}").into_bytes();
            store.set(&key, b"v".to_vec(), None, false, 0).unwrap();
        }
        store
    }

    fn walk(store: &mut Store, count: usize, mut between: impl FnMut(&mut Store, usize)) -> Vec<Vec<u8>> {
        let (mut cursor, mut all, mut step) = (0u64, Vec::new(), 0usize);
        loop {
            let page = store.scan(cursor, count, None, None, 0);
            all.extend(page.keys);
            between(store, step);
            step += 1;
            cursor = page.cursor;
            if cursor == 0 {
                return all;
            }
        }
    }

    #[test]
    fn a_full_scan_returns_every_key_exactly_once() {
        let mut store = store_with(500);
        let keys = walk(&mut store, 7, |_, _| {});
        assert_eq!(keys.len(), 500);
        assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 500);
    }

    #[test]
    fn keys_present_throughout_a_scan_are_returned_despite_inserts_and_deletes() {
        let mut store = store_with(300);
        let keys = walk(&mut store, 10, |s, step| {
            // Churn: add new keys and delete some that are not part of the stable set.
            for j in 0..20 {
                let key = alloc::format!("new:{step}:{j}").into_bytes();
                s.set(&key, b"v".to_vec(), None, false, 0).unwrap();
            }
            s.delete(alloc::format!("new:{}:3", step.saturating_sub(1)).as_bytes(), 0);
        });
        let got: BTreeSet<_> = keys.into_iter().collect();
        for i in 0..300 {
            assert!(got.contains(alloc::format!("key:{i}").as_bytes()), "key:{i} missing");
        }
    }

    #[test]
    fn a_huge_count_is_capped_and_the_walk_goes_on() {
        let mut store = store_with(super::MAX_SCAN_KEYS as u32 + 100);
        let first = store.scan(0, usize::MAX, None, None, 0);
        assert!(first.keys.len() >= super::MAX_SCAN_KEYS && first.keys.len() < super::MAX_SCAN_KEYS + 10);
        assert_ne!(first.cursor, 0, "the page stopped at the cap, the walk is not over");
        let rest = store.scan(first.cursor, usize::MAX, None, None, 0);
        assert_eq!(rest.cursor, 0);
        assert_eq!(first.keys.len() + rest.keys.len(), super::MAX_SCAN_KEYS + 100);
        // Long keys: the byte cap ends the page first.
        let mut big = Store::new(Limits::default());
        for i in 0..40u32 {
            let mut key = alloc::vec![b'k'; 65536];
            key.extend_from_slice(alloc::format!("{i}").as_bytes());
            big.set(&key, b"v".to_vec(), None, false, 0).unwrap();
        }
        let page = big.scan(0, 1000, None, None, 0);
        // 16 keys of 64 KiB and a few bytes cross 1 MiB: the page ends there.
        assert_eq!(page.keys.len(), 16);
        assert_ne!(page.cursor, 0);
    }

    #[test]
    fn scan_resumes_at_the_cursor_bucket() {
        let mut store = store_with(3);
        let page = store.scan(Store::cursor_of(b"key:1"), 1, None, None, 0);
        assert!(page.keys.contains(&b"key:1".to_vec()));
    }

    #[test]
    fn random_key_is_deterministic_and_skips_expired_keys() {
        let mut a = store_with(50);
        let mut b = a.clone();
        let draws_a: Vec<_> = (0..20).map(|_| a.random_key(0)).collect();
        let draws_b: Vec<_> = (0..20).map(|_| b.random_key(0)).collect();
        assert_eq!(draws_a, draws_b);
        assert!(draws_a.iter().collect::<BTreeSet<_>>().len() > 5, "draws spread over the keys");
        let mut c = Store::new(Limits::default());
        c.set(b"gone", b"v".to_vec(), Some(5), false, 0).unwrap();
        c.set(b"live", b"v".to_vec(), None, false, 0).unwrap();
        for _ in 0..10 {
            assert_eq!(c.random_key(10), Some(b"live".to_vec()));
        }
        assert_eq!(c.len(), 1);
        assert_eq!(Store::new(Limits::default()).random_key(0), None);
    }
}
