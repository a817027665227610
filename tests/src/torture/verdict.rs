//! The end-of-run checks: the history (linearizable per key, no acknowledged INCR
//! lost) and the members (one primary per epoch, no output released by a member in
//! an epoch it did not win ([`super::epochs`]), every follower in sync at the end at
//! the primary's final digest after a clean stop).
use crate::history::{Call, Op, Outcome};
use crate::linear::{check, Verdict};
use crate::netns::Topology;
use crate::replica::{Replicas, MEMBER_HOSTS};
use crate::torture::clients::COUNTER;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Everything the checks found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Per key: the checker's verdict, and a report if it is not linearizable.
    pub keys: BTreeMap<String, (Verdict, Option<String>)>,
    /// Acknowledged INCRs of the counter missing from its final value.
    pub lost: u64,
    /// The counter's final value, acknowledged INCRs and indeterminate ones.
    pub counter: Option<(i64, u64, u64)>,
    /// Epochs named by more than one "ELECTED" line.
    pub double_epochs: Vec<u64>,
    /// Releases by a member outside an epoch it won, and epochs won twice ([`super::epochs`]).
    pub unelected_releases: Vec<String>,
    /// Followers in sync when the run ended: each must reach the primary's final digest.
    pub followers_at_end: usize,
    /// Followers that did not replay to the primary's final digest (with why).
    pub diverged: Vec<String>,
    /// How many followers did.
    pub in_sync: usize,
    /// Whether the group was whole again at the end.
    pub whole_at_end: bool,
    /// Broken connections and error replies the clients saw.
    pub client_errors: Vec<String>,
    /// The group never formed (no primary with every other member following): why.
    pub not_formed: Option<String>,
}

impl Findings {
    /// Every safety check passed.
    pub fn ok(&self) -> bool {
        self.anomalies() == 0 && self.counter.is_some() && self.not_formed.is_none() && self.whole_at_end
    }

    /// Safety anomalies: non-linearizable keys, lost INCRs, double epochs and diverged
    /// followers, counted. (A group that is not whole at the end is unavailable, not
    /// unsafe: [`Findings::ok`] fails on it, this count does not.)
    pub fn anomalies(&self) -> u64 {
        let keys = self.keys.values().filter(|(v, _)| !matches!(v, Verdict::Linearizable)).count() as u64;
        keys + self.lost
            + self.double_epochs.len() as u64
            + self.unelected_releases.len() as u64
            + self.diverged.len() as u64
    }

    /// `linearizable, 0 lost, ...`.
    pub fn summary(&self) -> String {
        if self.not_formed.is_some() {
            return "THE GROUP NEVER FORMED (no campaign ran)".into();
        }
        let bad: Vec<&str> = self
            .keys
            .iter()
            .filter(|(_, (v, _))| !matches!(v, Verdict::Linearizable))
            .map(|(k, _)| k.as_str())
            .collect();
        let lin =
            if bad.is_empty() { "linearizable".to_string() } else { format!("NOT LINEARIZABLE ({})", bad.join(", ")) };
        let counter = match self.counter {
            Some((v, acked, unknown)) => format!("counter {v} (acked {acked}, indeterminate {unknown})"),
            None => "counter not read".into(),
        };
        let whole = if self.whole_at_end { "" } else { "NOT WHOLE AT THE END (unavailable), " };
        format!(
            "{whole}{lin}, {} lost, {counter}, {} epochs twice, {} releases outside the member's epoch, \
             {} of {} followers at the final digest, {} diverged, {} client errors",
            self.lost,
            self.double_epochs.len(),
            self.unelected_releases.len(),
            self.in_sync,
            self.followers_at_end,
            self.diverged.len(),
            self.client_errors.len()
        )
    }

    /// The reports of every key that is not linearizable.
    pub fn reports(&self) -> String {
        let mut s = self.not_formed.as_ref().map(|why| format!("the group never formed: {why}\n")).unwrap_or_default();
        for (key, (v, report)) in &self.keys {
            match (v, report) {
                (Verdict::Linearizable, _) => {}
                (_, Some(r)) => s.push_str(&format!("key {key}: {r}\n")),
                (v, None) => s.push_str(&format!("key {key}: {v:?}\n")),
            }
        }
        for e in &self.double_epochs {
            s.push_str(&format!("epoch {e} named by two ELECTED lines\n"));
        }
        for why in self.unelected_releases.iter().chain(&self.diverged) {
            s.push_str(&format!("{why}\n"));
        }
        s
    }
}

/// The history checks: each key's linearizability and the counter's acknowledged INCRs
/// (against the last completed read of it, which the final reads provide).
pub fn check_history(history: &[Op]) -> Findings {
    let mut f = Findings::default();
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    for (key, ops) in &by_key {
        let verdict = check(ops);
        let report = match &verdict {
            Verdict::NotLinearizable(a) => Some(a.report(ops)),
            _ => None,
        };
        f.keys.insert(key.to_string(), (verdict, report));
    }
    let counter = by_key.get(COUNTER).map(Vec::as_slice).unwrap_or_default();
    let acked = counter.iter().filter(|o| matches!(o.outcome, Outcome::Counted(_))).count() as u64;
    let unknown = counter.iter().filter(|o| o.call == Call::Incr && o.is_unknown()).count() as u64;
    let last_read = counter
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Read(v) => Some((o.invoke, v.unwrap_or(0))),
            _ => None,
        })
        .max_by_key(|&(t, _)| t);
    // Only the INCRs acknowledged before that read was sent must be in it (when the
    // final read failed, the last one that did not is earlier than some acks).
    if let Some((read_at, value)) = last_read {
        let acked_before = counter
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Counted(_)) && o.complete.is_some_and(|c| c < read_at))
            .count() as u64;
        f.lost = acked_before.saturating_sub(value.max(0) as u64);
        f.counter = Some((value, acked, unknown));
    }
    f
}

