//! The replica group as this member sees it, and **the one owner** of its
//! state: the epoch and every change to it, the followers with their mode,
//! state and acknowledged positions, and every conversation with the arbiter.
//! Nothing else writes the epoch or talks to the arbiter.
//!
//! ```text
//!   epoch N ──(a member goes on alone: wins the arbiter for N)──> epoch N+1
//!
//!   primary:   followers [f1 acked 120, f2 acked 118 (synchronous)]  mode semi-sync
//!              release_limit = 118      (output_rule)
//!   follower:  upstream (its primary, alive?, received, replayed, released)
//! ```
//!
//! A member goes on alone when a primary drops a follower (the follower might be
//! alive behind a partition and about to go live) or when a follower goes live.
//! With an arbiter it must first win the claim for the current epoch; the loser
//! halts. The epoch then moves on, so the next claim is a fresh one.
use super::election::elector::Elector;
use super::follower::Upstream;
use super::output_rule::{self, Position, ReplicationMode};
use crate::host::arbiter::Arbiter;
use crate::host::scope::Scope;
use crate::host::status::Stats;
use crate::vm::live::VmEvent;
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use witness_hold::{WitnessHold, WitnessState};

/// The replication epoch a fresh group starts in.
pub const FIRST_EPOCH: u64 = 1;
/// Followers a primary takes by default (`--max-followers`).
pub const DEFAULT_MAX_FOLLOWERS: usize = 4;
/// Dropped followers kept for `status`.
const MAX_DROPPED_SHOWN: usize = 8;
/// A follower whose replay trails by more than this many exits is "catching up".
const IN_SYNC_LAG: u64 = 4096;

/// A follower as its primary sees it.
#[derive(Debug)]
pub struct Follower {
    /// Numbered from 1 in the order they attached.
    pub id: u64,
    /// Its address, as the primary sees the connection.
    pub addr: String,
    /// The exit its state was taken at: it holds everything through this one.
    pub joined_at: u64,
    acked: AtomicU64,
    replayed: AtomicU64,
    heard: AtomicBool,
    dropped: AtomicBool,
    /// Log bytes sent to it.
    pub log_bytes: AtomicU64,
}

impl Follower {
    /// The highest exit it acknowledged receiving.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// The last exit it said it replayed.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::SeqCst)
    }

    /// Whether the group has let it go.
    pub fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    fn state(&self, exit_index: u64) -> &'static str {
        match () {
            _ if self.is_dropped() => "dropped",
            _ if !self.heard.load(Ordering::SeqCst) => "joining",
            _ if exit_index.saturating_sub(self.replayed()) > IN_SYNC_LAG => "catching up",
            _ => "in sync",
        }
    }
}

/// How the group is configured.
#[derive(Clone)]
pub struct GroupConfig {
    pub mode: ReplicationMode,
    pub max_followers: usize,
    /// Decides who goes on alone; without one, a partition can cause split brain.
    pub arbiter: Option<Arc<dyn Arbiter>>,
    /// The group's name: the scope of its arbiter claims (and witness record).
    pub scope: Arc<Scope>,
    /// A replica group's election (`ftvmm replica`), which then decides instead of the
    /// arbiter: output waits for a majority, and a primary that loses it steps down.
    pub election: Option<Election>,
}

/// A replica group member's election, as the group uses it.
#[derive(Clone)]
pub struct Election {
    pub elector: Arc<Elector>,
    /// A primary short of its majority this long steps down.
    pub step_down_after: std::time::Duration,
}

/// The group, as this member sees it.
pub struct Group {
    config: GroupConfig,
    epoch: AtomicU64,
    followers: Mutex<Vec<Arc<Follower>>>,
    dropped: Mutex<VecDeque<Arc<Follower>>>,
    /// The synchronous follower's id (`semi-sync`).
    synchronous: AtomicU64,
    /// What had been released when the synchronous follower was chosen: it may take
    /// over only once it holds that much.
    synchronous_from: AtomicU64,
    next_id: AtomicU64,
    /// The highest exit whose output has left this VM.
    released: AtomicU64,
    halted: AtomicBool,
    /// This member's primary, while it is a follower.
    upstream: Mutex<Option<(Arc<Upstream>, String)>>,
    /// What the guest's INFO shows (`guest_abi::system::REPL_PROTECTED` or 0).
    repl_status: Arc<AtomicU64>,
    /// Where to tell the vCPU to halt when another member won the arbiter.
    events: Sender<VmEvent>,
    /// Where this primary stands with the witness (two-member groups).
    witness: WitnessState,
    /// Itself, for the step-down timer.
    me: std::sync::OnceLock<std::sync::Weak<Group>>,
}

