//! The election's rules, pure: who may vote for whom, who won, how many
//! followers must hold output before it may leave. Raft's election (Ongaro &
//! Ousterhout, §5.2 and §5.4.1) with the epoch as the term, plus two rules from
//! Ongaro's dissertation: a member that still hears its primary ignores vote
//! requests (§4.2.3, so a cut-off member cannot depose a healthy primary), and
//! ties between equally up-to-date members go to the higher `--priority`, then
//! the lower id. No I/O and no clock: the model check (`tests/election_model/`)
//! drives these same functions.
//!
//! ```text
//!   voter, asked by candidate C for epoch E with log position (le, lx):
//!     C not a member, or C has priority 0        -> refuse
//!     E < my epoch                              -> refuse (stale)
//!     I am primary, or I heard my primary lately -> refuse (no epoch change)
//!     I restarted and have no log yet           -> refuse (no epoch change)
//!     E > my epoch: my epoch = E, my vote = none
//!     I voted for someone else in E             -> refuse
//!     (le, lx) < my position                    -> refuse (behind me)
//!     (le, lx) = my position and I outrank C    -> refuse (I should stand)
//!     otherwise: my vote in E = C               -> grant (persisted first)
//! ```
use std::cmp::Ordering;

/// A member's id in `--group` (1, 2, ...; 0 means nobody).
pub type MemberId = u64;

/// Where a member's log ends: the epoch of its last record, then its last exit.
/// Ordered as Raft orders logs: the later epoch wins, then the longer log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPosition {
    pub epoch: u64,
    pub exit: u64,
}

/// How a member ranks among equally up-to-date ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rank {
    pub id: MemberId,
    /// `--priority`: higher stands first; 0 never stands.
    pub priority: u8,
}

impl Rank {
    /// Whether this member goes before `other` when their logs are equal.
    pub fn outranks(&self, other: &Rank) -> bool {
        match self.priority.cmp(&other.priority) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.id < other.id,
        }
    }

    /// Priority 0 is for members that vote but never lead.
    pub fn may_stand(&self) -> bool {
        self.priority > 0
    }
}

/// What a member must remember across restarts: Raft's `currentTerm` and
/// `votedFor`. It is written to disk before a vote is granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ballot {
    /// The highest epoch this member has seen a candidate or primary of.
    pub epoch: u64,
    /// Whom it voted for in `epoch`.
    pub voted_for: Option<MemberId>,
}

impl Ballot {
    /// Stands for the next epoch: moves on and votes for itself. Returns the epoch.
    pub fn stand(&mut self, me: MemberId) -> u64 {
        self.epoch += 1;
        self.voted_for = Some(me);
        self.epoch
    }

    /// Learns of epoch `epoch` (a primary's, or a candidate's): later epochs clear the vote.
    pub fn observe(&mut self, epoch: u64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.voted_for = None;
        }
    }
}

/// A candidate's request, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    pub epoch: u64,
    pub candidate: Rank,
    pub position: LogPosition,
}

/// The voter's side of the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Voter {
    pub me: Rank,
    pub position: LogPosition,
    /// It runs the VM as primary.
    pub is_primary: bool,
    /// It heard from its primary within the failover timeout.
    pub hears_primary: bool,
    /// It restarted without its log (the VM and records live in memory) and no state
    /// transfer has completed since. Its position (0, 0) says nothing of what the
    /// group released: the primary counted its acknowledgements before the crash. If
    /// it voted, a candidate missing released output could win (the model check's
    /// counterexample: primary 1 releases an exit that only follower 3 acked, 3
    /// restarts, 2 stands and wins with 3's vote). It neither votes nor stands until a
    /// state transfer has given it a primary's whole log; streaming from (0, 0) would
    /// not do, as it could vote again before it held what it had acked.
    pub lost_log: bool,
}

/// Why a vote was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    NotAMember,
    NeverStands,
    Stale { current: u64 },
    IsPrimary,
    HearsPrimary,
    LostLog,
    AlreadyVoted { for_member: MemberId },
    Behind { mine: LogPosition },
    Outranked,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAMember => write!(f, "the candidate is not a member of this group"),
            Refusal::NeverStands => write!(f, "the candidate has --priority 0 and may never lead"),
            Refusal::Stale { current } => write!(f, "stale epoch: this member is in epoch {current}"),
            Refusal::IsPrimary => write!(f, "this member is the primary and has its majority"),
            Refusal::HearsPrimary => write!(f, "this member still hears its primary"),
            Refusal::LostLog => write!(f, "this member restarted without its log and has not rejoined yet"),
            Refusal::AlreadyVoted { for_member } => write!(f, "already voted for member {for_member} in this epoch"),
            Refusal::Behind { mine } => {
                write!(f, "the candidate's log is behind this member's (epoch {}, exit {})", mine.epoch, mine.exit)
            }
            Refusal::Outranked => write!(f, "equal logs, and this member outranks the candidate: it stands itself"),
        }
    }
}

