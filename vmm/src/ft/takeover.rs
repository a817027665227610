//! A follower going live: its primary's log has ended and everything in it is
//! replayed. [`Takeover`] holds what it needs, gathered before boot, and
//! [`Takeover::go_live`] is the whole path:
//!
//! ```text
//!   corrupt stream or stalled replay?  --> stand down (exit 7), never live
//!   group.take_over(): win the arbiter for the epoch  --lost--> stand down
//!   GOING LIVE: open the TAP (mirrored input: inject what it kept), gratuitous
//!               ARPs, re-send output after the primary's last released mark,
//!               take followers (given --listen)
//! ```
use super::attach::{self, Attacher};
use super::backlog::Backlog;
use super::follower::{Reconnect, Upstream};
use super::golive::{Boost, GoLiveSteps, Step};
use super::group::Group;
use super::handshake;
use super::release::{Control, SharedReleaser};
use super::stream::{Fanout, GroupSink};
use super::Timing;
use crate::host::mirror::Mirror;
use crate::host::sched::CpuTimes;
use crate::host::status::{Role, Stats};
use crate::host::tap::{gratuitous_arp, Tap};
use crate::vm::driver::RunError;
use crate::vm::live::{LiveDriver, VmEvent};
use crate::vm::recorder::LogSink;
use crossbeam_channel::{Receiver, Sender};
use guest_abi::NetConfig;
use logging_channel::LogHeader;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A follower's TAP, open from the start, and the frames it keeps from it until
/// go-live (`--mirrored-input`; host/mirror.rs).
#[derive(Clone)]
pub struct MirroredTap {
    pub tap: Tap,
    pub mirror: Arc<Mirror<VmEvent>>,
}

/// Everything a follower needs to go live.
pub struct Takeover {
    /// The TAP device the live VM's NIC uses (opened only now, unless mirrored).
    pub tap: Option<String>,
    /// With mirrored input: the TAP, already open, and what it received.
    pub mirrored: Option<MirroredTap>,
    pub net: NetConfig,
    /// Where to take followers of its own once live.
    pub listen: Option<String>,
    pub header: LogHeader,
    pub timing: Timing,
    pub upstream: Arc<Upstream>,
    /// How `log-rx` reconnects when the connection breaks, if it does.
    pub reconnect: Option<Reconnect>,
    pub group: Arc<Group>,
    pub releaser: SharedReleaser,
    pub control: Sender<Control>,
    pub stats: Arc<Stats>,
    /// The live VM's events (frames, stop, attach), and where they are sent.
    pub events: Receiver<VmEvent>,
    pub events_tx: Sender<VmEvent>,
    /// How its followers' connections are locked.
    pub security: crate::host::tls::Security,
}

/// A follower that went live: its driver, and how followers attach to it.
pub struct Live {
    pub driver: LiveDriver,
    pub attacher: Option<Attacher>,
}

