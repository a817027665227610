//! The model of the replica group's election and Output Rule (issue 10), for
//! `stateright`. Every vote goes through the real `rules::decide`, every tally through
//! `rules::majority`, every release through `rules::followers_needed`: the model
//! checks the code, not a copy of it.
//!
//! ```text
//!  State (members by index 0..n; id = index + 1)   Actions (any interleaving)
//!    ballot  {epoch, voted_for}   persisted          Stand(c)      no primary heard: stand, ask all
//!    role    Follower{leader} | Candidate{votes}     Deliver(m)    any message, any order
//!            | Primary{epoch, holds_witness}         Drop(m)       message loss
//!    log     epoch tag of each entry                 Append(p)     the primary logs an entry
//!    lost    restarted, no state transfer yet        Send(p, f)    the primary streams to f
//!    acked   (primary) per follower                  LoseLeader(f) timeout / connection closed
//!  net       vote requests, log streams (bounded)    StepDown(p)   too few followers too long:
//!                                                                  seals its log, starts over
//!  witness   keyed claims {log epoch -> member}      Restart(m)    crash: the ballot survives
//!                                                    Wipe(m)       crash, disk emptied: no ballot
//!                                                    (durable: a Restart keeps the log, --fsync always)
//!            or a voter {ballot, floor}              AskWitness(c) one vote for a candidate
//!  ghosts    live[epoch] = (who, log at go-live)     GoAlone(p)    2 members: follower lost
//!            released[epoch] = released prefix       LowerFloor(p) voting witness: caught up
//!
//!  (1) at most one primary per epoch (a second go-live in an epoch, even after the first ended)
//!  (2) output released in epoch e is in the log of every primary of an epoch > e
//!  (3) from sampled reachable states without a primary where a majority holds logs,
//!      a fault-free schedule elects one (bounded liveness: reachability)
//! ```
//!
//! Release is a ghost computed after every step as eagerly as the rule allows, which
//! is the worst case: it changes nothing else, and (2) does not depend on when output
//! left. Only (b), the `followers_needed` floor, is applied: sync, semi-sync (n = 3)
//! and quorum:K (K + 1 a majority) add a condition (a) that only holds output longer,
//! so their releases are a subset of these. Async releases at once. A primary
//! releases only entries of its own epoch after its standing entry. Grants and acks
//! take effect as they are sent: a late or lost grant elects fewer primaries, and a
//! late ack only releases later what was sent by a primary of that same epoch.
//!
//! What the checks found (tests in main.rs): a restarted member that votes with (0, 0)
//! elects a log without released output (fixed: `Voter::lost_log`, and it rejoins by
//! state transfer only); a primary that counts a state transfer as acked when it sends
//! the snapshot releases output no follower holds; the witness keyed by the
//! candidate's log epoch elects two primaries in an epoch and loses output released
//! alone; a witness that is a Raft voter (`decide` against a floor that the primary
//! which won it lowers once its follower caught up) is safe.
//!
//! Abstracted away: the VM (an entry is its epoch tag); clocks (timeouts fire at any
//! moment, covering every timing); probes and pre-vote, and asking the witness only
//! when short by one (they only restrain standing: a subset of these schedules);
//! priorities (all 1: ties go to the lower id); a stream is the primary's log at send
//! time, delivered one record a time (or whole, by state transfer), one per pair in
//! flight; a restarted member's connections die with it. Bounds: epochs, log length,
//! messages in flight, restarts (see `Group::three`, `Group::two_with`).
use stateright::{Model, Property};
use vmm::ft::election::rules::{
    decide, followers_needed, majority, Ballot, LogPosition, MemberId, Rank, Request, Voter,
};

/// The witness of an even group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Witness {
    None,
    /// The design: a test-and-set keyed by the candidate's log epoch ("who succeeds L").
    KeyedByLogEpoch,
    /// The proposed fix: the witness is a Raft voter (`decide` with a log floor).
    Voter,
}

