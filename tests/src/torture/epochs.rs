//! "No reply released by a member that was not primary in its epoch", read from the
//! members' own logs (every process that ran, killed ones included).
//!
//! ```text
//!   a process's log                                        what it says
//!   "replica group member; its ballot says ... member=2"   this process is member 2
//!   "ELECTED: member 2 is primary of epoch 7"              2 won epoch 7 by votes
//!   "won the witness: going on alone in epoch 8"           2 won epoch 8 by the witness
//!   "boots the VM as the primary of epoch 1"               2 releases output in epoch 1
//!   "GOING LIVE: ... epoch=7"                              2 releases output in epoch 7
//!   "going on alone in epoch 8"                            2 releases output in epoch 8
//!
//!   violations: a member releasing in an epoch it did not win, and an epoch won by
//!   two members (each would release replies of its own).
//! ```
//!
//! Only a primary releases output (followers replay with their output held back),
//! so a release is a member becoming primary: booting as one, going live after
//! replay, or going on alone.
use std::collections::{BTreeMap, BTreeSet};

/// What one process's log says: its member id, the epochs it won, the epochs it
/// released output in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tenure {
    pub member: Option<u64>,
    pub won: BTreeSet<u64>,
    pub released: BTreeSet<u64>,
}

/// The number after `marker` in `line` (up to the first non-digit).
fn number_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads one process's log.
pub fn tenure(log: &str) -> Tenure {
    let mut t = Tenure::default();
    for line in log.lines() {
        if line.contains("replica group member; its ballot says") {
            t.member = t.member.or(number_after(line, " member="));
        } else if line.contains("ELECTED: member ") {
            if let (Some(m), Some(e)) =
                (number_after(line, "ELECTED: member "), number_after(line, "primary of epoch "))
            {
                // A process logs only its own election; the member is named for the record.
                t.member = t.member.or(Some(m));
                t.won.insert(e);
            }
        } else if let Some(e) = number_after(line, "going on alone in epoch ") {
            t.won.insert(e);
            t.released.insert(e);
        } else if let Some(e) = number_after(line, "boots the VM as the primary of epoch ") {
            t.released.insert(e);
        } else if line.contains("GOING LIVE") {
            if let Some(e) = number_after(line, " epoch=") {
                t.released.insert(e);
            }
        }
    }
    t
}

/// Every violation in the logs of every process that ran, one line each.
pub fn violations(logs: &[String]) -> Vec<String> {
    let tenures: Vec<Tenure> = logs.iter().map(|l| tenure(l)).collect();
    let mut won: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new(); // epoch -> members
    let mut won_by: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new(); // member -> epochs
    for t in &tenures {
        let Some(m) = t.member else { continue };
        for &e in &t.won {
            won.entry(e).or_default().insert(m);
            won_by.entry(m).or_default().insert(e);
        }
    }
    let mut bad = Vec::new();
    for (k, t) in tenures.iter().enumerate() {
        for &e in &t.released {
            match t.member {
                Some(m) if won_by.get(&m).is_some_and(|w| w.contains(&e)) => {}
                Some(m) => {
                    bad.push(format!("member {m} (process {k}) released output in epoch {e}, which it never won"))
                }
                None => bad.push(format!("process {k} released output in epoch {e} but never said which member it is")),
            }
        }
    }
    for (e, members) in won {
        if members.len() > 1 {
            let names: Vec<String> = members.iter().map(u64::to_string).collect();
            bad.push(format!("epoch {e} was won by members {}: two primaries", names.join(" and ")));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    const BALLOT: &str = "INFO vmm::ft::election::elector: replica group member; its ballot says epoch 1 member=";

    fn log(member: u64, lines: &[&str]) -> String {
        let mut s = format!("{BALLOT}{member} epoch=1 voted_for=1 members=3 witness=\"none\"\n");
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    #[test]
    fn a_group_whose_primaries_each_won_their_epoch_passes() {
        let logs = [
            log(1, &[
                "WARN vmm::ft::election::elector: ELECTED: member 1 is primary of epoch 1 (2 of 3 votes, 2 needed; 52 ms without a primary) epoch=1",
                "INFO vmm::ft::start: this member boots the VM as the primary of epoch 1 epoch=1",
            ]),
            log(2, &[
                "WARN vmm::ft::election::elector: ELECTED: member 2 is primary of epoch 2 (2 of 3 votes) epoch=2 votes=2: self; 1: no answer",
                "WARN vmm::ft::takeover: GOING LIVE: this follower is now the primary (unprotected) exit=7387 released=7384 epoch=2",
                "WARN vmm::ft::election::elector: won the witness: going on alone in epoch 3 epoch=3",
            ]),
            log(3, &["INFO vmm::ft::election::elector: voted for member 2 in epoch 2 from=10.77.0.2:53292 candidate=2 epoch=2"]),
        ];
        assert_eq!(violations(&logs), Vec::<String>::new());
        let t = tenure(&logs[1]);
        assert_eq!((t.member, t.won.len(), t.released.len()), (Some(2), 2, 2), "{t:?}");
    }

    #[test]
    fn a_release_in_an_epoch_not_won_and_two_winners_of_one_epoch_are_caught() {
        // Member 3 goes live in epoch 2, which member 2 won: it was not primary in it.
        let logs = [
            log(2, &["WARN ELECTED: member 2 is primary of epoch 2 (2 of 3 votes) epoch=2"]),
            log(3, &["WARN vmm::ft::takeover: GOING LIVE: this follower is now the primary (unprotected) exit=9 released=8 epoch=2"]),
        ];
        let v = violations(&logs);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("member 3 (process 1) released output in epoch 2, which it never won"), "{v:?}");
        // Two members winning one epoch (by votes and by the witness).
        let logs = [
            log(1, &["WARN ELECTED: member 1 is primary of epoch 5 (2 of 3 votes) epoch=5"]),
            log(2, &["WARN won the witness: going on alone in epoch 5 epoch=5"]),
        ];
        let v = violations(&logs);
        assert_eq!(v, vec!["epoch 5 was won by members 1 and 2: two primaries".to_string()]);
        // The epochs a member won count for every process of that member (its logs are
        // split wherever the harness kept a process's output apart).
        let logs = [
            log(1, &["WARN ELECTED: member 1 is primary of epoch 4 (2 of 3 votes) epoch=4"]),
            log(1, &["WARN GOING LIVE: this follower is now the primary exit=1 released=1 epoch=4"]),
        ];
        assert!(violations(&logs).is_empty());
    }
}