impl Takeover {
    /// Goes live after `last_replayed`, or says why this follower must stand down.
    pub fn go_live(self, last_replayed: u64) -> Result<Live, RunError> {
        let tid = self.upstream.vcpu_tid.load(Ordering::SeqCst);
        let loss = self.upstream.loss();
        let mut steps = GoLiveSteps::caught_up(loss, Instant::now(), CpuTimes::of_thread(tid));
        // However this ends, the raised threads go back to their scheduling soon after.
        let mut back = PutBack([loss.and_then(|l| l.raised), None]);
        let stand_down = |what: String| RunError::StandDown(what);
        if self.upstream.corrupt.load(Ordering::SeqCst) {
            return Err(stand_down("the primary's log stream was corrupt; not going live on it".into()));
        }
        if self.upstream.stalled.load(Ordering::SeqCst) {
            return Err(stand_down(
                "this follower's replay stalled (the watchdog tripped), so the primary may have moved on without \
                 it; not going live"
                    .into(),
            ));
        }
        if !self.upstream.eligible.load(Ordering::SeqCst) && self.group.elector().is_none() {
            return Err(stand_down(
                "this follower was asynchronous (semi-sync): it may lack writes a client was told of, so the \
                 synchronous follower takes over, not this one"
                    .into(),
            ));
        }
        let released = self.upstream.released.load(Ordering::SeqCst);
        self.group.take_over().map_err(|why| stand_down(format!("{why}: this follower halts")))?;
        steps.done(Step::TakeOver, Instant::now());
        // Live: the output thread sends what the guest answers first (the re-sent output,
        // the replies to mirrored input), so it gets the CPU at once too.
        back.0[1] = Boost::raise(self.releaser.output_tid())
            .map_err(|why| tracing::debug!("the output thread keeps its priority: {why}"))
            .ok();
        tracing::warn!(
            exit = last_replayed + 1,
            released,
            epoch = self.group.epoch(),
            behind = steps.behind(),
            "GOING LIVE: this follower is now the primary (unprotected)"
        );
        self.stats.set_role(Role::Live);
        let tap = match &self.mirrored {
            // Before any frame read from now on: the requests the old primary never logged.
            Some(m) => {
                let injected = m.mirror.go_live(&self.events_tx, VmEvent::Frame);
                steps.done(Step::Mirror, Instant::now());
                tracing::info!(injected, "live: mirrored input the old primary did not log goes to the guest");
                Some(m.tap.clone())
            }
            None => {
                let tap = self
                    .tap
                    .as_deref()
                    .map(Tap::open)
                    .transpose()
                    .map_err(|e| stand_down(format!("cannot open the NIC: {e}")))?;
                if let Some(tap) = &tap {
                    tap.spawn_reader(self.events_tx.clone(), VmEvent::Frame)
                        .map_err(|e| stand_down(format!("cannot start the NIC reader: {e}")))?;
                }
                tap
            }
        };
        if let Some(tap) = &tap {
            announce(tap.clone(), self.net);
            steps.done(Step::Tap, Instant::now());
        }
        tracing::info!(
            behind = steps.behind(),
            replay_ms = steps.replay().map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
            total_ms = (steps.total().as_secs_f64() * 10_000.0).round() / 10.0,
            "go-live steps: {steps}"
        );
        let _ = self.control.send(Control::GoLive { tap, released, group: self.group.clone() });
        let Some(listen) = &self.listen else {
            return Ok(Live { driver: LiveDriver::new(self.header.tick_hz, None, self.events), attacher: None });
        };
        let listener = handshake::listen(listen).map_err(|e| stand_down(format!("cannot take followers: {e}")))?;
        attach::spawn_listener(
            listener,
            self.security.clone(),
            self.header,
            self.group.clone(),
            self.events_tx.clone(),
        )
        .map_err(|e| stand_down(format!("cannot start join-listen: {e}")))?;
        tracing::info!(%listen, "live: new followers may join here");
        // Without a kept log, its own starts after the go-live exit: followers of the old
        // primary cannot resume from it (their positions are before its floor) and get the state.
        // A replica group member that followed kept the log it received: followers of the
        // old primary resume from it, across the epoch change, with no state transfer.
        let kept = self.upstream.backlog.lock().unwrap_or_else(|p| p.into_inner()).take();
        let backlog = match kept {
            Some(mut b) => {
                b.note_epoch(last_replayed + 1, self.group.epoch());
                b
            }
            None => Backlog::new(self.timing.backlog_bytes, last_replayed + 1, self.group.epoch()),
        };
        let fanout = Fanout::new(backlog);
        // A follower with a data directory goes on writing its log and checkpoints, now its own.
        let persist = self.upstream.persist.get().cloned();
        let sink = GroupSink::new(fanout.clone(), self.group.clone(), self.stats.clone())
            .with_disk(persist.as_ref().map(|p| p.disk.clone()));
        let sink: Box<dyn LogSink> = Box::new(sink);
        let attacher = Attacher {
            group: self.group,
            fanout,
            releaser: self.releaser,
            stats: self.stats,
            timing: self.timing,
            tick_hz: self.header.tick_hz,
            events: self.events_tx.clone(),
            precopying: Default::default(),
        };
        let driver = LiveDriver::new(self.header.tick_hz, Some(sink), self.events)
            .with_checkpoints(persist.map(|p| p.checkpoints.clone()));
        Ok(Live { driver, attacher: Some(attacher) })
    }
}

/// How long after going live the vCPU and output threads keep the catch-up's priority:
/// long enough for the guest to answer what was injected at go-live (~1 ms) and the
/// output thread to send it, short enough that a busy guest cannot hog a core.
pub const GO_LIVE_GRACE: Duration = Duration::from_millis(50);

/// Puts the vCPU's and the output thread's scheduling back as it was before the
/// catch-up, [`GO_LIVE_GRACE`] after it is dropped.
struct PutBack([Option<Boost>; 2]);

impl Drop for PutBack {
    fn drop(&mut self) {
        let raised: Vec<Boost> = self.0.iter().flatten().copied().collect();
        if raised.is_empty() {
            return;
        }
        let restore = |raised: &[Boost]| {
            for r in raised {
                if let Err(e) = r.restore() {
                    tracing::warn!(tid = r.tid, "cannot put a thread's scheduling back after going live: {e}");
                }
            }
        };
        let later = raised.clone();
        let spawned = std::thread::Builder::new().name("put-back".into()).spawn(move || {
            std::thread::sleep(GO_LIVE_GRACE);
            restore(&later);
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start put-back ({e}): the go-live threads go back at once");
            restore(&raised);
        }
    }
}

/// How often a live VM's host repeats its announcement after the first burst.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// Sends gratuitous ARPs over the next half second, then once a second for as long as
/// the VM runs. A TAP port that has just come up may not forward yet (the bridge moves
/// it to forwarding asynchronously), so one announcement can be lost; several, spread
/// out, reach the switch. The repeats undo any frame that taught the switch the guest's
/// MAC elsewhere: an old primary that was frozen, woken after it was replaced, may
/// still send output it had held (acknowledged, so the same as this VM re-sent), and
/// without them new clients would be sent to it until the next frame from here.
pub fn announce(tap: Tap, net: NetConfig) {
    if net.present == 0 {
        return;
    }
    let arp = gratuitous_arp(net.mac, net.ip);
    let spawned = std::thread::Builder::new().name("announce".into()).spawn(move || {
        for delay_ms in [0u64, 10, 40, 100, 250] {
            std::thread::sleep(Duration::from_millis(delay_ms));
            tap.send(&arp);
        }
        loop {
            std::thread::sleep(REANNOUNCE_EVERY);
            if !crate::host::tap::speaks_for_guest() {
                return;
            }
            tap.send(&arp);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot announce the guest's address after going live: {e}");
    }
}