/// One configuration of the group and the bounds of the check.
#[derive(Clone, Debug)]
pub struct Group {
    pub n: usize,
    pub witness: Witness,
    /// async: output leaves at once; otherwise it waits for `followers_needed`.
    pub async_release: bool,
    /// The fix for restarts: a member that lost its log neither votes nor stands.
    /// `false` is the design as first written (it votes with position (0, 0)).
    pub lost_log_abstains: bool,
    /// Broken on purpose: voters ignore the up-to-date check.
    pub skip_log_check: bool,
    pub max_epoch: u64,
    pub max_log: usize,
    pub max_restarts: u8,
    /// Messages in flight at most (a full network drops what is sent).
    pub max_net: usize,
    /// Message loss, crashes, spurious timeouts and step-downs (off for liveness).
    pub faults: bool,
    /// Whether a candidate with an empty log may claim the keyed witness (key 0).
    pub empty_log_claims: bool,
    /// As attach.rs does: a follower that gets a state transfer counts as having acked
    /// the primary's position as soon as the snapshot is sent, not when it holds it.
    pub ack_state_at_send: bool,
    /// Explore past a second primary in an epoch (off: look for other failures).
    pub past_split: bool,
    /// The code before the sealed stand-down: a primary that stands down starts its
    /// process over without its log, and counts as restarted (`true`). Now it seals its
    /// log on its disk first and keeps it (`false`, ft/recovery/seal.rs).
    pub stand_down_loses_log: bool,
    /// Disks emptied or replaced: a restart that loses the ballot too (`Wipe`).
    pub wipes: bool,
    /// `--fsync always`: a member acknowledges, and a primary sends, only what is on
    /// its disk, so a crashed member restarts with its whole log and keeps its vote.
    pub durable: bool,
}

/// A candidate's votes are a bit set: bit i for member i, bit `W` for the witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower { leader: Option<usize> },
    Candidate { votes: u8 },
    Primary { epoch: u64, holds_witness: bool },
}
pub const W: u8 = 1 << 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub ballot: Ballot,
    pub role: Role,
    pub log: Log,
    pub lost_log: bool,
    pub acked: [usize; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    Request { to: usize, from: usize, epoch: u64, pos: LogPosition },
    Append { to: usize, from: usize, epoch: u64, log: Log },
}

/// Fixed arrays throughout (epochs index the ghosts): states copy and hash fast.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct State {
    /// Members 0..n (the rest unused).
    pub m: [Member; 3],
    /// Messages in flight, sorted, `None`s last: an unordered set.
    pub net: [Option<Msg>; NET],
    /// KeyedByLogEpoch: key -> member index.
    pub claims: [Option<usize>; EPOCHS],
    /// Voter witness: its ballot, and the position below which it refuses.
    pub w_ballot: Ballot,
    pub w_floor: LogPosition,
    pub restarts: u8,
    /// Ghosts: who went live in each epoch with which log; a second go-live in an epoch.
    pub live: [Option<(usize, Log)>; EPOCHS],
    pub split: bool,
    /// Ghost: the longest prefix released in each epoch.
    pub released: [Option<Log>; EPOCHS],
}
pub const NET: usize = 4;
pub const EPOCHS: usize = 8;

impl State {
    pub fn net_len(&self) -> usize {
        self.net.iter().flatten().count()
    }
    /// Sends `msg` (a set: sending it twice changes nothing).
    fn send(&mut self, msg: Msg) -> Option<()> {
        if self.net.contains(&Some(msg)) {
            return Some(());
        }
        *self.net.iter_mut().find(|m| m.is_none())? = Some(msg);
        self.net.sort_by_key(|m| (m.is_none(), *m));
        Some(())
    }
    fn retain(&mut self, keep: impl Fn(&Msg) -> bool) {
        for m in self.net.iter_mut() {
            if m.is_some_and(|m| !keep(&m)) {
                *m = None;
            }
        }
        self.net.sort_by_key(|m| (m.is_none(), *m));
    }
    pub fn live(&self) -> impl Iterator<Item = (u64, Log)> + '_ {
        self.live.iter().enumerate().filter_map(|(e, l)| l.map(|(_, log)| (e as u64, log)))
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let released: Vec<_> = self.released.iter().enumerate().filter_map(|(e, r)| r.map(|r| (e, r))).collect();
        let live: Vec<_> = self.live.iter().enumerate().filter_map(|(e, l)| l.map(|l| (e, l))).collect();
        let net: Vec<_> = self.net.iter().flatten().collect();
        write!(f, "members {:?}, net {net:?}, live (epoch, (who, log)) {live:?}, released {released:?}", self.m)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Stand(usize),
    Deliver(Msg),
    Drop(Msg),
    Append(usize),
    Send(usize, usize),
    LoseLeader(usize),
    StepDown(usize),
    Restart(usize),
    Wipe(usize),
    AskWitness(usize),
    GoAlone(usize),
    LowerFloor(usize),
}

