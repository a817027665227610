//! Holding output until the Output Rule lets it go: the `output` thread.
//!
//! Output produced at exit N leaves the VM only when the policy allows: at
//! once (no group), once the group's Output Rule allows N (a primary; see
//! [`super::output_rule`]), or not at all until go-live (a follower), when
//! everything its primary may not have sent — output after its last released
//! mark — is sent. The guest never waits for this; only its output does.
//!
//! The vCPU queues what it produces in its [`Outbox`]; whoever learns that
//! output may go (an `ack-rx` the moment an ack arrives, or the output thread)
//! drains that queue and releases it, so an ack costs no extra thread hop. The
//! output thread is woken by the vCPU only when output leaves without waiting
//! for an ack (no group, async, no live follower), or when items pile up; it
//! also looks every [`SAFETY_NET`], so output is never stranded behind a change
//! of the Output Rule's inputs that nobody announced. The released position is
//! published in the group, and each follower's stream carries it as a
//! released mark.
use super::follower::Upstream;
use super::group::Group;
use crate::devices::bus::Output;
use crate::host::nudge::{send_spread, FlowTracker, STEPS_PER_FLOW};
use crate::host::status::Stats;
use crate::host::tap::Tap;
use crate::vm::driver::OutputItem;
use crate::vm::outbox::OutboxReceiver;
use crossbeam_channel::{select, Receiver};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A backup holds at most this many outputs for re-sending at go-live.
const MAX_HELD_ON_BACKUP: usize = 1 << 16;
/// The output thread looks at the queue at least this often, doorbell or not: what an
/// ack or a dropped follower releases is released by `ack-rx` at once, and this bounds
/// the wait of output behind any other change to the Output Rule's inputs.
pub const SAFETY_NET: Duration = Duration::from_millis(10);

/// When output may leave.
pub enum Policy {
    /// At once: no group.
    Immediate,
    /// When the group's Output Rule allows.
    Primary(Arc<Group>),
    /// Not until go-live; what the primary marked released is dropped.
    Follower(Arc<Upstream>),
}

/// What the go-live path tells the output thread.
pub enum Control {
    /// This follower is live: send what the primary may not have, then hold output for
    /// `group`'s followers (none yet: it leaves at once).
    GoLive { tap: Option<Tap>, released: u64, group: Arc<Group> },
}

/// How long each output was held, in microseconds.
#[derive(Debug, Default)]
pub struct HeldTimes {
    samples: Vec<u32>,
}

impl HeldTimes {
    const MAX_SAMPLES: usize = 1 << 20;

