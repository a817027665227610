//! The keys sharing one hash value. Almost always exactly one, held inline in the
//! tree node: a per-key `Vec` would cost every key an extra allocation (about as much
//! heap again as a small key and value), which the memory accounting does not see.

use alloc::vec::Vec;

use super::Entry;

#[derive(Debug, Clone)]
pub(super) enum Bucket {
    One(Vec<u8>, Entry),
    /// Two or more keys with equal hashes, in insertion order.
    Many(Vec<(Vec<u8>, Entry)>),
}

impl Bucket {
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Entry)> {
        let (one, many) = match self {
            Bucket::One(k, e) => (Some((k, e)), &[][..]),
            Bucket::Many(list) => (None, list.as_slice()),
        };
        one.into_iter().chain(many.iter().map(|(k, e)| (k, e)))
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Bucket::One(..) => 1,
            Bucket::Many(list) => list.len(),
        }
    }

    pub(super) fn get(&self, i: usize) -> Option<(&Vec<u8>, &Entry)> {
        self.iter().nth(i)
    }

    pub(super) fn find(&self, key: &[u8]) -> Option<&Entry> {
        self.iter().find(|(k, _)| k.as_slice() == key).map(|(_, e)| e)
    }

    pub(super) fn find_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        match self {
            Bucket::One(k, e) => (k.as_slice() == key).then_some(e),
            Bucket::Many(list) => list.iter_mut().find(|(k, _)| k.as_slice() == key).map(|(_, e)| e),
        }
    }

    /// Add a key that is not in the bucket yet.
    pub(super) fn push(&mut self, key: Vec<u8>, entry: Entry) {
        match self {
            Bucket::Many(list) => list.push((key, entry)),
            Bucket::One(..) => {
                let placeholder = Bucket::Many(Vec::new());
                if let Bucket::One(k, e) = core::mem::replace(self, placeholder) {
                    *self = Bucket::Many(alloc::vec![(k, e), (key, entry)]);
                }
            }
        }
    }

    /// Remove `key`; the bool says whether the bucket is now empty (the caller drops it).
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<((Vec<u8>, Entry), bool)> {
        match self {
            Bucket::One(k, _) if k.as_slice() == key => match core::mem::replace(self, Bucket::Many(Vec::new())) {
                Bucket::One(k, e) => Some(((k, e), true)),
                Bucket::Many(_) => None,
            },
            Bucket::One(..) => None,
            Bucket::Many(list) => {
                let at = list.iter().position(|(k, _)| k.as_slice() == key)?;
                let removed = list.remove(at);
                Some((removed, list.is_empty()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Enc;

    fn entry(v: &[u8]) -> Entry {
        Entry { value: v.to_vec(), expires_at: None, enc: Enc::Embstr }
    }

    #[test]
    fn colliding_keys_share_a_bucket_and_leave_it_one_by_one() {
        let mut b = Bucket::One(b"a".to_vec(), entry(b"1"));
        b.push(b"b".to_vec(), entry(b"2"));
        b.push(b"c".to_vec(), entry(b"3"));
        assert_eq!(b.len(), 3);
        assert_eq!(b.find(b"b").map(|e| e.value.clone()), Some(b"2".to_vec()));
        b.find_mut(b"c").unwrap().value = b"33".to_vec();
        assert_eq!(b.get(2).map(|(k, e)| (k.clone(), e.value.clone())), Some((b"c".to_vec(), b"33".to_vec())));
        assert!(b.remove(b"zz").is_none());
        assert_eq!(b.remove(b"a").map(|((k, _), empty)| (k, empty)), Some((b"a".to_vec(), false)));
        assert_eq!(b.remove(b"c").map(|(_, empty)| empty), Some(false));
        assert_eq!(b.remove(b"b").map(|(_, empty)| empty), Some(true));
        let mut one = Bucket::One(b"k".to_vec(), entry(b"v"));
        assert!(one.remove(b"x").is_none());
        assert_eq!(one.remove(b"k").map(|(_, empty)| empty), Some(true));
    }
}