pub fn id(i: usize) -> MemberId {
    i as MemberId + 1
}
pub fn rank(i: usize) -> Rank {
    Rank { id: id(i), priority: 1 }
}
/// A log: the epoch tag of each entry, packed in a word (len in the low 4 bits, then
/// 4 bits a tag) so that states copy and hash fast.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Log(pub u64);

impl Log {
    fn len(self) -> usize {
        (self.0 & 0xf) as usize
    }
    fn get(self, i: usize) -> u64 {
        (self.0 >> (4 + 4 * i)) & 0xf
    }
    fn push(&mut self, epoch: u64) {
        let n = self.len();
        assert!(n < 12 && epoch < 16, "the model's bounds keep logs small");
        self.0 = (self.0 & !0xf) | (n as u64 + 1) | (epoch << (4 + 4 * n));
    }
    fn prefix(self, k: usize) -> Log {
        Log((self.0 & ((1u64 << (4 + 4 * k)) - 1) & !0xf) | k as u64)
    }
    fn starts_with(self, other: Log) -> bool {
        other.len() <= self.len() && self.prefix(other.len()) == other
    }
    fn position(self) -> LogPosition {
        let n = self.len();
        LogPosition { epoch: if n == 0 { 0 } else { self.get(n - 1) }, exit: n as u64 }
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries((0..self.len()).map(|i| self.get(i))).finish()
    }
}

impl Group {
    pub fn three() -> Self {
        Group {
            n: 3,
            witness: Witness::None,
            async_release: false,
            lost_log_abstains: true,
            skip_log_check: false,
            max_epoch: 2,
            max_log: 3,
            max_restarts: 1,
            max_net: 2,
            faults: true,
            empty_log_claims: true,
            ack_state_at_send: false,
            past_split: true,
            stand_down_loses_log: false,
            wipes: false,
            durable: false,
        }
    }
    pub fn two_with(witness: Witness) -> Self {
        Group { n: 2, witness, max_epoch: 3, ..Group::three() }
    }
    pub fn has_witness(&self) -> bool {
        self.witness != Witness::None
    }
    fn ids(&self) -> Vec<MemberId> {
        (0..self.n).map(id).collect()
    }
    /// Whether member `i` may take part in elections at all.
    fn may_vote(&self, m: &Member) -> bool {
        !(self.lost_log_abstains && m.lost_log)
    }

    /// Counts a candidate's votes; with a majority it goes live with a standing entry.
    fn tally(&self, s: &mut State, c: usize) {
        let Role::Candidate { votes } = s.m[c].role else { return };
        if (votes.count_ones() as usize) < majority(self.n, self.has_witness()) {
            return;
        }
        let epoch = s.m[c].ballot.epoch;
        // The voting witness set its floor for this epoch: its winner may release alone.
        // The keyed one only backs going on alone (group.rs sets holds_witness there).
        let holds_witness = votes & W != 0 && self.witness == Witness::Voter;
        self.go_live(s, c, epoch, holds_witness);
    }

    fn go_live(&self, s: &mut State, c: usize, epoch: u64, holds_witness: bool) {
        let me = &mut s.m[c];
        me.role = Role::Primary { epoch, holds_witness };
        me.log.push(epoch);
        me.lost_log = false;
        me.acked = [0; 3];
        match s.live[epoch as usize] {
            Some((who, _)) if who != c => s.split = true,
            Some(_) => {}
            None => s.live[epoch as usize] = Some((c, s.m[c].log)),
        }
    }

