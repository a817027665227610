//! Where the Output Rule lives.
//!
//! Output produced at exit N leaves the VM only when the policy allows:
//! at once (no backup), once the backup has acked `received_through >= N`
//! (primary), or not at all until go-live (backup), when everything the
//! primary may not have sent — output after its last released mark — is sent.
//! The guest never waits for this; only its output does.
//!
//! The `output` thread queues what the vCPU produces; whoever learns that
//! output may go (the output thread, or `ack-rx` the moment an ack arrives)
//! releases it, so an ack costs no extra thread hop.
use crate::devices::bus::Output;
use crate::ft::stream::LogWire;
use crate::ft::PairState;
use crate::host::status::Stats;
use crate::host::tap::Tap;
use crate::vm::runner::OutputItem;
use crossbeam_channel::{select, Receiver};
use logging_channel::Record;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A backup holds at most this many outputs for re-sending at go-live.
const MAX_HELD_ON_BACKUP: usize = 1 << 16;

pub enum Policy {
    Immediate,
    /// Hold until acked; released marks go to the backup on `wire`.
    Primary {
        state: Arc<PairState>,
        wire: LogWire,
    },
    /// Hold everything until go-live, dropping what the primary marked released.
    Backup {
        state: Arc<PairState>,
    },
}

pub enum Control {
    /// This backup is live: send what the primary may not have, then pass output through.
    GoLive { tap: Option<Tap>, released: u64 },
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
    policy: Policy,
    tap: Option<Tap>,
    queue: VecDeque<OutputItem>,
    held_times: HeldTimes,
    last_released: u64,
}

/// The releaser, shared between the output thread and `ack-rx`.
#[derive(Clone)]
pub struct SharedReleaser(Arc<Mutex<Releaser>>);

impl SharedReleaser {
    pub fn new(policy: Policy, tap: Option<Tap>, stats: Arc<Stats>) -> SharedReleaser {
        let r =
            Releaser { stats, policy, tap, queue: VecDeque::new(), held_times: HeldTimes::default(), last_released: 0 };
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
        self.lock().policy = policy;
    }

    pub fn held_summary(&self) -> Option<(usize, u32, u32, u32, u32)> {
        self.lock().held_times.summary()
    }

    /// Starts the `output` thread, which queues what the vCPU produces.
    pub fn spawn(
        &self,
        items: Receiver<OutputItem>,
        control: Receiver<Control>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new().name("output".into()).spawn(move || me.run(&items, &control))
    }

    fn run(&self, items: &Receiver<OutputItem>, control: &Receiver<Control>) {
        loop {
            select! {
                recv(items) -> item => match item {
                    Ok(item) => {
                        let mut r = self.lock();
                        r.queue.push_back(item);
                        // Take whatever else is already queued under the same lock.
                        r.queue.extend(items.try_iter());
                        r.release_ready();
                    }
                    Err(_) => break,
                },
                recv(control) -> c => if let Ok(Control::GoLive { tap, released }) = c {
                    self.lock().go_live(tap, released);
                },
            }
        }
        // The VM has stopped: whatever it said last still goes out, unless this is a backup
        // (its primary sent it) or a primary that lost the arbiter (the live backup owns
        // the conversation now, and never produced these outputs).
        let mut r = self.lock();
        let halted = matches!(&r.policy, Policy::Primary { state, .. } if state.halted.load(Ordering::SeqCst));
        if !halted && !matches!(r.policy, Policy::Backup { .. }) {
            while let Some(h) = r.queue.pop_front() {
                r.emit(h);
            }
        }
    }
}

impl Releaser {
    fn release_ready(&mut self) {
        let limit = match &self.policy {
            Policy::Immediate => u64::MAX,
            Policy::Primary { state, .. } if !state.protected.load(Ordering::SeqCst) => u64::MAX,
            Policy::Primary { state, .. } => state.acked_through.load(Ordering::SeqCst),
            Policy::Backup { state } => {
                let r = state.released.load(Ordering::SeqCst);
                while self.queue.front().is_some_and(|h| h.exit_index <= r) || self.queue.len() > MAX_HELD_ON_BACKUP {
                    self.queue.pop_front();
                }
                self.stats.held_outputs.store(self.queue.len() as u64, Ordering::Relaxed);
                return;
            }
        };
        let mut released_any = false;
        while self.queue.front().is_some_and(|h| h.exit_index <= limit) {
            let Some(h) = self.queue.pop_front() else { break };
            self.last_released = h.exit_index;
            self.emit(h);
            released_any = true;
        }
        self.stats.held_outputs.store(self.queue.len() as u64, Ordering::Relaxed);
        if let (true, Policy::Primary { state, wire }) = (released_any, &self.policy) {
            if state.protected.load(Ordering::SeqCst) {
                wire.append(&Record::Released { exit_index: self.last_released }, false);
            }
        }
    }

    fn go_live(&mut self, tap: Option<Tap>, released: u64) {
        self.tap = tap;
        self.queue.retain(|h| h.exit_index > released);
        tracing::info!(resent = self.queue.len(), released, "live: re-sending output the primary may not have sent");
        self.policy = Policy::Immediate;
        self.release_ready();
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