/// Decides a vote and updates `ballot` as Raft does (a later epoch is adopted even
/// when the vote is refused, unless the request is ignored as disruptive). The
/// caller persists `ballot` before it sends a grant.
pub fn decide(ballot: &mut Ballot, members: &[MemberId], request: &Request, voter: &Voter) -> Result<(), Refusal> {
    if !members.contains(&request.candidate.id) {
        return Err(Refusal::NotAMember);
    }
    if !request.candidate.may_stand() {
        return Err(Refusal::NeverStands);
    }
    if request.epoch < ballot.epoch {
        return Err(Refusal::Stale { current: ballot.epoch });
    }
    if voter.is_primary {
        return Err(Refusal::IsPrimary);
    }
    if voter.hears_primary {
        return Err(Refusal::HearsPrimary);
    }
    if voter.lost_log {
        return Err(Refusal::LostLog);
    }
    ballot.observe(request.epoch);
    match ballot.voted_for {
        Some(id) if id == request.candidate.id => return Ok(()),
        Some(id) => return Err(Refusal::AlreadyVoted { for_member: id }),
        None => {}
    }
    match request.position.cmp(&voter.position) {
        Ordering::Less => return Err(Refusal::Behind { mine: voter.position }),
        Ordering::Equal if voter.me.may_stand() && voter.me.outranks(&request.candidate) => {
            return Err(Refusal::Outranked)
        }
        _ => {}
    }
    ballot.voted_for = Some(request.candidate.id);
    Ok(())
}

/// Votes needed to win: a majority of the voters (the members, and the witness if any).
pub fn majority(members: usize, witness: bool) -> usize {
    (members + usize::from(witness)) / 2 + 1
}

/// How many followers must hold an exit before its output may leave, whatever the
/// mode: with the primary itself they must make a majority, so that every later
/// primary (elected by a majority, each voter refusing a log behind its own) holds
/// the exit. A primary that holds the witness's claim for its epoch counts it: no
/// other member can win the witness for that epoch.
pub fn followers_needed(members: usize, witness: bool, holds_witness: bool) -> usize {
    majority(members, witness).saturating_sub(1 + usize::from(holds_witness))
}

