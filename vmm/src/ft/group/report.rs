//! The group as status and the election see it: where this member's log ends,
//! and the group's part of `/status`.
use super::{Group, FIRST_EPOCH};
use crate::ft::election::elector::LocalView;
use crate::ft::election::rules::LogPosition;
use crate::ft::output_rule::ReplicationMode;
use crate::host::status::GroupReport;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// This host's name, for the holder of an arbiter claim.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into())
}

impl LocalView for Group {
    fn position(&self) -> LogPosition {
        match self.upstream() {
            Some((up, _)) => up.log_position(),
            // A primary's log is its epoch's through what it released (at least); before
            // it has a VM, it has nothing.
            None if self.epoch.load(Ordering::SeqCst) > FIRST_EPOCH || self.released() > 0 => {
                LogPosition { epoch: self.epoch.load(Ordering::SeqCst), exit: self.released() }
            }
            None => LogPosition::default(),
        }
    }

    fn hears_primary(&self) -> bool {
        self.upstream().is_some_and(|(up, _)| up.alive.load(Ordering::SeqCst))
    }
}

impl GroupReport for Group {
    fn epoch(&self) -> u64 {
        Group::epoch(self)
    }

    fn protected(&self) -> bool {
        match self.upstream() {
            Some((up, _)) => up.alive.load(Ordering::SeqCst),
            None => !self.halted() && self.follower_count() > 0,
        }
    }

    fn positions(&self) -> (u64, u64) {
        if let Some((up, _)) = self.upstream() {
            return (up.received_through.load(Ordering::SeqCst), up.replayed_through.load(Ordering::SeqCst));
        }
        let followers = self.lock();
        let acked = followers.iter().map(|f| f.acked()).min().unwrap_or(0);
        let replayed = followers.iter().map(|f| f.replayed()).min().unwrap_or(0);
        (acked, replayed)
    }

    fn peer(&self) -> String {
        if let Some((_, addr)) = self.upstream() {
            return addr;
        }
        self.lock().iter().map(|f| f.addr.as_str()).collect::<Vec<_>>().join(",")
    }

    fn json_fields(&self, exit_index: u64) -> String {
        let sync = self.synchronous.load(Ordering::SeqCst);
        let mut out = match &self.config.election {
            Some(e) => e.elector.json_fields(),
            None => String::new(),
        };
        let _ = write!(
            out,
            "\"group_name\":\"{}\",\"replication\":\"{}\",\"followers\":[",
            self.config.scope.name().as_str(),
            self.config.mode
        );
        let live = self.lock().clone();
        let dropped: Vec<_> = self.dropped.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        for (i, f) in live.iter().chain(dropped.iter()).enumerate() {
            let mode = match self.config.mode {
                ReplicationMode::Async => "async",
                ReplicationMode::SemiSync if f.id != sync => "async",
                ReplicationMode::Quorum(_) => "quorum",
                _ => "sync",
            };
            let _ = write!(
                out,
                "{}{{\"id\":{},\"addr\":\"{}\",\"mode\":\"{mode}\",\"state\":\"{}\",\"joined_at\":{},\
                 \"acked_through\":{},\"replayed_through\":{},\"lag_exits\":{},\"log_bytes\":{}}}",
                if i == 0 { "" } else { "," },
                f.id,
                f.addr,
                f.state(exit_index),
                f.joined_at,
                f.acked(),
                f.replayed(),
                if f.is_dropped() { 0 } else { exit_index.saturating_sub(f.replayed()) },
                f.log_bytes.load(Ordering::Relaxed),
            );
        }
        out.push_str("],");
        out
    }
}
