//! Setting up one side of a primary/backup pair before the guest boots.
use crate::launch::LaunchError;
use crate::live::{LiveDriver, VmEvent};
use crate::machine::Machine;
use crate::release::{Control, Policy, SharedReleaser};
use crate::replay_driver::{ReplayDriver, Takeover};
use crate::replication::{backup, handshake, primary, PairState, ReplicationError, Timing};
use crate::runner::{Driver, RunError};
use crate::status::Stats;
use crate::tap::{gratuitous_arp, Tap};
use crossbeam_channel::{Receiver, Sender};
use guest_abi::NetConfig;
use logging_channel::channel::{hello, Role};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The replication epoch a fresh pair starts in; every go-live moves to the next.
pub const FIRST_EPOCH: u64 = 1;

/// What a paired VM needs besides its driver.
pub struct Paired {
    pub driver: Driver,
    pub state: Arc<PairState>,
}

/// Waits for a backup on `listen`, pairs, and returns the primary's driver.
pub fn primary(
    machine: &Machine,
    listen: &str,
    timing: Timing,
    events: Receiver<VmEvent>,
    releaser: &SharedReleaser,
    stats: Arc<Stats>,
) -> Result<Paired, LaunchError> {
    let listener = handshake::listen(listen)?;
    tracing::info!(%listen, "primary waiting for a backup");
    let local = hello(Role::Primary, &machine.header, FIRST_EPOCH);
    let stream = handshake::accept_backup(&listener, &local)?;
    let state = PairState::new_protected();
    machine.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
    if let Ok(peer) = stream.peer_addr() {
        stats.set_peer(&peer.to_string());
    }
    stats.epoch.store(FIRST_EPOCH, Ordering::SeqCst);
    stats.set_pair(state.clone());
    let poke = releaser.clone();
    let shared = primary::Shared {
        state: state.clone(),
        repl_status: machine.repl_status.clone(),
        stats,
        on_change: Arc::new(move || poke.poke()),
    };
    let (sink, wire) = primary::start(stream, timing, shared)?;
    releaser.set_policy(Policy::Primary { state: state.clone(), wire });
    let driver = Driver::Live(LiveDriver::new(machine.header.tick_hz, Some(Box::new(sink)), events));
    Ok(Paired { driver, state })
}

/// Everything a backup needs to go live, gathered before boot.
pub struct TakeoverPlan {
    pub tap: Option<String>,
    pub net: NetConfig,
    pub tick_hz: u32,
    pub events: Receiver<VmEvent>,
    pub events_tx: Sender<VmEvent>,
    pub control: Sender<Control>,
}

/// Connects to the primary, pairs, and returns the backup's replaying driver.
pub fn backup(
    machine: &Machine,
    primary_addr: &str,
    timing: Timing,
    connect_within: Duration,
    plan: TakeoverPlan,
    stats: Arc<Stats>,
) -> Result<Paired, LaunchError> {
    let local = hello(Role::Backup, &machine.header, FIRST_EPOCH);
    let stream = handshake::connect_primary(primary_addr, &local, connect_within)?;
    tracing::info!(primary = %primary_addr, "backup paired; replaying the primary's log");
    let state = PairState::new_protected();
    machine.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
    stats.set_peer(primary_addr);
    stats.epoch.store(FIRST_EPOCH, Ordering::SeqCst);
    stats.set_pair(state.clone());
    let source = backup::start(stream, timing, state.clone())?;
    let takeover = takeover(plan, state.clone(), machine.repl_status.clone());
    let driver = Driver::Replay(ReplayDriver::with_takeover(Box::new(source), takeover, state.clone()));
    Ok(Paired { driver, state })
}

fn takeover(plan: TakeoverPlan, state: Arc<PairState>, repl_status: Arc<std::sync::atomic::AtomicU64>) -> Takeover {
    Box::new(move |last_replayed, released| {
        if state.corrupt.load(Ordering::SeqCst) {
            return Err(RunError::StandDown("the primary's log stream was corrupt; not going live on it".into()));
        }
        tracing::warn!(exit = last_replayed + 1, released, "GOING LIVE: this backup is now the primary (unprotected)");
        repl_status.store(0, Ordering::SeqCst);
        let tap = match plan.tap.as_deref().map(Tap::open).transpose() {
            Ok(t) => t,
            Err(e) => return Err(RunError::StandDown(format!("cannot open the NIC to go live: {e}"))),
        };
        if let Some(tap) = &tap {
            if let Err(e) = tap.spawn_reader(plan.events_tx.clone(), VmEvent::Frame) {
                return Err(RunError::StandDown(format!("cannot start the NIC reader: {e}")));
            }
            if plan.net.present != 0 {
                announce(tap.clone(), plan.net);
            }
        }
        let _ = plan.control.send(Control::GoLive { tap, released });
        Ok(LiveDriver::new(plan.tick_hz, None, plan.events))
    })
}

impl From<ReplicationError> for LaunchError {
    fn from(e: ReplicationError) -> Self {
        LaunchError::Replication(e)
    }
}

/// Sends gratuitous ARPs over the next half second. A TAP port that has just come up
/// may not forward yet (the bridge moves it to forwarding asynchronously), so one
/// announcement can be lost; several, spread out, reach the switch.
fn announce(tap: Tap, net: NetConfig) {
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
