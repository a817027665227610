//! The output thread: where the Output Rule lives.
//!
//! Output produced at exit N leaves the VM only when the policy allows:
//! at once (no backup), once the backup has acked `received_through >= N`
//! (primary), or not at all until go-live (backup), when everything the
//! primary may not have sent — output after its last released mark — is sent.
//! The guest never waits for this thread; only its output does.
use crate::bus::Output;
use crate::replication::PairState;
use crate::runner::OutputItem;
use crate::tap::Tap;
use crossbeam_channel::{select, Receiver, Sender};
use logging_channel::Record;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backup holds at most this many outputs for re-sending at go-live.
const MAX_HELD_ON_BACKUP: usize = 1 << 16;

pub enum Policy {
    Immediate,
    /// Hold until acked; `log` carries released marks to the backup.
    Primary {
        state: Arc<PairState>,
        log: Sender<Record>,
    },
    /// Hold everything until go-live, dropping what the primary marked released.
    Backup {
        state: Arc<PairState>,
    },
}

pub enum Control {
    /// Acks moved or the backup was lost: look again.
    Wake,
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

struct Held {
    item: OutputItem,
    produced: Instant,
}

pub struct Releaser {
    policy: Policy,
    tap: Option<Tap>,
    queue: VecDeque<Held>,
    held_times: Arc<Mutex<HeldTimes>>,
    last_released: u64,
}

pub fn spawn(
    items: Receiver<OutputItem>,
    control: Receiver<Control>,
    policy: Policy,
    tap: Option<Tap>,
    held_times: Arc<Mutex<HeldTimes>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut r = Releaser { policy, tap, queue: VecDeque::new(), held_times, last_released: 0 };
    std::thread::Builder::new().name("output".into()).spawn(move || r.run(&items, &control))
}

impl Releaser {
    fn run(&mut self, items: &Receiver<OutputItem>, control: &Receiver<Control>) {
        loop {
            select! {
                recv(items) -> item => match item {
                    Ok(item) => self.queue.push_back(Held { item, produced: Instant::now() }),
                    Err(_) => break,
                },
                recv(control) -> c => match c {
                    Ok(Control::Wake) => {}
                    Ok(Control::GoLive { tap, released }) => self.go_live(tap, released),
                    Err(_) => {}
                },
            }
            self.release_ready();
        }
        // The VM has stopped: whatever it said last still goes out (or is dropped on a backup).
        if !matches!(self.policy, Policy::Backup { .. }) {
            while let Some(h) = self.queue.pop_front() {
                self.emit(h);
            }
        }
    }

    fn release_ready(&mut self) {
        let limit = match &self.policy {
            Policy::Immediate => u64::MAX,
            Policy::Primary { state, .. } if !state.protected.load(Ordering::SeqCst) => u64::MAX,
            Policy::Primary { state, .. } => state.acked_through.load(Ordering::SeqCst),
            Policy::Backup { state } => {
                let r = state.released.load(Ordering::SeqCst);
                while self.queue.front().is_some_and(|h| h.item.exit_index <= r)
                    || self.queue.len() > MAX_HELD_ON_BACKUP
                {
                    self.queue.pop_front();
                }
                return;
            }
        };
        let mut released_any = false;
        while self.queue.front().is_some_and(|h| h.item.exit_index <= limit) {
            let Some(h) = self.queue.pop_front() else { break };
            self.last_released = h.item.exit_index;
            self.emit(h);
            released_any = true;
        }
        if let (true, Policy::Primary { state, log }) = (released_any, &self.policy) {
            if state.protected.load(Ordering::SeqCst) {
                let _ = log.try_send(Record::Released { exit_index: self.last_released });
            }
        }
    }

    fn go_live(&mut self, tap: Option<Tap>, released: u64) {
        self.tap = tap;
        self.queue.retain(|h| h.item.exit_index > released);
        tracing::info!(resent = self.queue.len(), released, "live: re-sending output the primary may not have sent");
        self.policy = Policy::Immediate;
    }

    fn emit(&mut self, h: Held) {
        if let Ok(mut t) = self.held_times.lock() {
            t.add(h.produced.elapsed());
        }
        match h.item.output {
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
