//! Version vectors and dots: which writes a site had seen when it wrote.
//!
//! Every write gets a *dot* `(origin site, n)`, its origin's n-th write to that key,
//! and carries a *context*: the key's version vector at the origin just before the
//! write. A write whose dot lies inside another write's context was seen by that
//! write, so it is superseded; two writes neither of whose dots lies in the other's
//! context are concurrent: that is a conflict.

use alloc::collections::BTreeMap;

/// Site identifier, 1..=255 (0 means "no site").
pub type SiteId = u8;

/// One write's identity: its origin and the origin's per-key write counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The site that accepted the write from a client.
    pub site: SiteId,
    /// 1 for the origin's first write to the key, 2 for the second...
    pub counter: u64,
}

/// For each site, how many of its writes (to one key) have been seen; absent means 0.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct VersionVector(BTreeMap<SiteId, u64>);

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Same vectors.
    Equal,
    /// The left one has seen everything the right one has, and more.
    Dominates,
    /// The right one has seen everything the left one has, and more.
    DominatedBy,
    /// Each has seen something the other has not: a conflict.
    Concurrent,
}

impl VersionVector {
    /// An empty vector (nothing seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes seen from `site`.
    pub fn get(&self, site: SiteId) -> u64 {
        self.0.get(&site).copied().unwrap_or(0)
    }

    /// Whether the write `dot` is covered (seen).
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.site)
    }

    /// Record `dot` as seen (and everything before it from the same site).
    pub fn add(&mut self, dot: Dot) {
        let e = self.0.entry(dot.site).or_insert(0);
        *e = (*e).max(dot.counter);
    }

    /// Pointwise maximum with `other`.
    pub fn join(&mut self, other: &VersionVector) {
        for (&site, &n) in &other.0 {
            self.add(Dot { site, counter: n });
        }
    }

    /// The next dot `site` would give its next write.
    pub fn next_dot(&self, site: SiteId) -> Dot {
        Dot { site, counter: self.get(site).saturating_add(1) }
    }

    /// `(site, counter)` pairs in site order.
    pub fn entries(&self) -> impl Iterator<Item = (SiteId, u64)> + '_ {
        self.0.iter().map(|(&s, &n)| (s, n))
    }

    /// Number of sites with a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let self_ahead = self.0.iter().any(|(&s, &n)| n > other.get(s));
        let other_ahead = other.0.iter().any(|(&s, &n)| n > self.get(s));
        match (self_ahead, other_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Dominates,
            (false, true) => Causality::DominatedBy,
            (true, true) => Causality::Concurrent,
        }
    }
}

impl FromIterator<(SiteId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (SiteId, u64)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (site, counter) in iter {
            v.add(Dot { site, counter });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominance_and_concurrency() {
        let a: VersionVector = [(1, 2), (2, 1)].into_iter().collect();
        let b: VersionVector = [(1, 1), (2, 1)].into_iter().collect();
        let c: VersionVector = [(1, 1), (2, 2)].into_iter().collect();
        assert_eq!(a.compare(&b), Causality::Dominates);
        assert_eq!(b.compare(&a), Causality::DominatedBy);
        assert_eq!(a.compare(&c), Causality::Concurrent);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        let mut j = a.clone();
        j.join(&c);
        assert_eq!(j.compare(&a), Causality::Dominates);
        assert!(j.contains(Dot { site: 2, counter: 2 }) && !j.contains(Dot { site: 3, counter: 1 }));
    }
}
