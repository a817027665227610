//! The witness: a voter with no log, for groups with an even number of members
//! (`--witness file:DIR|etcd:URL`). It keeps a Raft ballot, plus a **floor**
//! standing in for the log it does not have, in a compare-and-swap register
//! (`host::register`), and decides with the same [`rules::decide`] as a member:
//!
//! ```text
//!   record: epoch E | voted_for V | floor (fe, fx)
//!   vote(epoch, candidate C, C's log position P):
//!     decide(ballot {E, V}, request, voter {priority 0, position: floor})
//!     granted: record = {epoch, C, floor (epoch, MAX)}      (swap; retried if raced)
//!   lower_floor(epoch, to): if the record's floor is still (epoch, MAX): floor = to
//! ```
//!
//! Why the floor: a candidate that wins with the witness's vote may then release
//! output with no follower holding it (a two-member group going on alone), so the
//! witness must refuse every candidate that lacks that output — every log of an
//! epoch up to the winner's: floor (epoch, MAX). Once a follower has joined the
//! winner and acknowledged its whole log, the winner stops releasing alone and
//! lowers the floor to what that follower holds, so the follower can win the
//! witness in turn. Found by the model check (`vmm/tests/election_model`): a
//! witness that granted "the first claim per log epoch" let a member with an old
//! log win, and two members lead one epoch.
//!
//! The record is the group's: its register is scoped by the group name
//! (`host::scope`). A member that does not know the name yet (a new group before
//! its first primary) does not ask the witness at all, which counts as no vote:
//! a new group's first election needs a majority of its members.
use super::rules::{self, Ballot, LogPosition, MemberId, Rank, Refusal, Request, Voter};
use crate::host::arbiter::Location;
use crate::host::register::{self, Register};
use crate::host::scope::Scope;
use std::sync::Arc;

/// Swap attempts before giving up when other members keep racing this one.
const MAX_SWAP_RETRIES: usize = 8;

/// The witness's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Record {
    ballot: Ballot,
    floor: LogPosition,
}

impl Record {
    /// The record as stored; `updated_at_unix` is for `ftvmm arbiter list` (a parse
    /// ignores it).
    fn render(&self) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!(
            "epoch {}\nvoted_for {}\nfloor {} {}\nupdated_at_unix {}\n",
            self.ballot.epoch,
            self.ballot.voted_for.unwrap_or(0),
            self.floor.epoch,
            self.floor.exit,
            now.as_secs()
        )
    }

    fn parse(text: &str) -> Result<Record, String> {
        if text.is_empty() {
            return Ok(Record::default());
        }
        let mut words = text.split_whitespace();
        let mut field = |name: &str| -> Result<u64, String> {
            if words.next() != Some(name) {
                return Err(format!("expected {name} in the witness record {text:?}"));
            }
            words
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad {name} in the witness record {text:?}"))
        };
        let epoch = field("epoch")?;
        let voted = field("voted_for")?;
        let fe = field("floor")?;
        let fx = words.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("bad floor in {text:?}"))?;
        Ok(Record {
            ballot: Ballot { epoch, voted_for: (voted != 0).then_some(voted) },
            floor: LogPosition { epoch: fe, exit: fx },
        })
    }
}

/// The witness of one group.
pub struct Witness {
    location: Location,
    scope: Arc<Scope>,
}

impl Witness {
    /// The witness at `location`, of the group `scope` names.
    pub fn new(location: Location, scope: Arc<Scope>) -> Witness {
        Witness { location, scope }
    }

    /// Where it lives.
    pub fn describe(&self) -> String {
        self.location.describe()
    }

    /// The group's register; an error while this member does not know its group's name.
    fn register(&self) -> Result<Box<dyn Register>, String> {
        let name = self.scope.name();
        let Some(name) = name.known() else {
            return Err("this member does not know its group's name yet (it learns it from the group's first \
                        primary), so it does not ask the witness"
                .into());
        };
        register::at(&self.location, name).map_err(|e| e.to_string())
    }

    /// Asks for the witness's vote: `Ok(Ok(()))` granted, `Ok(Err(why))` refused,
    /// `Err` when the witness cannot be reached or read (which counts as no vote).
    pub fn vote(&self, members: &[MemberId], request: &Request) -> Result<Result<(), Refusal>, String> {
        let register = self.register()?;
        for _ in 0..MAX_SWAP_RETRIES {
            let (text, version) = register.read().map_err(|e| e.to_string())?;
            let old = Record::parse(&text)?;
            let mut ballot = old.ballot;
            let voter = Voter {
                me: Rank { id: 0, priority: 0 },
                position: old.floor,
                is_primary: false,
                hears_primary: false,
                lost_log: false,
            };
            let verdict = rules::decide(&mut ballot, members, request, &voter);
            let floor = match verdict {
                Ok(()) => LogPosition { epoch: request.epoch, exit: u64::MAX },
                Err(_) => old.floor,
            };
            let new = Record { ballot, floor };
            if new == old {
                return Ok(verdict);
            }
            if register.swap(version, &new.render()).map_err(|e| e.to_string())? {
                return Ok(verdict);
            }
        }
        Err(format!("the witness record kept changing under {MAX_SWAP_RETRIES} attempts"))
    }

