//! The elector: one per member, the owner of its ballot (the term) and its
//! role, and its side of every election. It answers vote requests and probes
//! on the peer port, and when its member has no primary it finds one or stands.
//!
//! ```text
//!   find_or_win (a member at start, or a follower that lost its primary):
//!     loop every poll:
//!       probe every member
//!       a primary (at an epoch >= mine, see primary_to_follow)?  -> Follow it
//!       pre-vote: would a majority vote for my log now (nobody
//!       hears a primary, no newer log)?             no -> wait; do not stand
//!       my turn? (members with newer logs, or equal logs and a better rank, go first)
//!         stand for epoch+1: ask every member at once (and the witness, if short by one)
//!         a majority                               -> Lead
//!         otherwise back off (random) and go on
//! ```
//! Every election is logged with its duration and its votes.
use super::ballot_file::{BallotError, BallotFile};
use super::peer::{self, Membership, Until};
use super::rules::{self, Ballot, LogPosition, MemberId, Rank, Request};
use super::witness::Witness;
use logging_channel::vote::{PeerMessage, PeerRole, Probe, ProbeReply, VoteRequest};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How often a member refreshes its view of the others, for status.
const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// What a member's VM and log say, for votes and probes (the group implements it).
pub trait LocalView: Send + Sync {
    /// Where this member's log ends ((0, 0) before it has a VM).
    fn position(&self) -> LogPosition;
    /// Whether its connection to its primary is alive (silence past the failover
    /// timeout, or a close, ends that).
    fn hears_primary(&self) -> bool;
}

/// What a member without a primary does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// It won `epoch`: it is the primary.
    Lead { epoch: u64 },
    /// Member `member` is primary of `epoch` and takes followers at `join`.
    Follow { member: MemberId, join: String, epoch: u64 },
}

