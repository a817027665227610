//! The Output Rule as one pure function of the followers' acknowledged
//! positions: which exits' output may leave the VM now.
//!
//! ```text
//!   output produced at exit E leaves once release_limit(mode, followers) >= E
//!
//!   sync        min(acked) over every live follower
//!   semi-sync   acked of the one synchronous follower
//!   quorum:K    the K-th highest acked (fewer than K live: the lowest of those left)
//!   async       everything, at once
//!   no follower everything, at once (the VM runs unprotected, and says so)
//! ```
//!
//! A dropped follower is not in the list: it can never hold output back. That is
//! what keeps `sync` from the handbook's "the leader waits forever" failure.
use std::fmt;
use std::str::FromStr;

/// How a primary replicates to its followers (`--replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// Output waits for every live follower.
    #[default]
    Sync,
    /// Output waits for one synchronous follower; the others trail.
    SemiSync,
    /// Output waits for nobody: followers trail, and a failover can lose acknowledged writes.
    Async,
    /// Output waits for any K followers (PostgreSQL's `ANY K`).
    Quorum(usize),
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicationMode::Sync => write!(f, "sync"),
            ReplicationMode::SemiSync => write!(f, "semi-sync"),
            ReplicationMode::Async => write!(f, "async"),
            ReplicationMode::Quorum(k) => write!(f, "quorum:{k}"),
        }
    }
}

/// `--replication` that is not a mode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    #[error("unknown replication mode {0:?}: use sync, semi-sync, async or quorum:K")]
    Unknown(String),
    #[error("quorum:{0} is not a quorum: K must be at least 1")]
    ZeroQuorum(usize),
    #[error("quorum:{k} can never be met with --max-followers {max}: K must be at most the number of followers")]
    QuorumTooLarge { k: usize, max: usize },
}

impl FromStr for ReplicationMode {
    type Err = ModeError;

    fn from_str(s: &str) -> Result<ReplicationMode, ModeError> {
        match s {
            "sync" => Ok(ReplicationMode::Sync),
            "semi-sync" | "semisync" => Ok(ReplicationMode::SemiSync),
            "async" => Ok(ReplicationMode::Async),
            _ => match s.strip_prefix("quorum:").map(str::parse::<usize>) {
                Some(Ok(0)) => Err(ModeError::ZeroQuorum(0)),
                Some(Ok(k)) => Ok(ReplicationMode::Quorum(k)),
                _ => Err(ModeError::Unknown(s.to_string())),
            },
        }
    }
}

impl ReplicationMode {
    /// Checks the mode against the group's size limit.
    pub fn check(self, max_followers: usize) -> Result<ReplicationMode, ModeError> {
        match self {
            ReplicationMode::Quorum(k) if k > max_followers => Err(ModeError::QuorumTooLarge { k, max: max_followers }),
            m => Ok(m),
        }
    }
}

/// One live follower as the Output Rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The highest exit it has acknowledged receiving.
    pub acked: u64,
    /// It is the synchronous follower (`semi-sync`).
    pub synchronous: bool,
}

/// The highest exit whose output may leave now, given the live followers.
pub fn release_limit(mode: ReplicationMode, followers: &[Position]) -> u64 {
    if followers.is_empty() {
        return u64::MAX;
    }
    match mode {
        ReplicationMode::Async => u64::MAX,
        ReplicationMode::Sync => followers.iter().map(|f| f.acked).min().unwrap_or(u64::MAX),
        ReplicationMode::SemiSync => match followers.iter().find(|f| f.synchronous) {
            Some(f) => f.acked,
            // Nobody was made synchronous yet (the group does so at once): wait for all.
            None => followers.iter().map(|f| f.acked).min().unwrap_or(u64::MAX),
        },
        ReplicationMode::Quorum(k) => {
            let mut acked: Vec<u64> = followers.iter().map(|f| f.acked).collect();
            acked.sort_unstable_by(|a, b| b.cmp(a));
            acked[k.clamp(1, acked.len()) - 1]
        }
    }
}