/// The member checks: one primary per epoch over every process that ran; then a clean
/// stop (SIGTERM to the primary) after which every follower must replay to the end
/// record, where its replay compares its state with the primary's final digest.
pub fn check_members(f: &mut Findings, topo: &Topology, r: &mut Replicas, n: usize) {
    let epochs = r.elected_epochs();
    let mut seen = BTreeSet::new();
    f.double_epochs = epochs.iter().copied().filter(|e| !seen.insert(*e)).collect();
    let logs: Vec<String> = r.members.iter().chain(r.graveyard.iter()).map(|m| m.stderr()).collect();
    f.unelected_releases = super::epochs::violations(&logs);
    let status: Vec<String> = (0..n).map(|i| crate::status::fetch(topo, MEMBER_HOSTS[i]).unwrap_or_default()).collect();
    let Some(p) = status.iter().position(|s| s.contains("\"member_role\":\"primary\"")) else {
        // Unavailable, not unsafe: whole_at_end is false, and the digests cannot be compared.
        return;
    };
    let followers: Vec<usize> = (0..n)
        .filter(|&i| status[i].contains("\"member_role\":\"follower\"") && status[i].contains("\"protected\":true"))
        .collect();
    f.followers_at_end = followers.len();
    let status = r.members[p].terminate();
    if !status.success() {
        f.diverged.push(format!("the primary (member {}) did not stop cleanly: {status}", p + 1));
    }
    for i in followers {
        let m = &mut r.members[i];
        let exited = m.wait(Duration::from_secs(30));
        let log = m.stderr();
        let reached_end = log.contains("EndOfLog(Shutdown)");
        match exited {
            Some(s) if s.success() && reached_end => f.in_sync += 1,
            Some(s) => f.diverged.push(format!("member {} exited {s} (end record reached: {reached_end})", i + 1)),
            None if reached_end => {
                // It replayed to the end and checked the digest, then went on (to an
                // election of its own): that is in sync.
                f.in_sync += 1;
                m.kill9();
            }
            None => f.diverged.push(format!("member {} never reached the primary's end record", i + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(c: usize, t: u64, n: i64) -> Op {
        Op::done(c, COUNTER, Call::Incr, Outcome::Counted(n), t, t + 1)
    }

    #[test]
    fn a_counter_below_its_acknowledged_incrs_counts_the_lost_ones() {
        let mut h = vec![incr(0, 0, 1), incr(1, 2, 2), incr(0, 4, 3)];
        h.push(Op::done(9, COUNTER, Call::Get, Outcome::Read(Some(3)), 10, 11));
        let mut f = check_history(&h);
        assert_eq!((f.lost, f.counter), (0, Some((3, 3, 0))));
        assert!(!f.ok(), "a group that is not whole at the end fails the run");
        f.whole_at_end = true;
        assert!(f.ok(), "{}", f.summary());
        // INCRs acknowledged after the last read that succeeded are not missing from it.
        let mut later = h.clone();
        later.push(incr(2, 30, 4));
        later.push(Op::indeterminate(9, COUNTER, Call::Get, 40));
        assert_eq!(check_history(&later).lost, 0);
        h.push(Op::done(9, COUNTER, Call::Get, Outcome::Read(Some(1)), 20, 21));
        let f = check_history(&h);
        assert_eq!(f.lost, 2);
        assert!(!f.ok());
        assert!(f.summary().contains("NOT LINEARIZABLE (c), 2 lost"), "{}", f.summary());
        assert!(f.reports().contains("GET -> 1"), "{}", f.reports());
    }

    #[test]
    fn a_release_outside_a_won_epoch_and_a_follower_off_the_digest_fail_the_run() {
        let h = vec![incr(0, 0, 1), Op::done(9, COUNTER, Call::Get, Outcome::Read(Some(1)), 10, 11)];
        let mut f = check_history(&h);
        f.whole_at_end = true;
        (f.followers_at_end, f.in_sync) = (2, 2);
        assert!(f.ok(), "{}", f.summary());
        assert!(f.summary().contains("2 of 2 followers at the final digest"), "{}", f.summary());
        f.unelected_releases.push("member 3 (process 1) released output in epoch 2, which it never won".into());
        assert_eq!(f.anomalies(), 1);
        assert!(!f.ok());
        assert!(f.summary().contains("1 releases outside the member's epoch"), "{}", f.summary());
        assert!(f.reports().contains("which it never won"), "{}", f.reports());
        f.unelected_releases.clear();
        f.in_sync = 1;
        f.diverged.push("member 2 never reached the primary's end record".into());
        assert!(!f.ok() && f.reports().contains("never reached"), "{}", f.reports());
    }
}