    fn add(&mut self, held: Duration) {
        if self.samples.len() < Self::MAX_SAMPLES {
            self.samples.push(held.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// (count, p50, p90, p99, max) in microseconds.
    pub fn summary(&self) -> Option<(usize, u32, u32, u32, u32)> {
        let mut s = self.samples.clone();
        if s.is_empty() {
            return None;
        }
        s.sort_unstable();
        let pct = |p: usize| s[(s.len() - 1) * p / 100];
        Some((s.len(), pct(50), pct(90), pct(99), s[s.len() - 1]))
    }
}

pub struct Releaser {
    stats: Arc<Stats>,
    /// What the vCPU queued and nobody has taken yet (set once the output thread starts).
    inbox: Option<OutboxReceiver>,
    policy: Policy,
    tap: Option<Tap>,
    queue: VecDeque<OutputItem>,
    held_times: HeldTimes,
    last_released: u64,
    /// A follower's view of the TCP flows in its guest's output, for the nudges at go-live.
    flows: FlowTracker,
    /// The `output` thread's id (0 until it runs): a follower going live raises it.
    output_tid: i32,
}

/// The releaser, shared between the output thread and `ack-rx`.
#[derive(Clone)]
pub struct SharedReleaser(Arc<Mutex<Releaser>>);

impl SharedReleaser {
    pub fn new(policy: Policy, tap: Option<Tap>, stats: Arc<Stats>) -> SharedReleaser {
        let r = Releaser {
            stats,
            inbox: None,
            policy,
            tap,
            queue: VecDeque::new(),
            held_times: HeldTimes::default(),
            last_released: 0,
            flows: FlowTracker::default(),
            output_tid: 0,
        };
        SharedReleaser(Arc::new(Mutex::new(r)))
    }

    fn lock(&self) -> MutexGuard<'_, Releaser> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acks moved, or the backup was lost: release what may go now.
    pub fn poke(&self) {
        self.lock().release_ready();
    }

    pub fn set_tap(&self, tap: Option<Tap>) {
        self.lock().tap = tap;
    }

    /// Swaps the policy once the pairing exists (the wire is made after the releaser).
    pub fn set_policy(&self, policy: Policy) {
        let mut r = self.lock();
        r.policy = policy;
        r.release_ready();
    }

    /// The `output` thread's id, once it runs (0 before).
    pub fn output_tid(&self) -> i32 {
        self.lock().output_tid
    }

    pub fn held_summary(&self) -> Option<(usize, u32, u32, u32, u32)> {
        self.lock().held_times.summary()
    }

    /// Starts the `output` thread over the vCPU's outbox.
    pub fn spawn(
        &self,
        inbox: OutboxReceiver,
        control: Receiver<Control>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let doorbell = inbox.doorbell.clone();
        {
            let mut r = self.lock();
            r.inbox = Some(inbox);
            r.release_ready();
        }
        let me = self.clone();
        std::thread::Builder::new().name("output".into()).spawn(move || me.run(&doorbell, &control))
    }

    fn run(&self, doorbell: &Receiver<()>, control: &Receiver<Control>) {
        self.lock().output_tid = nix::unistd::gettid().as_raw();
        // Once nobody can send a control message (a primary, or a follower once live), a
        // closed channel is always ready: selecting on it would spin this thread on a core.
        let never = crossbeam_channel::never();
        let mut control = control;
        loop {
            select! {
                recv(doorbell) -> ring => match ring {
                    Ok(()) => self.lock().release_ready(),
                    // The vCPU is gone: nothing more will be queued.
                    Err(_) => break,
                },
                recv(control) -> c => match c {
                    Ok(Control::GoLive { tap, released, group }) => self.lock().go_live(tap, released, group),
                    Err(_) => control = &never,
                },
                default(SAFETY_NET) => self.lock().release_ready(),
            }
        }
        // The VM has stopped: whatever it said last still goes out, unless this is a backup
        // (its primary sent it) or a primary that lost the arbiter (the live backup owns
        // the conversation now, and never produced these outputs).
        let mut r = self.lock();
        r.take_inbox();
        let halted = matches!(&r.policy, Policy::Primary(group) if group.halted());
        if !halted && !matches!(r.policy, Policy::Follower(_)) {
            while let Some(h) = r.queue.pop_front() {
                r.emit(h);
            }
        }
    }
}

impl Releaser {
    /// Moves what the vCPU queued to the held queue, in order.
    fn take_inbox(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        let follower = matches!(self.policy, Policy::Follower(_));
        let now = Instant::now();
        for item in inbox.drain() {
            if let (true, Output::Frames(frames)) = (follower, &item.output) {
                frames.iter().for_each(|f| self.flows.observe(f, now));
            }
            self.queue.push_back(item);
        }
    }

    /// Releases what the Output Rule allows, and tells the vCPU whether to ring for its
    /// next outputs: only when they will leave without an ack to release them.
    fn release_ready(&mut self) {
        loop {
            self.take_inbox();
            let wake = self.release_queued();
            let look_again = self.inbox.as_ref().is_some_and(|inbox| inbox.set_wake(wake));
            if !look_again {
                break;
            }
        }
        let waiting = self.inbox.as_ref().map_or(0, OutboxReceiver::len);
        self.stats.held_outputs.store((self.queue.len() + waiting) as u64, Ordering::Relaxed);
    }

    /// Releases from the held queue; returns whether output would leave at once (no ack
    /// to wait for).
    fn release_queued(&mut self) -> bool {
        let limit = match &self.policy {
            Policy::Immediate => u64::MAX,
            Policy::Primary(group) => group.release_limit(),
            Policy::Follower(upstream) => {
                let r = upstream.released.load(Ordering::SeqCst);
                while self.queue.front().is_some_and(|h| h.exit_index <= r) || self.queue.len() > MAX_HELD_ON_BACKUP {
                    self.queue.pop_front();
                }
                return false;
            }
        };
        let mut released_any = false;
        while self.queue.front().is_some_and(|h| h.exit_index <= limit) {
            let Some(h) = self.queue.pop_front() else { break };
            self.last_released = h.exit_index;
            self.emit(h);
            released_any = true;
        }
        if let (true, Policy::Primary(group)) = (released_any, &self.policy) {
            group.note_released(self.last_released);
        }
        limit == u64::MAX
    }

    fn go_live(&mut self, tap: Option<Tap>, released: u64, group: Arc<Group>) {
        self.tap = tap;
        self.take_inbox();
        self.queue.retain(|h| h.exit_index > released);
        tracing::info!(resent = self.queue.len(), released, "live: re-sending output the primary may not have sent");
        // What was held is released at once (this VM has no follower yet), and output
        // waits for followers that attach from now on.
        self.policy = Policy::Primary(group);
        self.release_ready();
        // Clients whose requests died with the old primary and that backed off their
        // retransmission timer resend sooner (host/nudge.rs says why this is safe).
        let nudges = self.flows.nudges(Instant::now());
        if let (Some(tap), false) = (&self.tap, nudges.is_empty()) {
            let flows = nudges.len() / STEPS_PER_FLOW;
            match send_spread(tap.clone(), nudges) {
                Ok(()) => tracing::info!(flows, "live: told recent clients the outage is over"),
                Err(e) => tracing::warn!("cannot tell clients the outage is over: {e}"),
            }
        }
    }

    fn emit(&mut self, h: OutputItem) {
        let held = h.produced.elapsed();
        self.held_times.add(held);
        self.stats.note_held(held);
        match h.output {
            Output::Console(bytes) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&bytes).and_then(|()| out.flush());
            }
            Output::Frames(frames) => {
                if let Some(tap) = &self.tap {
                    frames.iter().for_each(|f| tap.send(f));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::status::Role;
    use crate::vm::outbox::outbox;
    use crossbeam_channel::unbounded;

    /// CPU time the thread `tid` of this process has used, from /proc (10 ms ticks).
    fn thread_cpu(tid: i32) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }

    fn gated_primary() -> (Arc<Group>, Arc<crate::ft::group::Follower>) {
        use crate::ft::group::GroupConfig;
        use crate::ft::output_rule::ReplicationMode;
        let config = GroupConfig {
            mode: ReplicationMode::Sync,
            max_followers: 4,
            arbiter: None,
            scope: Default::default(),
            election: None,
        };
        let (events, _) = unbounded();
        let group =
            Group::new(config, Stats::new(Role::Primary), Arc::new(std::sync::atomic::AtomicU64::new(0)), events);
        let follower = group.add_follower("test", 0);
        (group, follower)
    }

    fn console(exit_index: u64) -> OutputItem {
        OutputItem { exit_index, output: Output::Console(Vec::new()), produced: std::time::Instant::now() }
    }

    fn released(releaser: &SharedReleaser) -> usize {
        releaser.held_summary().map_or(0, |s| s.0)
    }

    #[test]
    fn output_waiting_for_an_ack_does_not_ring_and_the_ack_releases_it() {
        let (group, follower) = gated_primary();
        let releaser = SharedReleaser::new(Policy::Primary(group.clone()), None, Stats::new(Role::Primary));
        let (vcpu, inbox) = outbox();
        let doorbell = inbox.doorbell.clone();
        releaser.lock().inbox = Some(inbox);
        releaser.poke();
        vcpu.send(console(5));
        assert!(doorbell.try_recv().is_err(), "output that waits for an ack woke the output thread");
        releaser.poke();
        assert_eq!(released(&releaser), 0, "released before the follower acknowledged it");
        group.record_ack(&follower, 5, 5);
        releaser.poke();
        assert_eq!(released(&releaser), 1, "the ack's poke did not release it");
    }

    #[test]
    fn output_behind_an_unannounced_change_leaves_within_the_safety_net() {
        let (group, follower) = gated_primary();
        let releaser = SharedReleaser::new(Policy::Primary(group.clone()), None, Stats::new(Role::Primary));
        let (vcpu, inbox) = outbox();
        let (_control_tx, control) = unbounded::<Control>();
        let thread = releaser.spawn(inbox, control).expect("output thread");
        vcpu.send(console(9));
        // The follower acknowledges, and nobody pokes: only the output thread's look can
        // release it.
        group.record_ack(&follower, 9, 9);
        let start = std::time::Instant::now();
        while released(&releaser) == 0 && start.elapsed() < SAFETY_NET * 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(released(&releaser), 1, "still held {:?} after the ack", start.elapsed());
        drop(vcpu);
        thread.join().expect("output thread");
    }

    #[test]
    fn an_idle_output_thread_sleeps_once_its_control_channel_is_closed() {
        // A regression: with every control sender gone (a primary never goes live), the
        // thread spun on the closed channel and took a whole core (490 ms of 500).
        let releaser = SharedReleaser::new(Policy::Immediate, None, Stats::new(Role::Primary));
        let (items_tx, inbox) = outbox();
        let (control_tx, control) = unbounded::<Control>();
        drop(control_tx);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let me = releaser.clone();
        let doorbell = inbox.doorbell.clone();
        releaser.lock().inbox = Some(inbox);
        let handle = std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            me.run(&doorbell, &control);
        });
        let tid = tid_rx.recv().expect("tid");
        std::thread::sleep(Duration::from_millis(500));
        let used = thread_cpu(tid);
        drop(items_tx);
        handle.join().expect("output thread");
        assert!(used < Duration::from_millis(100), "the idle output thread used {used:?} of CPU in 500 ms");
    }
}