/// The order in which members stand when their logs are equal: each member's delay
/// before standing is its place in this order times a step, so that the best-ranked
/// usually stands alone and wins at once.
pub fn standing_order(ranks: &[Rank], me: MemberId) -> usize {
    let Some(mine) = ranks.iter().find(|r| r.id == me) else { return ranks.len() };
    ranks.iter().filter(|r| r.may_stand() && r.id != me && r.outranks(mine)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBERS: [MemberId; 3] = [1, 2, 3];

    fn rank(id: MemberId) -> Rank {
        Rank { id, priority: 1 }
    }

    fn pos(epoch: u64, exit: u64) -> LogPosition {
        LogPosition { epoch, exit }
    }

    fn req(epoch: u64, candidate: MemberId, position: LogPosition) -> Request {
        Request { epoch, candidate: rank(candidate), position }
    }

    fn voter(id: MemberId, position: LogPosition) -> Voter {
        Voter { me: rank(id), position, is_primary: false, hears_primary: false, lost_log: false }
    }

    #[test]
    fn a_member_votes_once_per_epoch() {
        let mut b = Ballot { epoch: 1, voted_for: None };
        let v = voter(3, pos(1, 100));
        assert_eq!(decide(&mut b, &MEMBERS, &req(2, 2, pos(1, 100)), &v), Ok(()));
        assert_eq!(decide(&mut b, &MEMBERS, &req(2, 2, pos(1, 100)), &v), Ok(()), "a retry is the same vote");
        assert_eq!(decide(&mut b, &MEMBERS, &req(2, 1, pos(1, 200)), &v), Err(Refusal::AlreadyVoted { for_member: 2 }));
        assert_eq!(decide(&mut b, &MEMBERS, &req(3, 1, pos(1, 200)), &v), Ok(()), "a new epoch is a new vote");
        assert_eq!(b, Ballot { epoch: 3, voted_for: Some(1) });
    }

    #[test]
    fn only_a_log_at_least_as_new_gets_the_vote() {
        let v = voter(3, pos(2, 500));
        let mut b = Ballot { epoch: 2, voted_for: None };
        assert_eq!(decide(&mut b, &MEMBERS, &req(3, 2, pos(2, 499)), &v), Err(Refusal::Behind { mine: pos(2, 500) }));
        assert_eq!(b, Ballot { epoch: 3, voted_for: None }, "the epoch is adopted even so");
        assert_eq!(
            decide(&mut b, &MEMBERS, &req(3, 2, pos(1, 9_999)), &v),
            Err(Refusal::Behind { mine: pos(2, 500) }),
            "a longer log of an older epoch is behind"
        );
        assert_eq!(decide(&mut b, &MEMBERS, &req(3, 2, pos(2, 501)), &v), Ok(()));
    }

    #[test]
    fn equal_logs_go_to_the_higher_priority_then_the_lower_id() {
        let mut b = Ballot::default();
        assert_eq!(decide(&mut b, &MEMBERS, &req(1, 3, pos(1, 9)), &voter(2, pos(1, 9))), Err(Refusal::Outranked));
        assert_eq!(decide(&mut b, &MEMBERS, &req(1, 1, pos(1, 9)), &voter(2, pos(1, 9))), Ok(()));
        let mut b = Ballot::default();
        let high = Request { epoch: 1, candidate: Rank { id: 3, priority: 5 }, position: pos(1, 9) };
        assert_eq!(decide(&mut b, &MEMBERS, &high, &voter(1, pos(1, 9))), Ok(()), "priority before id");
        let mut b = Ballot::default();
        let mut never = voter(1, pos(1, 9));
        never.me.priority = 0;
        assert_eq!(decide(&mut b, &MEMBERS, &req(1, 3, pos(1, 9)), &never), Ok(()), "a priority-0 voter never stands");
    }

    #[test]
    fn stale_foreign_and_disruptive_requests_change_nothing() {
        let before = Ballot { epoch: 4, voted_for: Some(1) };
        let v = voter(3, pos(4, 10));
        let mut b = before;
        assert_eq!(decide(&mut b, &MEMBERS, &req(3, 2, pos(9, 9)), &v), Err(Refusal::Stale { current: 4 }));
        assert_eq!(decide(&mut b, &MEMBERS, &req(9, 7, pos(9, 9)), &v), Err(Refusal::NotAMember));
        let mut never = req(9, 2, pos(9, 9));
        never.candidate.priority = 0;
        assert_eq!(decide(&mut b, &MEMBERS, &never, &v), Err(Refusal::NeverStands));
        let hearing = Voter { hears_primary: true, ..v };
        assert_eq!(decide(&mut b, &MEMBERS, &req(9, 2, pos(9, 9)), &hearing), Err(Refusal::HearsPrimary));
        let primary = Voter { is_primary: true, ..v };
        assert_eq!(decide(&mut b, &MEMBERS, &req(9, 2, pos(9, 9)), &primary), Err(Refusal::IsPrimary));
        assert_eq!(b, before);
    }

    #[test]
    fn a_member_that_lost_its_log_does_not_vote() {
        // Follower 2 acked an exit that the primary released, then restarted: its
        // (0, 0) must not elect member 3, which never received that exit.
        let before = Ballot { epoch: 1, voted_for: Some(1) };
        let mut b = before;
        let amnesiac = Voter { lost_log: true, ..voter(2, pos(0, 0)) };
        assert_eq!(decide(&mut b, &MEMBERS, &req(2, 3, pos(1, 1)), &amnesiac), Err(Refusal::LostLog));
        assert_eq!(b, before, "nothing changes: it learns the epoch when it rejoins");
    }

    #[test]
    fn a_majority_counts_the_witness_and_output_waits_for_enough_followers() {
        assert_eq!(majority(3, false), 2);
        assert_eq!(majority(2, true), 2);
        assert_eq!(majority(5, false), 3);
        assert_eq!(majority(4, true), 3);
        assert_eq!(followers_needed(3, false, false), 1);
        assert_eq!(followers_needed(5, false, false), 2);
        assert_eq!(followers_needed(2, true, false), 1);
        assert_eq!(followers_needed(2, true, true), 0, "holding the witness, a two-member primary goes on alone");
        assert_eq!(followers_needed(1, false, false), 0);
    }

    #[test]
    fn the_best_ranked_member_stands_first() {
        let ranks = [Rank { id: 1, priority: 1 }, Rank { id: 2, priority: 3 }, Rank { id: 3, priority: 0 }];
        assert_eq!(standing_order(&ranks, 2), 0);
        assert_eq!(standing_order(&ranks, 1), 1);
        assert_eq!(standing_order(&ranks, 3), 2, "priority 0 comes last (and never stands)");
    }

    #[test]
    fn standing_moves_the_epoch_on_and_votes_for_itself() {
        let mut b = Ballot { epoch: 6, voted_for: Some(2) };
        assert_eq!(b.stand(1), 7);
        assert_eq!(b.voted_for, Some(1));
        b.observe(5);
        assert_eq!(b, Ballot { epoch: 7, voted_for: Some(1) }, "an older epoch teaches nothing");
    }
}