impl Group {
    /// A group in `FIRST_EPOCH` with no followers (a primary, or a follower before
    /// it has its primary's state).
    pub fn new(
        config: GroupConfig,
        stats: Arc<Stats>,
        repl_status: Arc<AtomicU64>,
        events: Sender<VmEvent>,
    ) -> Arc<Group> {
        let group = Arc::new(Group {
            config,
            epoch: AtomicU64::new(FIRST_EPOCH),
            followers: Mutex::new(Vec::new()),
            dropped: Mutex::new(VecDeque::new()),
            synchronous: AtomicU64::new(0),
            synchronous_from: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            released: AtomicU64::new(0),
            halted: AtomicBool::new(false),
            upstream: Mutex::new(None),
            repl_status,
            events,
            witness: WitnessState::new(),
            me: std::sync::OnceLock::new(),
        });
        let _ = group.me.set(Arc::downgrade(&group));
        stats.set_group(group.clone());
        group
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Follower>>> {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replication epoch. A follower is in the epoch its primary last announced.
    pub fn epoch(&self) -> u64 {
        if let Some((up, _)) = self.upstream() {
            self.epoch.fetch_max(up.epoch.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        self.epoch.load(Ordering::SeqCst)
    }

    /// The replication mode.
    pub fn mode(&self) -> ReplicationMode {
        self.config.mode
    }

    /// The arbiter, for describing it.
    pub fn arbiter(&self) -> Option<&Arc<dyn Arbiter>> {
        self.config.arbiter.as_ref()
    }

    /// The group's name.
    pub fn scope(&self) -> &Arc<Scope> {
        &self.config.scope
    }

    /// A primary must not start in an epoch that another member of its group already
    /// went on alone in: it would be a second primary for the same group. Only a group
    /// named with `--group-name` can have claims when its primary starts: a made-up name
    /// is new, so an old deployment's claims never block a new one.
    pub fn refuse_if_stale(&self) -> Result<(), String> {
        if self.config.election.is_some() {
            return Ok(()); // it was elected
        }
        let Some(arbiter) = &self.config.arbiter else {
            tracing::warn!("no --arbiter: if the link to a follower is cut, both sides may go on alone (split brain)");
            return Ok(());
        };
        let group = self.config.scope.name();
        tracing::info!(group = %group, arbiter = %arbiter.describe(), "arbiter claims are scoped by the group name");
        match arbiter.latest_claim(group.as_str()) {
            Ok(Some(epoch)) if epoch >= FIRST_EPOCH => Err(format!(
                "the arbiter ({}) records that a member of group {group} went on alone in epoch {epoch}: this \
                 primary's state is stale and it must not serve. Join the current primary as a follower instead; \
                 a new deployment needs no --group-name (or a new one)",
                arbiter.describe()
            )),
            Ok(_) => {
                self.warn_of_older_groups(arbiter.as_ref());
                Ok(())
            }
            Err(e) => Err(format!("cannot consult the arbiter: {e}")),
        }
    }

    /// A primary that made its group's name up is a new deployment, which no old claim
    /// blocks; but if the arbiter shows an older group of the same guest address whose
    /// member went on alone, that VM may still be serving at the address: say so.
    fn warn_of_older_groups(&self, arbiter: &dyn Arbiter) {
        let name = self.config.scope.name();
        let Some((guest, _)) = name.as_str().rsplit_once('-') else { return };
        let Ok(listing) = crate::host::records::list(&arbiter.location()) else { return };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        for (group, records) in listing.iter().filter(|(g, _)| g.as_str() != name.as_str()) {
            let same_guest = group.rsplit_once('-').is_some_and(|(g, _)| g == guest);
            if let (true, Some(last)) = (same_guest, records.claims.last()) {
                tracing::warn!(
                    other_group = %group,
                    "the arbiter holds claims of an older group of this guest address ({group}: epoch {}, {} ago, \
                     by {}): this primary starts a new group; if that group's VM still serves, two VMs now answer \
                     at {guest} (give every member of a deployment the same --group-name to have the arbiter refuse)",
                    last.epoch,
                    crate::host::records::age(last.at_unix, now),
                    last.holder
                );
            }
        }
    }

    /// Why another follower may not attach now, if it may not.
    pub fn refuse_follower(&self) -> Option<String> {
        let count = self.lock().len();
        if self.halted() {
            return Some("this primary has halted".into());
        }
        if count >= self.config.max_followers {
            return Some(format!(
                "this primary already has a backup in lockstep ({count} of --max-followers {})",
                self.config.max_followers
            ));
        }
        // Until followers elect a primary, they race for the arbiter when theirs dies; with
        // no arbiter, every follower would go live at once.
        if count >= 1 && self.config.arbiter.is_none() && self.config.election.is_none() {
            return Some(
                "a second follower needs --arbiter (file:DIR or etcd:URL) on every member: without one, \
                 a primary failure would leave every follower live"
                    .into(),
            );
        }
        None
    }

    /// Whether another follower may attach now.
    pub fn has_room(&self) -> bool {
        self.refuse_follower().is_none()
    }

    /// Live followers now.
    pub fn follower_count(&self) -> usize {
        self.lock().len()
    }

    /// Registers a follower that holds the state as of exit `joined_at`.
    pub fn add_follower(&self, addr: &str, joined_at: u64) -> Arc<Follower> {
        let follower = Arc::new(Follower {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            addr: addr.to_string(),
            joined_at,
            acked: AtomicU64::new(joined_at),
            replayed: AtomicU64::new(joined_at),
            heard: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            log_bytes: AtomicU64::new(0),
        });
        let mut followers = self.lock();
        followers.push(follower.clone());
        // Its log is of this epoch: it could win the witness for it, so this primary no
        // longer holds it.
        self.witness.follower_joined();
        if self.config.mode == ReplicationMode::SemiSync && self.synchronous.load(Ordering::SeqCst) == 0 {
            self.synchronous.store(follower.id, Ordering::SeqCst);
        }
        self.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
        follower
    }

    /// A follower's ack. Returns whether its acknowledged position moved (output may go).
    /// An ack beyond what was sent is refused by the caller before it gets here.
    pub fn record_ack(&self, follower: &Follower, received: u64, replayed: u64) -> bool {
        follower.heard.store(true, Ordering::SeqCst);
        // Holding the witness, this primary may have released output no follower holds.
        // Once one holds everything released (output has waited for it since it was
        // added), the witness may vote for it: the floor comes down to what it holds.
        if self.witness.get() != WitnessHold::Free && received >= self.released() && self.witness.take_floor() {
            if let Some(e) = &self.config.election {
                let (elector, epoch) = (e.elector.clone(), self.epoch());
                let _ = std::thread::Builder::new()
                    .name("witness-floor".into())
                    .spawn(move || elector.lower_witness_floor(epoch, received));
            }
        }
        follower.replayed.fetch_max(replayed, Ordering::SeqCst);
        follower.acked.fetch_max(received, Ordering::SeqCst) < received
    }

    /// Lets a follower go: it is silent, closed, broken, stalled or misbehaving. Output
    /// stops waiting for it at once. With an arbiter this member must first win the
    /// current epoch (the follower may be alive behind a partition and about to go
    /// live); if it loses, it halts and releases nothing more. Returns whether the
    /// follower was still in the group.
    pub fn drop_follower(&self, follower: &Follower, why: &str) -> bool {
        if follower.dropped.swap(true, Ordering::SeqCst) {
            return false;
        }
        tracing::warn!(follower = follower.id, addr = %follower.addr, "backup lost: follower {} dropped ({why})", follower.id);
        if let Some(e) = &self.config.election {
            self.keep_majority(e, follower.id);
        } else if let Err(lost) = self.go_on_alone("primary") {
            self.halt(lost);
            return true;
        }
        let mut followers = self.lock();
        let gone: Vec<Arc<Follower>> = followers.iter().filter(|f| f.id == follower.id).cloned().collect();
        followers.retain(|f| f.id != follower.id);
        if self.synchronous.load(Ordering::SeqCst) == follower.id {
            let positions: Vec<Position> =
                followers.iter().map(|f| Position { acked: f.acked(), synchronous: false }).collect();
            let next = output_rule::choose_synchronous(&positions).map_or(0, |i| followers[i].id);
            self.synchronous_from.store(self.released(), Ordering::SeqCst);
            self.synchronous.store(next, Ordering::SeqCst);
            if next != 0 {
                tracing::warn!(follower = next, "follower {next} is the synchronous one now");
            }
        }
        if followers.is_empty() {
            self.repl_status.store(0, Ordering::SeqCst);
            tracing::warn!("{}", self.alone_message());
        }
        drop(followers);
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        dropped.extend(gone);
        while dropped.len() > MAX_DROPPED_SHOWN {
            dropped.pop_front();
        }
        true
    }

    /// The followers output must wait for, whatever the mode (a replica group's majority).
    fn followers_needed(&self) -> usize {
        let Some(e) = &self.config.election else { return 0 };
        let g = e.elector.membership();
        crate::ft::election::rules::followers_needed(g.members.len(), g.witness, self.witness.counts())
    }

    /// A replica group primary lost follower `gone`: with too few left for a majority it
    /// goes on alone only by winning the witness; otherwise it stops releasing at once
    /// and steps down if no follower comes back within the failover timeout.
    fn keep_majority(self: &Group, e: &Election, gone: u64) {
        let left = self.lock().iter().filter(|f| f.id != gone).count();
        if left >= self.followers_needed() {
            return;
        }
        if e.elector.membership().witness {
            match e.elector.go_on_alone(self.epoch()) {
                Ok(epoch) => {
                    self.witness.won(true);
                    self.epoch.store(epoch, Ordering::SeqCst);
                    return;
                }
                Err(why) => return self.halt(format!("{why}: this primary steps down")),
            }
        }
        tracing::warn!(
            "{left} follower(s) left, {} needed for a majority: output is held, and this primary steps down in {} ms \
             unless followers come back",
            self.followers_needed(),
            e.step_down_after.as_millis()
        );
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else { return };
        let after = e.step_down_after;
        let _ = std::thread::Builder::new().name("step-down".into()).spawn(move || {
            std::thread::sleep(after);
            let have = me.follower_count();
            if !me.halted() && have < me.followers_needed() {
                me.halt(format!(
                    "no majority for {} ms ({have} follower(s), {} needed): this primary steps down",
                    after.as_millis(),
                    me.followers_needed()
                ));
            }
        });
    }

    /// What a primary that just lost its last follower does now, in words: it depends
    /// on the configuration.
    fn alone_message(&self) -> String {
        let Some(e) = &self.config.election else {
            return "no follower left: this primary now runs UNPROTECTED (output leaves without waiting for anyone; \
                    a failure of this host now loses the VM)"
                .into();
        };
        if self.halted() {
            return "no follower left: this replica group primary has halted (see above) and releases nothing more"
                .into();
        }
        if self.followers_needed() == 0 {
            let why = if self.witness.counts() {
                "it won the witness's vote and goes on alone"
            } else {
                "no follower is needed for a majority"
            };
            return format!(
                "no follower left: this replica group primary runs UNPROTECTED ({why}) until a follower joins"
            );
        }
        let output = match self.config.mode {
            ReplicationMode::Async => "its output still leaves (async)",
            _ => "it HOLDS all output (nothing leaves that a majority lacks)",
        };
        format!(
            "no follower left: this replica group primary has no majority: {output}, and it steps down in {} ms \
             unless a follower comes back",
            e.step_down_after.as_millis()
        )
    }

    /// With an arbiter, claims the current epoch of this group for `me`; on a win the
    /// epoch moves on. `Err` says why this member must not go on alone.
    fn go_on_alone(&self, me: &str) -> Result<(), String> {
        let epoch = self.epoch();
        if let Some(arbiter) = &self.config.arbiter {
            let group = self.config.scope.name();
            if group.is_none() {
                return Err("this member does not know its group's name yet, so it cannot claim the arbiter".into());
            }
            let me = format!("{me} pid {} on {}", std::process::id(), report::hostname());
            match arbiter.claim(group.as_str(), epoch, &me) {
                Ok(true) => {
                    tracing::info!(epoch, group = %group, arbiter = %arbiter.describe(), "won the arbiter: going on alone")
                }
                Ok(false) => return Err(format!("another member won the arbiter for epoch {epoch} and is live")),
                Err(e) => {
                    return Err(format!("cannot reach the arbiter ({e}); taking that as a lost claim, the safe choice"))
                }
            }
        }
        self.epoch.store(epoch + 1, Ordering::SeqCst);
        Ok(())
    }

    /// This member must stop at once and release nothing more: another went on alone.
    pub fn halt(&self, why: String) {
        self.halted.store(true, Ordering::SeqCst);
        crate::host::tap::fall_silent();
        if let Some(e) = &self.config.election {
            e.elector.stepped_down();
        }
        tracing::error!("{why}: this primary HALTS without releasing held output");
        let _ = self.events.send(VmEvent::Halt(why));
    }

    /// Whether this member halted.
    pub fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Whether `follower` holds every write a client may have been told of, so that it
    /// may take over if this primary dies. In `semi-sync` only the synchronous follower
    /// does, and only once it has caught up with what was released before it was
    /// chosen; `sync` followers always do. `async` followers may lose writes (that is
    /// the mode's price) and `quorum:K` ones may too until the followers elect the most
    /// up-to-date one, so both may take over.
    pub fn eligible(&self, follower: &Follower) -> bool {
        if self.config.election.is_some() {
            return true; // the election picks the most up-to-date follower
        }
        match self.config.mode {
            ReplicationMode::SemiSync => {
                self.synchronous.load(Ordering::SeqCst) == follower.id
                    && follower.acked() >= self.synchronous_from.load(Ordering::SeqCst)
            }
            _ => true,
        }
    }

    /// The highest exit whose output may leave now (the Output Rule).
    pub fn release_limit(&self) -> u64 {
        if self.halted() {
            return 0;
        }
        let sync = self.synchronous.load(Ordering::SeqCst);
        // A follower that has not acknowledged anything yet may not have loaded the state
        // it was sent: it holds nothing, and output waits for its first ack (the model
        // check found a release counted on a state transfer that was then lost).
        let acked = |f: &Follower| if f.heard.load(Ordering::SeqCst) { f.acked() } else { 0 };
        let positions: Vec<Position> =
            self.lock().iter().map(|f| Position { acked: acked(f), synchronous: f.id == sync }).collect();
        let limit = output_rule::release_limit(self.config.mode, &positions);
        if super::sabotage::unsafe_release_before_ack() {
            return u64::MAX;
        }
        // A replica group releases only what a majority holds, in every mode but async
        // (which waits for nobody, and may lose acknowledged writes on a failover).
        if self.config.mode == ReplicationMode::Async {
            return limit;
        }
        match self.followers_needed() {
            0 => limit,
            k if positions.len() < k => self.released(),
            k => {
                let mut acked: Vec<u64> = positions.iter().map(|p| p.acked).collect();
                acked.sort_unstable_by(|a, b| b.cmp(a));
                limit.min(acked[k - 1])
            }
        }
    }

    /// Output produced up to `exit_index` has left this VM; followers are told.
    pub fn note_released(&self, exit_index: u64) {
        self.released.fetch_max(exit_index, Ordering::SeqCst);
    }

    /// The highest exit whose output has left this VM.
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::SeqCst)
    }

    /// This member is a follower of the primary at `addr`, from the state it sent in `epoch`.
    pub fn follow(&self, upstream: Arc<Upstream>, addr: &str, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        upstream.epoch.fetch_max(epoch, Ordering::SeqCst);
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some((upstream, addr.to_string()));
        self.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
    }

    /// This follower's primary is gone and it wants to go live: with an arbiter it must
    /// win the current epoch first. On success it is the primary of a new epoch, with
    /// no followers yet.
    pub fn take_over(&self) -> Result<(), String> {
        self.epoch();
        match &self.config.election {
            // It won the election: its epoch is the one it won, and if the witness voted for
            // it, no other member can win without this one: it may go on alone.
            Some(e) => {
                self.epoch.store(e.elector.epoch(), Ordering::SeqCst);
                self.witness.won(e.elector.won_with_witness());
            }
            None => self.go_on_alone("backup")?,
        }
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.repl_status.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn upstream(&self) -> Option<(Arc<Upstream>, String)> {
        self.upstream.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The election, in a replica group.
    pub fn elector(&self) -> Option<&Arc<Elector>> {
        self.config.election.as_ref().map(|e| &e.elector)
    }

    /// This member was elected primary of `epoch` at boot.
    pub fn lead(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        if let Some(e) = self.elector() {
            self.witness.won(e.won_with_witness());
        }
    }
}

mod report;

#[cfg(test)]
mod tests;
mod witness_hold;
