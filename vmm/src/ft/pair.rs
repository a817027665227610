//! Setting up one side of a primary/backup pair before the guest boots.
//!
//! The primary waits for its first backup, sends it the boot state (so the
//! backup verifies it starts from the very same state) and keeps listening:
//! when that backup is lost, a new one can join the running VM. The backup
//! receives the state, replays the log, and if the primary dies goes live —
//! and, given `--listen`, takes on backups of its own.
use crate::ft::attach::{self, Joiner};
use crate::ft::release::{Control, Policy, SharedReleaser};
use crate::ft::{follower, handshake, stream, PairState, ReplicationError, Timing};
use crate::host::arbiter::Arbiter;
use crate::host::status::Stats;
use crate::host::tap::{gratuitous_arp, Tap};
use crate::launch::LaunchError;
use crate::vm::live::{LiveDriver, VmEvent};
use crate::vm::machine::Machine;
use crate::vm::replay::{ReplayDriver, Takeover};
use crate::vm::runner::{Driver, RunError};
use crate::vm::snapshot::{self, SnapshotError};
use crossbeam_channel::{Receiver, Sender};
use guest_abi::NetConfig;
use logging_channel::channel::{hello, Role};
use logging_channel::LogHeader;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The replication epoch a fresh pair starts in; every go-live and every join moves on.
pub const FIRST_EPOCH: u64 = 1;

/// What a paired VM needs besides its machine.
pub struct Paired {
    pub driver: Driver,
    pub state: Arc<PairState>,
    /// The exit the VM's state was taken at: the first exit it runs is the next one.
    pub first_index: u64,
}

/// What both sides hand to the pairing code.
pub struct Services {
    pub releaser: SharedReleaser,
    pub stats: Arc<Stats>,
    pub events: Receiver<VmEvent>,
    pub events_tx: Sender<VmEvent>,
    pub timing: Timing,
    pub arbiter: Option<Arc<dyn Arbiter>>,
}

impl Services {
    fn joiner(self, repl_status: Arc<AtomicU64>) -> (Joiner, Receiver<VmEvent>) {
        let joiner = Joiner {
            releaser: self.releaser,
            repl_status,
            stats: self.stats,
            timing: self.timing,
            arbiter: self.arbiter,
            events: self.events_tx,
        };
        (joiner, self.events)
    }
}

/// Waits for a backup on `listen`, pairs, sends it the boot state, and keeps
/// listening for later backups.
pub fn primary(machine: &mut Machine, listen: &str, s: Services) -> Result<Paired, LaunchError> {
    refuse_if_stale(s.arbiter.as_deref())?;
    let listener = handshake::listen(listen)?;
    tracing::info!(%listen, "primary waiting for a backup");
    let header = machine.header;
    let local = || hello(Role::Primary, &header, FIRST_EPOCH);
    let mut stream = handshake::accept_backup(&listener, &local, &|| false)?;
    snapshot::send(&mut stream, &mut machine.vcpu, &machine.mem, &machine.buses.mmio, 0, FIRST_EPOCH)
        .map_err(LaunchError::Snapshot)?;
    let state = PairState::new_protected(0);
    machine.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
    if let Ok(peer) = stream.peer_addr() {
        s.stats.set_peer(&peer.to_string());
    }
    s.stats.epoch.store(FIRST_EPOCH, Ordering::SeqCst);
    s.stats.set_pair(state.clone());
    let poke = s.releaser.clone();
    let shared = stream::Shared {
        state: state.clone(),
        repl_status: machine.repl_status.clone(),
        stats: s.stats.clone(),
        on_change: Arc::new(move || poke.poke()),
        arbiter: s.arbiter.clone(),
        events: s.events_tx.clone(),
    };
    let (sink, wire) = stream::start(stream, s.timing, 0, shared)?;
    s.releaser.set_policy(Policy::Primary { state: state.clone(), wire });
    attach::spawn_listener(listener, header, s.stats.clone(), s.events_tx.clone())
        .map_err(|e| LaunchError::Thread("join-listen", e))?;
    let (joiner, events) = s.joiner(machine.repl_status.clone());
    let live = LiveDriver::new(header.tick_hz, Some(Box::new(sink)), events).with_joiner(joiner);
    Ok(Paired { driver: Driver::Live(live), state, first_index: 0 })
}

/// Everything a backup needs to go live, gathered before boot.
pub struct TakeoverPlan {
    pub tap: Option<String>,
    pub net: NetConfig,
    /// Where to take on backups of its own once live.
    pub listen: Option<String>,
    pub control: Sender<Control>,
}

