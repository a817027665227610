//! What a follower knows about its primary: the one record of where its log and
//! replay stand, whom it follows, and how it rejoins, shared by `log-rx`, the
//! replaying vCPU, the output thread and the go-live path.
use crate::ft::backlog::Backlog;
use crate::ft::disklog::Persist;
use crate::ft::election::rejoining::Rejoining;
use crate::ft::election::rules::LogPosition;
use crate::ft::golive::{Boost, Loss};
use crate::host::sched::CpuTimes;
use crate::host::tls::Channel;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// What a follower knows about its primary, shared by `log-rx`, the replaying
/// vCPU, the output thread and the go-live path.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The primary is alive and streaming (until the stream ends).
    pub alive: AtomicBool,
    /// The highest exit received completely (what acks say).
    pub received_through: AtomicU64,
    /// The last exit replayed; the replay driver writes it.
    pub replayed_through: Arc<AtomicU64>,
    /// The primary's latest released mark: its output up to here has left it.
    pub released: AtomicU64,
    /// The stream broke in a way that forbids going live (corruption).
    pub corrupt: AtomicBool,
    /// This follower's replay stopped making progress while records waited (the
    /// watchdog tripped); like corruption, this forbids going live.
    pub stalled: AtomicBool,
    /// The primary ended its log cleanly (SIGTERM), so the follower stops too.
    pub clean_end: AtomicBool,
    /// The epoch the primary last announced (its state's, then standing marks).
    pub epoch: AtomicU64,
    /// The records after this exit are `epoch`'s; those before, `earlier_epoch`'s (a
    /// resume across an election gets the old primary's records, then the new one's).
    pub(super) epoch_from: AtomicU64,
    pub(super) earlier_epoch: AtomicU64,
    /// In a replica group, the log this follower received, kept so that it can serve
    /// resumes from it if it becomes primary.
    pub backlog: Mutex<Option<Backlog>>,
    /// The primary last said this follower may take over: output waited for it, so it
    /// holds every write a client was told of. An asynchronous follower may not.
    pub eligible: AtomicBool,
    /// In a replica group: this member voted for another candidate in this epoch, so it
    /// must not acknowledge a primary of any earlier one (Raft's fencing; without it, a
    /// primary whose follower voted for a rival could go on releasing with its acks).
    pub fence: std::sync::OnceLock<Arc<AtomicU64>>,
    /// The epoch of the primary this follower is connected to (its hello's, then its
    /// standing marks'): what the fence is checked against. Not the log's epoch, which
    /// trails it while a resume across an election replays the old primary's records.
    pub primary_epoch: AtomicU64,
    /// A reconnection on which the primary sends a new state (a resume was not
    /// possible): the vCPU restores it once it has replayed what it holds.
    pub restart: Mutex<Option<Channel>>,
    /// With `--data-dir`: the disk every received record is appended to (`ft::recovery`).
    pub persist: OnceLock<Arc<Persist>>,
    /// The replaying vCPU thread's id (0 until it runs), so that `log-rx` can read its
    /// CPU times when the primary is lost (the go-live line says where the time went).
    pub vcpu_tid: AtomicI32,
    /// When `log-rx` last found its stream ended, and where this follower stood then.
    pub lost: Mutex<Option<Loss>>,
    /// A replica member restarted on its disk: told its elector once it has rejoined.
    pub rejoining: Mutex<Option<Rejoining>>,
}

impl Upstream {
    /// A follower whose state was taken at exit `joined_at` (0 at boot): it holds,
    /// and has replayed, everything through that exit. Positions starting anywhere
    /// else would make flow control wait for exits that will never be sent.
    pub fn new(joined_at: u64) -> Arc<Upstream> {
        let u = Upstream { alive: AtomicBool::new(true), eligible: AtomicBool::new(true), ..Upstream::default() };
        u.epoch_from.store(joined_at, Ordering::SeqCst);
        u.received_through.store(joined_at, Ordering::SeqCst);
        u.replayed_through.store(joined_at, Ordering::SeqCst);
        u.released.store(joined_at, Ordering::SeqCst);
        Arc::new(u)
    }