    /// The witness's answer to candidate `c` standing in `epoch` with `log`.
    fn ask_witness(&self, s: &mut State, c: usize, epoch: u64) -> bool {
        let pos = s.m[c].log.position();
        match self.witness {
            Witness::None => false,
            Witness::KeyedByLogEpoch => *s.claims[pos.epoch as usize].get_or_insert(c) == c,
            Witness::Voter => {
                let request = Request { epoch, candidate: rank(c), position: pos };
                let me = Voter {
                    me: Rank { id: 0, priority: 0 },
                    position: s.w_floor,
                    is_primary: false,
                    hears_primary: false,
                    lost_log: false,
                };
                let granted = decide(&mut s.w_ballot, &self.ids(), &request, &me).is_ok();
                if granted {
                    // Its winner may release what no member holds: nobody at or below
                    // this epoch gets the witness again until that primary lowers it.
                    s.w_floor = LogPosition { epoch, exit: u64::MAX };
                }
                granted
            }
        }
    }

    /// The ghost release: the longest prefix each primary may release now.
    fn release(&self, s: &mut State) {
        for p in 0..self.n {
            let Role::Primary { epoch, holds_witness } = s.m[p].role else { continue };
            let needed =
                if self.async_release { 0 } else { followers_needed(self.n, self.has_witness(), holds_witness) };
            let log = s.m[p].log;
            let Some(standing) = (0..log.len()).find(|&i| log.get(i) == epoch) else { continue };
            let holders = |i: usize| (0..self.n).filter(|&f| f != p && s.m[p].acked[f] >= i).count();
            let Some(upto) = (standing + 2..=log.len()).rev().find(|&i| holders(i) >= needed) else { continue };
            let prefix = log.prefix(upto);
            let longer = s.released[epoch as usize].is_none_or(|r| r.len() < prefix.len());
            if longer {
                s.released[epoch as usize] = Some(prefix);
            }
        }
    }

    fn deliver(&self, s: &mut State, msg: Msg) {
        match msg {
            Msg::Request { to, from, epoch, pos } => {
                let v = &mut s.m[to];
                let voter = Voter {
                    me: rank(to),
                    position: if self.skip_log_check { LogPosition::default() } else { v.log.position() },
                    is_primary: matches!(v.role, Role::Primary { .. }),
                    hears_primary: matches!(v.role, Role::Follower { leader: Some(_) }),
                    lost_log: self.lost_log_abstains && v.lost_log,
                };
                let request = Request { epoch, candidate: rank(from), position: pos };
                let before = v.ballot.epoch;
                let verdict = decide(&mut v.ballot, &self.ids(), &request, &voter);
                if v.ballot.epoch > before && matches!(v.role, Role::Candidate { .. }) {
                    v.role = Role::Follower { leader: None };
                }
                // The grant is counted as it is given: a late or lost grant only
                // elects fewer primaries.
                let current = s.m[from].ballot.epoch == epoch;
                if let (Ok(()), Role::Candidate { votes }, true) = (verdict, &mut s.m[from].role, current) {
                    *votes |= 1 << to;
                    self.tally(s, from);
                }
            }
            Msg::Append { to, from, epoch, log } => {
                let f = &mut s.m[to];
                // Fencing: a primary never follows, and nobody follows an older epoch.
                if matches!(f.role, Role::Primary { .. }) || epoch < f.ballot.epoch {
                    return;
                }
                f.ballot.observe(epoch);
                f.role = Role::Follower { leader: Some(from) };
                // Resume when the logs agree (records stream in one at a time), keep a
                // longer log (a late message), otherwise a state transfer replaces it.
                // A restarted member always rejoins by state transfer: streaming from
                // (0, 0), it would vote again before it held what it had acked.
                let has = if f.lost_log {
                    f.lost_log = false;
                    f.log = log;
                    log.len()
                } else if log.starts_with(f.log) {
                    f.log = log.prefix((f.log.len() + 1).min(log.len()));
                    f.log.len()
                } else if f.log.starts_with(log) {
                    log.len()
                } else {
                    f.log = log;
                    log.len()
                };
                // The ack is counted as it is sent. Sound for these properties: acks
                // only feed the ghost release, a primary of `epoch` now was one when it
                // sent, and the properties do not depend on when output left.
                let p = &mut s.m[from];
                if matches!(p.role, Role::Primary { epoch: e, .. } if e == epoch) {
                    p.acked[to] = p.acked[to].max(has);
                }
            }
        }
    }
}