    /// The primary of `epoch`, which won the witness's vote, no longer releases output
    /// alone: a follower holds its log through `to`. Lowers the floor to `to` so that
    /// follower may win the witness later. Returns whether the floor was still ours.
    pub fn lower_floor(&self, epoch: u64, to: LogPosition) -> Result<bool, String> {
        let register = self.register()?;
        for _ in 0..MAX_SWAP_RETRIES {
            let (text, version) = register.read().map_err(|e| e.to_string())?;
            let old = Record::parse(&text)?;
            if old.floor != (LogPosition { epoch, exit: u64::MAX }) {
                return Ok(false);
            }
            let new = Record { floor: to, ..old };
            if register.swap(version, &new.render()).map_err(|e| e.to_string())? {
                return Ok(true);
            }
        }
        Err(format!("the witness record kept changing under {MAX_SWAP_RETRIES} attempts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn witness(name: &str) -> (Witness, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ftvmm-witness-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let scope = Arc::new(Scope::given(logging_channel::GroupName::new("svc").expect("name")));
        (Witness::new(Location::File(dir.clone()), scope), dir)
    }

    #[test]
    fn a_witness_directory_that_went_away_stays_away_and_the_vote_fails() {
        // Found by the fault campaign: the register used to create its directory at every
        // vote, so a witness taken away came back empty, a second witness with no memory.
        let (w, dir) = witness("away");
        std::fs::remove_dir_all(&dir).expect("take the witness away");
        assert!(w.vote(&[1, 2], &req(1, 1, (0, 0))).is_err(), "no witness, no vote");
        assert!(!dir.exists(), "the witness's directory was made again, empty");
    }

    fn req(epoch: u64, candidate: MemberId, log: (u64, u64)) -> Request {
        Request {
            epoch,
            candidate: Rank { id: candidate, priority: 1 },
            position: LogPosition { epoch: log.0, exit: log.1 },
        }
    }

    #[test]
    fn the_witness_votes_once_per_epoch_and_never_for_a_log_behind_the_last_winner() {
        let (w, dir) = witness("once");
        let members = [1, 2];
        assert_eq!(w.vote(&members, &req(2, 2, (1, 50))), Ok(Ok(())));
        assert_eq!(w.vote(&members, &req(2, 1, (1, 90))), Ok(Err(Refusal::AlreadyVoted { for_member: 2 })));
        // Member 2 may now release alone: nobody whose log is of epoch 2 or older can win.
        let behind = w.vote(&members, &req(3, 1, (1, 90)));
        assert!(matches!(behind, Ok(Err(Refusal::Behind { .. }))), "{behind:?}");
        // Its follower caught up through exit 120 of epoch 2: the floor comes down to it.
        assert_eq!(w.lower_floor(2, LogPosition { epoch: 2, exit: 120 }), Ok(true));
        assert_eq!(w.lower_floor(2, LogPosition { epoch: 2, exit: 130 }), Ok(false), "only the winner's own floor");
        assert!(matches!(w.vote(&members, &req(4, 1, (2, 119))), Ok(Err(Refusal::Behind { .. }))));
        assert_eq!(w.vote(&members, &req(5, 1, (2, 120))), Ok(Ok(())));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_member_that_never_heard_of_an_epoch_won_without_the_witness_cannot_take_it_past_a_winner() {
        // The model check's counterexample: epoch 2 was won by a member's vote, not the
        // witness's; a member whose log is of epoch 1 then asks for epoch 3. The witness
        // grants it (its floor knows nothing newer), and the primary of epoch 2, going on
        // alone for epoch 3, is refused: one primary for epoch 3.
        let (w, dir) = witness("race");
        assert_eq!(w.vote(&[1, 2], &req(3, 2, (1, 40))), Ok(Ok(())));
        assert_eq!(w.vote(&[1, 2], &req(3, 1, (2, u64::MAX))), Ok(Err(Refusal::AlreadyVoted { for_member: 2 })));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_group_never_sees_an_old_groups_witness_record_and_a_member_without_a_name_does_not_ask() {
        let (old, dir) = witness("scoped");
        // The old group ran to epoch 9 and its last winner holds the floor.
        assert_eq!(old.vote(&[1, 2], &req(9, 2, (8, 500))), Ok(Ok(())));
        let new_group = |name: &str| {
            let scope = Arc::new(Scope::given(logging_channel::GroupName::new(name).expect("name")));
            Witness::new(Location::File(dir.clone()), scope)
        };
        // A new deployment starts at epoch 1 with an empty log: granted in its own scope.
        assert_eq!(new_group("svc-new").vote(&[1, 2], &req(1, 1, (0, 0))), Ok(Ok(())));
        // The old record is untouched: the old group still refuses a stale log.
        assert!(matches!(old.vote(&[1, 2], &req(10, 1, (1, 0))), Ok(Err(Refusal::Behind { .. }))));
        let unnamed = Witness::new(Location::File(dir.clone()), Arc::new(Scope::unknown()));
        let err = unnamed.vote(&[1, 2], &req(1, 1, (0, 0))).expect_err("not asked");
        assert!(err.contains("does not know its group's name"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_fresh_witness() {
        let (w, dir) = witness("damaged");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("svc-witness"), "version 3\nepoch nonsense\n").expect("write");
        assert!(w.vote(&[1, 2], &req(1, 1, (0, 0))).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