    /// A follower restarted on its disk: its VM holds the checkpoint of `checkpoint_exit`
    /// taken in `checkpoint_epoch`, and its disk's log holds through `position`, the last
    /// standing mark in it saying `log_epoch`. It has not heard a primary yet.
    pub fn from_disk(checkpoint_exit: u64, checkpoint_epoch: u64, position: u64, log_epoch: u64) -> Arc<Upstream> {
        let u = Upstream::new(checkpoint_exit);
        u.earlier_epoch.store(checkpoint_epoch, Ordering::SeqCst);
        u.epoch.store(log_epoch.max(checkpoint_epoch), Ordering::SeqCst);
        u.received_through.store(position, Ordering::SeqCst);
        u.alive.store(false, Ordering::SeqCst);
        u
    }

    /// Where this follower's log ends, for elections: the epoch of its last record,
    /// and the last exit it holds.
    pub fn log_position(&self) -> LogPosition {
        let exit = self.received_through.load(Ordering::SeqCst);
        let epoch = if exit > self.epoch_from.load(Ordering::SeqCst) {
            self.epoch.load(Ordering::SeqCst)
        } else {
            self.earlier_epoch.load(Ordering::SeqCst)
        };
        LogPosition { epoch, exit }
    }

    /// The primary says the records after exit `from` are `epoch`'s.
    pub(super) fn announce_epoch(&self, epoch: u64, from: u64) -> bool {
        let was = self.epoch.load(Ordering::SeqCst);
        if epoch <= was {
            return false;
        }
        // Records up to `from` keep the epoch they had.
        let before =
            if from > self.epoch_from.load(Ordering::SeqCst) { was } else { self.earlier_epoch.load(Ordering::SeqCst) };
        self.earlier_epoch.store(before, Ordering::SeqCst);
        self.epoch_from.store(from, Ordering::SeqCst);
        self.epoch.store(epoch, Ordering::SeqCst);
        true
    }

    /// Starts keeping the log this follower receives (replica groups), from a state
    /// taken at exit `joined_at` in `epoch`.
    pub fn keep_log(&self, bytes: usize, joined_at: u64, epoch: u64) {
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = Some(Backlog::new(bytes, joined_at, epoch));
    }

    /// The calling thread is the one that replays (and goes live).
    pub fn note_vcpu_thread(&self) {
        self.vcpu_tid.store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
    }

    /// The stream ended now: notes where this follower stood, for the go-live line.
    pub(super) fn note_loss(&self) {
        let loss = Loss {
            at: Instant::now(),
            received_through: self.received_through.load(Ordering::SeqCst),
            replayed_through: self.replayed_through.load(Ordering::SeqCst),
            vcpu: CpuTimes::of_thread(self.vcpu_tid.load(Ordering::SeqCst)),
            raised: None,
        };
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(loss);
    }

    /// The log ended for good and this follower may go live: its vCPU replays what is
    /// left at real-time priority (ft/golive.rs says why); going live puts it back.
    pub(super) fn raise_catch_up(&self) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let Some(loss) = lost.as_mut() else { return };
        match Boost::raise(self.vcpu_tid.load(Ordering::SeqCst)) {
            Ok(raised) => loss.raised = Some(raised),
            Err(why) => tracing::info!("the replay catches up at its usual priority: {why}"),
        }
    }

    /// When the stream last ended, and where this follower stood then.
    pub fn loss(&self) -> Option<Loss> {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// It follows its primary again (a resume was accepted, or a state restored): a
    /// replica member restarted on its disk tells its elector now, not before.
    pub fn rejoined(&self) {
        self.alive.store(true, Ordering::SeqCst);
        if let Some(r) = self.rejoining.lock().unwrap_or_else(|p| p.into_inner()).take() {
            r.report();
        }
    }

    /// The connection a new state arrives on, if the primary is sending one.
    pub fn take_restart(&self) -> Option<Channel> {
        self.restart.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The follower restored a state taken at `joined_at` in `epoch`: it holds and has
    /// replayed everything through it, and its primary streams again.
    pub(super) fn restarted_at(&self, joined_at: u64, epoch: u64) {
        self.received_through.store(joined_at, Ordering::SeqCst);
        self.replayed_through.store(joined_at, Ordering::SeqCst);
        self.released.fetch_max(joined_at, Ordering::SeqCst);
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
        // The state is the primary's, in its epoch, through `joined_at`.
        self.earlier_epoch.store(self.epoch.load(Ordering::SeqCst), Ordering::SeqCst);
        self.epoch_from.store(joined_at, Ordering::SeqCst);
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = backlog.as_mut() {
            *b = Backlog::new(b.limit(), joined_at, epoch);
        }
        drop(backlog);
        self.alive.store(true, Ordering::SeqCst);
    }
}