impl Model for Group {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let member = Member {
            ballot: Ballot::default(),
            role: Role::Follower { leader: None },
            log: Log::default(),
            lost_log: false,
            acked: [0; 3],
        };
        vec![State {
            m: [member; 3],
            net: [None; NET],
            claims: [None; EPOCHS],
            w_ballot: Ballot::default(),
            w_floor: LogPosition::default(),
            restarts: 0,
            live: [None; EPOCHS],
            split: false,
            released: [None; EPOCHS],
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for &msg in s.net.iter().flatten() {
            out.push(Action::Deliver(msg));
            if self.faults {
                out.push(Action::Drop(msg));
            }
        }
        for i in 0..self.n {
            let me = &s.m[i];
            match me.role {
                Role::Follower { leader } => {
                    let headroom = me.ballot.epoch < self.max_epoch;
                    if leader.is_none() && headroom && self.may_vote(me) {
                        out.push(Action::Stand(i));
                    }
                    let gone = leader.is_some_and(|l| !matches!(s.m[l].role, Role::Primary { .. }));
                    if leader.is_some() && (self.faults || gone) {
                        out.push(Action::LoseLeader(i));
                    }
                }
                Role::Candidate { votes } => {
                    if me.ballot.epoch < self.max_epoch {
                        out.push(Action::Stand(i));
                    }
                    let claims = self.empty_log_claims || me.log.len() > 0;
                    if self.has_witness() && votes & W == 0 && claims {
                        out.push(Action::AskWitness(i));
                    }
                }
                Role::Primary { epoch, holds_witness } => {
                    if me.log.len() < self.max_log {
                        out.push(Action::Append(i));
                    }
                    for f in (0..self.n).filter(|&f| f != i) {
                        out.push(Action::Send(i, f));
                    }
                    if self.faults {
                        out.push(Action::StepDown(i));
                        if self.n == 2 && self.has_witness() && me.ballot.epoch < self.max_epoch {
                            out.push(Action::GoAlone(i));
                        }
                    }
                    let other = 1 - i.min(1);
                    let caught_up = self.n == 2 && me.acked[other] == me.log.len();
                    if self.witness == Witness::Voter && holds_witness && caught_up && s.w_floor.epoch == epoch {
                        out.push(Action::LowerFloor(i));
                    }
                }
            }
            if self.faults && s.restarts < self.max_restarts {
                out.push(Action::Restart(i));
                if self.wipes {
                    out.push(Action::Wipe(i));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = *last;
        match action {
            Action::Deliver(msg) => {
                s.retain(|m| *m != msg);
                self.deliver(&mut s, msg);
            }
            Action::Drop(msg) => s.retain(|m| *m != msg),
            Action::Stand(c) => {
                let epoch = s.m[c].ballot.stand(id(c));
                s.m[c].role = Role::Candidate { votes: 1 << c };
                let pos = s.m[c].log.position();
                for to in (0..self.n).filter(|&to| to != c) {
                    s.send(Msg::Request { to, from: c, epoch, pos })?;
                }
            }
            Action::AskWitness(c) => {
                let epoch = s.m[c].ballot.epoch;
                if self.ask_witness(&mut s, c, epoch) {
                    if let Role::Candidate { votes } = &mut s.m[c].role {
                        *votes |= W;
                    }
                    self.tally(&mut s, c);
                }
            }
            Action::Append(p) => {
                let Role::Primary { epoch, .. } = s.m[p].role else { return None };
                s.m[p].log.push(epoch);
            }
            Action::Send(p, f) => {
                let Role::Primary { epoch, .. } = s.m[p].role else { return None };
                // A follower joins: its log may reach this epoch, so the primary no
                // longer holds the witness for it (group.rs `add_follower`). The voting
                // witness keeps refusing such a log until LowerFloor.
                if self.witness == Witness::KeyedByLogEpoch {
                    s.m[p].role = Role::Primary { epoch, holds_witness: false };
                }
                // One stream per pair: a newer send supersedes the one in flight (whose
                // loss the model allows anyway).
                s.retain(|m| !matches!(m, Msg::Append { to, from, .. } if (*to, *from) == (f, p)));
                let (log, them) = (s.m[p].log, &s.m[f]);
                // It asked to attach (the hello passed its fencing), got a snapshot.
                let attached = !matches!(them.role, Role::Primary { .. }) && them.ballot.epoch <= epoch;
                let transfer = them.lost_log || !log.starts_with(them.log);
                if self.ack_state_at_send && attached && transfer {
                    s.m[p].acked[f] = s.m[p].acked[f].max(log.len());
                }
                s.send(Msg::Append { to: f, from: p, epoch, log })?;
            }
            Action::LoseLeader(f) => {
                s.m[f].role = Role::Follower { leader: None };
                s.m[f].acked = [0; 3];
            }
            Action::StepDown(p) => {
                s.m[p].role = Role::Follower { leader: None };
                s.m[p].acked = [0; 3];
                // Its process starts over (main.rs `rejoin_as_follower`): its connections
                // die, and it keeps its log only if it sealed it (the ballot is on disk).
                s.m[p].lost_log |= self.stand_down_loses_log;
                s.retain(|m| !matches!(m, Msg::Request { to, from, .. } | Msg::Append { to, from, .. } if *to == p || *from == p));
            }
            Action::Restart(i) | Action::Wipe(i) => {
                let me = &mut s.m[i];
                // A wiped disk loses the ballot too. As the elector does: a ballot that
                // has seen an epoch means a log was lost, none means a blank member.
                let wiped = matches!(action, Action::Wipe(_));
                let ballot = if wiped { Ballot::default() } else { me.ballot };
                let kept = self.durable && !wiped;
                *me = Member {
                    ballot,
                    role: Role::Follower { leader: None },
                    log: if kept { me.log } else { Log::default() },
                    lost_log: ballot.epoch > 0 && !kept,
                    acked: [0; 3],
                };
                s.restarts += 1;
                // Its connections died with it: nothing in flight reaches the new process.
                s.retain(|m| !matches!(m, Msg::Request { to, from, .. } | Msg::Append { to, from, .. } if *to == i || *from == i));
            }
            Action::GoAlone(p) => {
                let Role::Primary { epoch, .. } = s.m[p].role else { return None };
                let won = match self.witness {
                    // The design: claim "who succeeds my epoch", then move on a new epoch.
                    Witness::KeyedByLogEpoch => {
                        let won = self.ask_witness(&mut s, p, epoch);
                        s.m[p].ballot.stand(id(p));
                        won
                    }
                    // The fix: a real election for the next epoch, with the witness's vote.
                    _ => {
                        let next = s.m[p].ballot.stand(id(p));
                        self.ask_witness(&mut s, p, next)
                    }
                };
                if won {
                    let next = s.m[p].ballot.epoch;
                    self.go_live(&mut s, p, next, true);
                } else {
                    s.m[p].role = Role::Follower { leader: None };
                    s.m[p].acked = [0; 3];
                }
            }
            Action::LowerFloor(p) => {
                let Role::Primary { epoch, .. } = s.m[p].role else { return None };
                // It stops releasing alone first, then tells the witness how far the
                // follower holds its log (only if the witness still guards its epoch).
                s.m[p].role = Role::Primary { epoch, holds_witness: false };
                s.w_floor = LogPosition { epoch, exit: s.m[p].log.len() as u64 };
            }
        }
        if s.net_len() > self.max_net {
            return None;
        }
        self.release(&mut s);
        (s != *last).then_some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        self.past_split || !s.split
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one primary per epoch", |_, s: &State| !s.split),
            Property::always("released output is in every later primary's log", |_, s: &State| {
                let mut released = s.released.iter().enumerate().filter_map(|(e, r)| r.map(|r| (e as u64, r)));
                released.all(|(e, out)| s.live().all(|(later, log)| later <= e || log.starts_with(out)))
            }),
            Property::sometimes("a primary is elected", |_, s: &State| s.live().count() >= 1),
            Property::sometimes("output is released", |_, s: &State| s.released.iter().any(Option::is_some)),
            Property::sometimes("a second primary is elected", |_, s: &State| s.live().count() >= 2),
        ]
    }
}