/// Connects to the primary, pairs, receives its state, and returns the replaying driver.
pub fn backup(
    machine: &mut Machine,
    primary_addr: &str,
    connect_within: Duration,
    plan: TakeoverPlan,
    s: Services,
) -> Result<Paired, LaunchError> {
    let local = hello(Role::Backup, &machine.header, 0);
    let mut stream = handshake::connect_primary(primary_addr, &local, connect_within)?;
    let (first_index, epoch) = snapshot::receive(&mut stream, &mut machine.vcpu, &machine.mem, &mut machine.buses.mmio)
        .map_err(LaunchError::Snapshot)?;
    tracing::info!(primary = %primary_addr, exit = first_index, epoch, "backup paired; replaying the primary's log");
    let state = PairState::new_protected(first_index);
    machine.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
    s.stats.set_peer(primary_addr);
    s.stats.epoch.store(epoch, Ordering::SeqCst);
    s.stats.set_pair(state.clone());
    s.releaser.set_policy(Policy::Backup { state: state.clone() });
    let source = follower::start(stream, s.timing, state.clone(), s.stats.clone())?;
    let takeover = takeover(plan, state.clone(), machine.repl_status.clone(), machine.header, s);
    let driver = Driver::Replay(ReplayDriver::with_takeover(Box::new(source), takeover, state.clone()));
    Ok(Paired { driver, state, first_index })
}

fn takeover(
    plan: TakeoverPlan,
    state: Arc<PairState>,
    repl_status: Arc<AtomicU64>,
    header: LogHeader,
    s: Services,
) -> Takeover {
    Box::new(move |last_replayed| {
        let released = state.released.load(Ordering::SeqCst);
        if state.corrupt.load(Ordering::SeqCst) {
            return Err(RunError::StandDown("the primary's log stream was corrupt; not going live on it".into()));
        }
        if state.stalled.load(Ordering::SeqCst) {
            return Err(RunError::StandDown(
                "this backup's replay stalled (the watchdog tripped), so the primary may have moved on without it; \
                 not going live"
                    .into(),
            ));
        }
        if let Some(arbiter) = &s.arbiter {
            let epoch = s.stats.epoch.load(Ordering::SeqCst);
            match arbiter.claim(epoch, "backup") {
                Ok(true) => tracing::info!(epoch, arbiter = %arbiter.describe(), "won the arbiter"),
                Ok(false) => {
                    return Err(RunError::StandDown(format!(
                        "the primary won the arbiter for epoch {epoch}: it is alive and serving, this backup halts"
                    )))
                }
                Err(e) => return Err(RunError::StandDown(format!("cannot reach the arbiter ({e}); not going live"))),
            }
        }
        tracing::warn!(exit = last_replayed + 1, released, "GOING LIVE: this backup is now the primary (unprotected)");
        repl_status.store(0, Ordering::SeqCst);
        let stand_down = |what: String| RunError::StandDown(what);
        let tap = plan
            .tap
            .as_deref()
            .map(Tap::open)
            .transpose()
            .map_err(|e| stand_down(format!("cannot open the NIC: {e}")))?;
        if let Some(tap) = &tap {
            tap.spawn_reader(s.events_tx.clone(), VmEvent::Frame)
                .map_err(|e| stand_down(format!("cannot start the NIC reader: {e}")))?;
            if plan.net.present != 0 {
                announce(tap.clone(), plan.net);
            }
        }
        let _ = plan.control.send(Control::GoLive { tap, released });
        let listen = plan.listen.as_deref().map(handshake::listen).transpose();
        let listener = listen.map_err(|e| stand_down(format!("cannot take on backups: {e}")))?;
        if let Some(listener) = listener {
            attach::spawn_listener(listener, header, s.stats.clone(), s.events_tx.clone())
                .map_err(|e| stand_down(format!("cannot start join-listen: {e}")))?;
            tracing::info!(listen = ?plan.listen, "live: new backups may join here");
            let (joiner, events) = s.joiner(repl_status);
            return Ok(LiveDriver::new(header.tick_hz, None, events).with_joiner(joiner));
        }
        Ok(LiveDriver::new(header.tick_hz, None, s.events))
    })
}

/// Sends gratuitous ARPs over the next half second. A TAP port that has just come up
/// may not forward yet (the bridge moves it to forwarding asynchronously), so one
/// announcement can be lost; several, spread out, reach the switch.
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
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot announce the guest's address after going live: {e}");
    }
}

/// A primary must not start in an epoch that another node already went on alone in:
/// it would be a second primary for the same service.
fn refuse_if_stale(arbiter: Option<&dyn Arbiter>) -> Result<(), LaunchError> {
    let Some(arbiter) = arbiter else {
        tracing::warn!(
            "no --arbiter: if the link between primary and backup is cut, both may go on alone (split brain)"
        );
        return Ok(());
    };
    match arbiter.latest_claim() {
        Ok(Some(epoch)) if epoch >= FIRST_EPOCH => Err(LaunchError::Stale(format!(
            "the arbiter ({}) records that a node went on alone in epoch {epoch}: this primary's state is stale \
             and it must not serve. Join the current primary as a backup instead, or clear the arbiter for a new deployment.",
            arbiter.describe()
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(LaunchError::Stale(format!("cannot consult the arbiter: {e}"))),
    }
}

impl From<ReplicationError> for LaunchError {
    fn from(e: ReplicationError) -> Self {
        LaunchError::Replication(e)
    }
}

impl From<SnapshotError> for RunError {
    fn from(e: SnapshotError) -> Self {
        RunError::StandDown(format!("state transfer failed: {e}"))
    }
}