/// Why the elector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error(transparent)]
    Ballot(#[from] BallotError),
    #[error("cannot listen on the peer port {addr}: {source} (is another member or process using it?)")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What this member is doing now.
#[derive(Debug, Clone, Copy)]
struct Local {
    role: PeerRole,
    /// The primary it follows (0: none).
    primary: MemberId,
}

/// One finished election, for status.
#[derive(Debug, Clone)]
struct Held {
    epoch: u64,
    winner: MemberId,
    ms: u64,
}

/// A member's elector.
pub struct Elector {
    group: Membership,
    timing: ElectionTiming,
    witness: Option<Arc<Witness>>,
    ballot: Mutex<Ballot>,
    file: BallotFile,
    local: Mutex<Local>,
    view: OnceLock<Arc<dyn LocalView>>,
    /// The latest probe reply of each member (status shows them).
    seen: Mutex<BTreeMap<MemberId, ProbeReply>>,
    last_election: Mutex<Option<Held>>,
    elections_won: std::sync::atomic::AtomicU64,
    /// The last election this member won (or its last going on alone) took the
    /// witness's vote: a fact about that win, which the group reads when it takes
    /// office; what the primary holds afterwards is the group's (`WitnessState`).
    won_with_witness: std::sync::atomic::AtomicBool,
    /// This member was in the group before this process started (its ballot says so)
    /// and has not received a whole state since: whatever it acknowledged then is
    /// gone, so it must not vote or stand until a state transfer gives it a log
    /// again (found by the model check: otherwise it votes with an empty log for a
    /// candidate that lacks what it had acknowledged).
    lost_log: std::sync::atomic::AtomicBool,
    /// It stood down while it held its log (see [`Elector::stepped_down`]).
    stood_down_with_log: std::sync::atomic::AtomicBool,
    /// The epoch in which this member voted for another candidate: from then on it
    /// acknowledges no primary of an earlier epoch (its log-rx checks this).
    fence: Arc<std::sync::atomic::AtomicU64>,
    /// The candidate this member last voted for, and when (see `ElectionTiming::backing`).
    granted: Mutex<Option<(MemberId, Instant)>>,
}

impl Elector {
    /// Reads this member's ballot from `data_dir`.
    pub fn new(
        group: Membership,
        timing: ElectionTiming,
        witness: Option<Arc<Witness>>,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Elector>, ElectionError> {
        let (file, ballot) = BallotFile::open(data_dir)?;
        tracing::info!(
            member = group.me.id,
            epoch = ballot.epoch,
            voted_for = ballot.voted_for.unwrap_or(0),
            members = group.members.len(),
            witness = witness.as_ref().map(|w| w.describe()).unwrap_or_else(|| "none".into()),
            "replica group member; its ballot says epoch {}",
            ballot.epoch
        );
        Ok(Arc::new(Elector {
            group,
            timing,
            witness,
            ballot: Mutex::new(ballot),
            file,
            local: Mutex::new(Local {
                role: if ballot.epoch > 0 { PeerRole::Rejoining } else { PeerRole::Starting },
                primary: 0,
            }),
            view: OnceLock::new(),
            seen: Mutex::new(BTreeMap::new()),
            last_election: Mutex::new(None),
            elections_won: std::sync::atomic::AtomicU64::new(0),
            won_with_witness: std::sync::atomic::AtomicBool::new(false),
            lost_log: std::sync::atomic::AtomicBool::new(ballot.epoch > 0),
            stood_down_with_log: std::sync::atomic::AtomicBool::new(false),
            fence: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            granted: Mutex::new(None),
        }))
    }

    /// Starts answering on this member's peer port; `view` says where its log ends.
    pub fn start(self: &Arc<Self>, view: Arc<dyn LocalView>) -> Result<(), ElectionError> {
        let _ = self.view.set(view);
        let addr = self.group.mine().peer.to_string();
        let listener = crate::host::bind::listen(&addr, crate::host::bind::ADDR_IN_USE_GRACE)
            .map_err(|source| ElectionError::Listen { addr: addr.clone(), source })?;
        peer::serve(listener, self.clone(), self.group.security.clone())
            .map_err(|source| ElectionError::Listen { addr: addr.clone(), source })?;
        // Status shows every member as it last answered: refreshed once a second.
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("peer-watch".into())
            .spawn(move || {
                while let Some(e) = me.upgrade() {
                    e.probe_all();
                    drop(e);
                    std::thread::sleep(STATUS_REFRESH);
                }
            })
            .map(|_| ())
            .map_err(|source| ElectionError::Listen { addr, source })
    }

    /// The membership.
    pub fn membership(&self) -> &Membership {
        &self.group
    }

    /// This member's epoch (its ballot's): the highest it has seen.
    pub fn epoch(&self) -> u64 {
        self.lock_ballot().epoch
    }

    /// Where this member takes followers while it is primary.
    pub fn join_addr(&self) -> String {
        self.group.mine().join_addr()
    }

    fn lock_ballot(&self) -> MutexGuard<'_, Ballot> {
        self.ballot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_local(&self, role: PeerRole, primary: MemberId) {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Local { role, primary };
    }

    fn local(&self) -> Local {
        *self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position(&self) -> LogPosition {
        self.view.get().map(|v| v.position()).unwrap_or_default()
    }

    fn hears_primary(&self) -> bool {
        self.view.get().is_some_and(|v| v.hears_primary())
    }

    /// The candidate this member voted for less than `backing` ago, unless that is
    /// itself: it counts as the primary this member hears until it has had the time
    /// to take its followers.
    fn backs(&self) -> Option<MemberId> {
        let granted = *self.granted.lock().unwrap_or_else(|p| p.into_inner());
        granted.filter(|(c, at)| *c != self.group.me.id && at.elapsed() < self.timing.backing).map(|(c, _)| c)
    }

    /// Learns of `epoch` and stores it (a later epoch clears the vote).
    fn observe(&self, epoch: u64) {
        let mut b = self.lock_ballot();
        if epoch > b.epoch {
            b.observe(epoch);
            if let Err(e) = self.file.store(&b) {
                tracing::error!("{e}");
            }
        }
    }

    /// This member now follows `primary` (it paired, or resumed).
    pub fn following(&self, primary: MemberId) {
        self.set_local(PeerRole::Follower, primary);
    }

    /// This member received a whole state from its primary: it has a log again, and
    /// may vote and stand.
    pub fn received_state(&self) {
        if self.lost_log.swap(false, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("a whole state received: this member votes again");
        }
    }

    /// This member stopped being primary (it lost its majority or the witness): it
    /// halts, and its process starts over. Until its log is sealed on its disk and the
    /// new process has read it back ([`Elector::kept_log`]), it neither votes nor stands.
    pub fn stepped_down(&self) {
        let had = !self.lost_log.swap(true, std::sync::atomic::Ordering::SeqCst);
        self.stood_down_with_log.fetch_or(had, std::sync::atomic::Ordering::SeqCst);
        self.set_local(PeerRole::Rejoining, 0);
    }

    /// Whether this member stood down holding its whole log: it may seal it on its disk
    /// (`ft::recovery::seal`) and keep its vote across the restart.
    pub fn stood_down_with_log(&self) -> bool {
        self.stood_down_with_log.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This process started on the log this member sealed when it stood down, and read
    /// it back whole: it has its log, votes, and may stand, as the member it was.
    pub fn kept_log(&self) {
        self.lost_log.store(false, std::sync::atomic::Ordering::SeqCst);
        self.set_local(PeerRole::Follower, 0);
        tracing::info!("this member restarted on the log it sealed: it votes and may stand");
    }

    /// Finds the group's primary or wins an election; blocks until one happens.
    pub fn find_or_win(&self) -> Next {
        let since = Instant::now();
        let mut turn: Option<Instant> = None;
        let mut attempt = 0u32;
        let mut rng = Jitter::new(self.group.me.id);
        let mut told_lost = false;
        if !matches!(self.local().role, PeerRole::Starting | PeerRole::Rejoining) {
            self.set_local(PeerRole::Follower, 0);
        }
        loop {
            let replies = self.probe_all();
            if let Some(next) = self.primary_to_follow(&replies) {
                return next;
            }
            if !self.has_log() && !told_lost && since.elapsed() > self.timing.step * 100 {
                told_lost = true;
                tracing::error!(
                    "this member restarted and lost the log it had acknowledged; it waits for a primary to send it \
                     a state, and no member has been primary for {} s. If a majority of the group restarted, \
                     the group's state is gone and nobody can be elected: start a new group with fresh --data-dir",
                    since.elapsed().as_secs()
                );
            }
            if !self.group.me.may_stand() || self.hears_primary() || !self.has_log() {
                turn = None;
                std::thread::sleep(self.timing.poll);
                continue;
            }
            let position = self.position();
            let me = self.group.me;
            let theirs = |r: &ProbeReply| LogPosition { epoch: r.log_epoch, exit: r.log_exit };
            let rank = |r: &ProbeReply| Rank { id: r.member, priority: r.priority };
            // Pre-vote (Raft dissertation, section 9.6): stand only if a majority would vote
            // for this log now. A member cut off from everyone then never moves its epoch on,
            // and one that hears a primary keeps others from deposing it.
            let would_grant = |r: &&ProbeReply| {
                r.primary == 0
                    && r.role != PeerRole::Rejoining
                    && (theirs(r) < position
                        || (theirs(r) == position && !(rank(r).may_stand() && rank(r).outranks(&me))))
            };
            let support = 1 + replies.iter().filter(would_grant).count() + usize::from(self.witness.is_some());
            if support < rules::majority(self.group.members.len(), self.group.witness) {
                turn = None;
                std::thread::sleep(self.timing.poll);
                continue;
            }
            // Members whose logs are newer (or equal, with a better rank) go first.
            let ahead = replies
                .iter()
                .filter(|r| r.primary == 0 && r.role != PeerRole::Rejoining && rank(r).may_stand())
                .filter(|r| theirs(r) > position || (theirs(r) == position && rank(r).outranks(&me)))
                .count() as u32;
            let when =
                *turn.get_or_insert_with(|| Instant::now() + self.timing.step * ahead + rng.upto(self.timing.poll));
            if Instant::now() >= when {
                match self.stand(position, since, &replies) {
                    Some(epoch) => return Next::Lead { epoch },
                    None => {
                        attempt += 1;
                        let backoff = self.timing.step / 2 + rng.upto(self.timing.step) * attempt.min(4);
                        turn = Some(Instant::now() + backoff + self.timing.step * ahead);
                    }
                }
            }
            std::thread::sleep(self.timing.poll);
        }
    }

    /// The primary to follow among `replies`, if any. A primary of this member's epoch
    /// or later, or of an earlier one if this member voted in its later epoch for
    /// nobody but itself (a candidacy that failed): nobody can have won that epoch
    /// with its vote, so acknowledging the earlier primary's log loses nothing.
    fn primary_to_follow(&self, replies: &[ProbeReply]) -> Option<Next> {
        let p = replies.iter().filter(|r| r.role == PeerRole::Primary).max_by_key(|r| r.epoch)?;
        let member = self.group.member(p.member)?;
        let b = *self.lock_ballot();
        let only_self = b.voted_for.is_none_or(|v| v == self.group.me.id);
        if p.epoch < b.epoch && !only_self {
            return None;
        }
        self.observe(p.epoch);
        if self.local().role == PeerRole::Rejoining {
            // A member that was in the group before (an old primary, say) says where it
            // stands: it lost its VM with its process, and joins by state transfer.
            tracing::warn!(
                was = b.epoch,
                epoch = p.epoch,
                "restarted: this member was last in epoch {}, the group is in epoch {} with member {} primary; \
                 joining it as a follower by state transfer",
                b.epoch,
                p.epoch,
                p.member
            );
        }
        tracing::info!(
            primary = p.member,
            epoch = p.epoch,
            "member {} is primary of epoch {}: following it",
            p.member,
            p.epoch
        );
        Some(Next::Follow { member: p.member, join: member.join_addr(), epoch: p.epoch })
    }

    /// Probes every other member; remembers and returns the answers that came.
    fn probe_all(&self) -> Vec<ProbeReply> {
        let others: Vec<_> = self.group.others().cloned().collect();
        let probe = PeerMessage::Probe(Probe { group: self.group.tag, from: self.group.me.id });
        let mut seen = Vec::new();
        for (id, answer) in
            peer::ask_all(&others, &probe, self.timing.probe_timeout, Until::Everyone, &self.group.security)
        {
            if let Ok(PeerMessage::ProbeReply(r)) = answer {
                if r.group == self.group.tag && r.member == id {
                    seen.push(r);
                }
            }
        }
        // Only this round's answers: a member that did not answer is shown as unknown, and
        // never counts as a primary it once was.
        let mut map = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        for r in &seen {
            map.insert(r.member, *r);
        }
        seen
    }

    /// Stands for the next epoch; returns it if this member won.
    fn stand(&self, position: LogPosition, since: Instant, answered: &[ProbeReply]) -> Option<u64> {
        let t0 = Instant::now();
        let me = self.group.me;
        let epoch = {
            let mut b = self.lock_ballot();
            let epoch = b.stand(me.id);
            if let Err(e) = self.file.store(&b) {
                tracing::error!("{e}");
                return None;
            }
            epoch
        };
        self.set_local(PeerRole::Candidate, 0);
        tracing::info!(epoch, log_epoch = position.epoch, log_exit = position.exit, "standing for epoch {epoch}");
        let request = PeerMessage::VoteRequest(VoteRequest {
            group: self.group.tag,
            epoch,
            candidate: me.id,
            priority: me.priority,
            log_epoch: position.epoch,
            log_exit: position.exit,
        });
        let others: Vec<_> = self.group.others().cloned().collect();
        let needed = rules::majority(self.group.members.len(), self.group.witness);
        let mut granted = 1usize;
        let mut votes = format!("{}: self", me.id);
        // A majority settles it: a hung member's answer is not waited for.
        let until = Until::Granted { epoch, needed };
        // A member that did not answer the last probe (hung, or cut off) gets only a
        // probe's time: waiting a vote's timeout for it would add that much to a failover.
        let each: Vec<_> = others
            .into_iter()
            .map(|m| {
                let heard = answered.iter().any(|r| r.member == m.id);
                (m, if heard { self.timing.ask_timeout } else { self.timing.probe_timeout })
            })
            .collect();
        for (id, answer) in peer::ask_each(&each, &request, until, &self.group.security) {
            let verdict = match answer {
                Ok(PeerMessage::VoteReply(r)) if r.group == self.group.tag && r.voter == id => {
                    self.observe(r.epoch);
                    if r.granted && r.epoch == epoch {
                        granted += 1;
                        "yes".to_string()
                    } else {
                        format!("no ({})", r.why)
                    }
                }
                Ok(other) => format!("no (answered {other:?})"),
                Err(e) => format!("no answer ({e})"),
            };
            let _ = write!(votes, "; {id}: {verdict}");
        }
        let mut with_witness = false;
        if granted < needed && granted + 1 == needed {
            if let Some(w) = &self.witness {
                let request = Request { epoch, candidate: me, position };
                match w.vote(&self.group.ids(), &request) {
                    Ok(Ok(())) => {
                        granted += 1;
                        with_witness = true;
                        votes.push_str("; witness: yes");
                    }
                    Ok(Err(why)) => {
                        if let rules::Refusal::Stale { current } = why {
                            self.observe(current);
                        }
                        let _ = write!(votes, "; witness: no ({why})");
                    }
                    Err(e) => {
                        let _ = write!(votes, "; witness: unreachable ({e})");
                    }
                }
            }
        }
        let ms = t0.elapsed().as_millis() as u64;
        let since_ms = since.elapsed().as_millis() as u64;
        if granted >= needed && self.epoch() == epoch {
            self.set_local(PeerRole::Primary, me.id);
            self.elections_won.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.won_with_witness.store(with_witness, std::sync::atomic::Ordering::SeqCst);
            *self.last_election.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Held { epoch, winner: me.id, ms: since_ms });
            tracing::warn!(
                epoch,
                votes = %votes,
                vote_ms = ms,
                election_ms = since_ms,
                "ELECTED: member {} is primary of epoch {epoch} ({granted} of {} votes, {needed} needed; {since_ms} ms without a primary)",
                me.id,
                self.group.members.len() + usize::from(self.group.witness)
            );
            return Some(epoch);
        }
        self.set_local(PeerRole::Follower, 0);
        tracing::info!(epoch, votes = %votes, vote_ms = ms, "lost the election for epoch {epoch} ({granted} of {needed} votes needed)");
        None
    }

    /// Whether the election this member last won took the witness's vote.
    pub fn won_with_witness(&self) -> bool {
        self.won_with_witness.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A two-member primary of epoch `epoch` lost its follower: it goes on alone only by
    /// winning the witness's vote for a new epoch, exactly as its follower would stand for
    /// it (its own log holds all of `epoch`). Returns the new epoch, or why it must step down.
    pub fn go_on_alone(&self, epoch: u64) -> Result<u64, String> {
        let Some(w) = &self.witness else {
            return Err("no witness to go on alone with".into());
        };
        // The witness may be in a later epoch than this member knows (its follower stood
        // for epochs the witness refused): a stale refusal teaches it, and it stands again.
        let mut tries = 0;
        let next = loop {
            let next = {
                let mut b = self.lock_ballot();
                let next = b.stand(self.group.me.id);
                self.file.store(&b).map_err(|e| e.to_string())?;
                next
            };
            let request =
                Request { epoch: next, candidate: self.group.me, position: LogPosition { epoch, exit: u64::MAX } };
            match w.vote(&self.group.ids(), &request) {
                Ok(Ok(())) => break next,
                Ok(Err(rules::Refusal::Stale { current })) if tries < 3 => {
                    tries += 1;
                    self.observe(current);
                }
                Ok(Err(why)) => {
                    return Err(format!("the witness refused to let it go on alone in epoch {next}: {why}"))
                }
                Err(e) => return Err(format!("cannot reach the witness ({e})")),
            }
        };
        self.won_with_witness.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(epoch = next, "won the witness: going on alone in epoch {next}");
        Ok(next)
    }

    /// The primary of `epoch`, which won the witness's vote, has a follower holding its
    /// log through `exit`: it stops releasing alone (the caller's part) and lowers the
    /// witness's floor, so that the follower can win the witness if this member dies.
    pub fn lower_witness_floor(&self, epoch: u64, exit: u64) {
        let Some(w) = &self.witness else { return };
        match w.lower_floor(epoch, LogPosition { epoch, exit }) {
            Ok(true) => tracing::info!(epoch, exit, "a follower holds the log: the witness may now vote for it"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot lower the witness's floor ({e}); the follower cannot win the witness yet"),
        }
    }

    /// Why this member, primary of `epoch`, must step down: another member says it is
    /// primary of a later epoch (from the probes that refresh status every second).
    pub fn superseded(&self, epoch: u64) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let r = seen.values().find(|r| r.role == PeerRole::Primary && r.epoch > epoch)?;
        Some(format!("member {} is primary of epoch {}, later than this member's {epoch}", r.member, r.epoch))
    }

    /// The fence a follower's log-rx checks before every ack (see `Upstream::fence`).
    pub fn fence(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.fence.clone()
    }

    /// Whether this member may vote or stand: not while it lost the log it had.
    pub fn has_log(&self) -> bool {
        !self.lost_log.load(std::sync::atomic::Ordering::SeqCst)
    }
}

mod answer;
mod timing;
pub use timing::ElectionTiming;
use timing::Jitter;
#[cfg(test)]
mod tests;