/// Which follower becomes synchronous when there is none (`semi-sync`): the one that
/// has acknowledged the most, so output waits the least. Ties go to the lower index.
pub fn choose_synchronous(followers: &[Position]) -> Option<usize> {
    followers.iter().enumerate().max_by(|(ia, a), (ib, b)| a.acked.cmp(&b.acked).then(ib.cmp(ia))).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(acked: &[u64]) -> Vec<Position> {
        acked.iter().map(|&acked| Position { acked, synchronous: false }).collect()
    }

    #[test]
    fn with_no_follower_everything_leaves() {
        for mode in
            [ReplicationMode::Sync, ReplicationMode::SemiSync, ReplicationMode::Async, ReplicationMode::Quorum(2)]
        {
            assert_eq!(release_limit(mode, &[]), u64::MAX, "{mode}");
        }
    }

    #[test]
    fn sync_waits_for_the_slowest_live_follower() {
        assert_eq!(release_limit(ReplicationMode::Sync, &at(&[50, 30, 90])), 30);
        // The slow one dropped: it is no longer in the list, and output moves on.
        assert_eq!(release_limit(ReplicationMode::Sync, &at(&[50, 90])), 50);
    }

    #[test]
    fn semi_sync_waits_for_the_synchronous_follower_alone() {
        let mut f = at(&[50, 30, 90]);
        f[1].synchronous = true;
        assert_eq!(release_limit(ReplicationMode::SemiSync, &f), 30, "even when others are ahead");
        f[1].synchronous = false;
        f[2].synchronous = true;
        assert_eq!(release_limit(ReplicationMode::SemiSync, &f), 90);
    }

    #[test]
    fn a_newly_synchronous_follower_behind_the_last_release_holds_output_until_it_catches_up() {
        // Released through 90 with the old synchronous follower; the new one has 50: the
        // limit drops to 50, so nothing produced after 90 leaves until it acks past it.
        let mut f = at(&[50, 40]);
        let chosen = choose_synchronous(&f).expect("one");
        f[chosen].synchronous = true;
        assert_eq!(release_limit(ReplicationMode::SemiSync, &f), 50);
    }

    #[test]
    fn the_synchronous_follower_chosen_is_the_most_advanced() {
        assert_eq!(choose_synchronous(&at(&[10, 70, 70, 30])), Some(1));
        assert_eq!(choose_synchronous(&[]), None);
    }

    #[test]
    fn quorum_waits_for_any_k() {
        let f = at(&[50, 30, 90]);
        assert_eq!(release_limit(ReplicationMode::Quorum(1), &f), 90);
        assert_eq!(release_limit(ReplicationMode::Quorum(2), &f), 50);
        assert_eq!(release_limit(ReplicationMode::Quorum(3), &f), 30);
        assert_eq!(release_limit(ReplicationMode::Quorum(3), &at(&[50, 30])), 30, "fewer than K left: all of them");
    }

    #[test]
    fn async_never_waits() {
        assert_eq!(release_limit(ReplicationMode::Async, &at(&[0, 0])), u64::MAX);
    }

    #[test]
    fn modes_parse_and_bad_ones_say_what_to_use() {
        assert_eq!("sync".parse(), Ok(ReplicationMode::Sync));
        assert_eq!("semi-sync".parse(), Ok(ReplicationMode::SemiSync));
        assert_eq!("async".parse(), Ok(ReplicationMode::Async));
        assert_eq!("quorum:2".parse(), Ok(ReplicationMode::Quorum(2)));
        assert_eq!("quorum:0".parse::<ReplicationMode>(), Err(ModeError::ZeroQuorum(0)));
        assert!(matches!("fast".parse::<ReplicationMode>(), Err(ModeError::Unknown(_))));
        assert!(matches!("quorum:x".parse::<ReplicationMode>(), Err(ModeError::Unknown(_))));
        assert_eq!(ReplicationMode::Quorum(5).check(4), Err(ModeError::QuorumTooLarge { k: 5, max: 4 }));
        assert_eq!(ReplicationMode::Quorum(4).check(4), Ok(ReplicationMode::Quorum(4)));
        for m in [ReplicationMode::Sync, ReplicationMode::SemiSync, ReplicationMode::Async, ReplicationMode::Quorum(3)]
        {
            assert_eq!(m.to_string().parse(), Ok(m));
        }
    }
}
