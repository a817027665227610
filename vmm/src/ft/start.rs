//! Setting up a group member before the guest boots.
//!
//! A primary waits for its first follower and attaches it at exit 0 through
//! the same [`Attacher`] that attaches followers to the running VM later; it
//! keeps listening for more. A follower receives the state, replays the log,
//! and if its primary dies goes live ([`Takeover`]).
use super::attach::{self, Attacher};
use super::backlog::Backlog;
use super::follower::{self, Reconnect, Upstream};
use super::group::Group;
use super::handshake;
use super::recovery::{self, ChainSource, DataDir, Restart};
use super::release::{Control, Policy, SharedReleaser};
use super::stream::{Fanout, GroupSink};
use super::takeover::Takeover;
use super::{ReplicationError, Timing};
use crate::host::status::Stats;
use crate::vm::driver::Attaching;
use crate::vm::live::{LiveDriver, VmEvent};
use crate::vm::machine::Machine;
use crate::vm::pagediff;
use crate::vm::replay::ReplayDriver;
use crate::vm::replayer::RecordSource;
use crate::vm::runner::Driver;
use crate::vm::snapshot::{self, SnapshotError};
use crossbeam_channel::{Receiver, Sender};
use guest_abi::NetConfig;
use logging_channel::channel::{hello, AttachReply, Role};
use std::sync::Arc;
use std::time::Duration;

/// What every member hands to the set-up code.
pub struct Services {
    pub group: Arc<Group>,
    pub releaser: SharedReleaser,
    pub stats: Arc<Stats>,
    pub events: Receiver<VmEvent>,
    pub events_tx: Sender<VmEvent>,
    pub timing: Timing,
    /// A follower's `--data-dir`: where it keeps its log and checkpoints.
    pub data_dir: Option<DataDir>,
}

/// A member ready to boot.
pub struct Started {
    pub driver: Driver,
    /// The exit the VM's state was taken at: the first exit it runs is the next one.
    pub first_index: u64,
    pub attacher: Option<Attacher>,
    pub takeover: Option<Takeover>,
    /// A follower's view of its primary.
    pub upstream: Option<Arc<Upstream>>,
}

/// Waits for the first follower on `listen`, attaches it at exit 0, and keeps
/// listening for more.
pub fn primary(machine: &mut Machine, listen: &str, s: Services) -> Result<Started, ReplicationError> {
    s.group.refuse_if_stale().map_err(ReplicationError::Stale)?;
    let listener = handshake::listen(listen)?;
    tracing::info!(%listen, replication = %s.group.mode(), "primary waiting for its first follower");
    let header = machine.header;
    let local = || hello(Role::Primary, &header, s.group.epoch());
    let fanout = Fanout::new(Backlog::new(s.timing.backlog_bytes, 0, s.group.epoch()));
    let attacher = Attacher {
        group: s.group.clone(),
        fanout: fanout.clone(),
        releaser: s.releaser.clone(),
        stats: s.stats.clone(),
        timing: s.timing,
        tick_hz: header.tick_hz,
    };
    // A follower of an earlier run may ask to resume here: it is refused (nothing has been
    // logged yet), and the primary goes on waiting for a first follower it can attach.
    loop {
        let (conn, request) = handshake::accept_backup(&listener, &local, &|| None)?;
        match attacher.attach(Attaching { conn, request }, machine.at_exit(0)) {
            Ok(()) => break,
            Err(ReplicationError::Attach(why)) => tracing::warn!("{why}; still waiting for a first follower"),
            Err(e) => return Err(e),
        }
    }
    s.releaser.set_policy(Policy::Primary(s.group.clone()));
    attach::spawn_listener(listener, header, s.group.clone(), s.events_tx.clone())
        .map_err(|e| ReplicationError::Thread("join-listen", e))?;
    let sink = GroupSink::new(fanout, s.group.clone(), s.stats.clone());
    let live = LiveDriver::new(header.tick_hz, Some(Box::new(sink)), s.events);
    Ok(Started { driver: Driver::Live(live), first_index: 0, attacher: Some(attacher), takeover: None, upstream: None })
}

/// How a follower goes live, besides what [`Services`] has.
pub struct FollowerPlan {
    pub tap: Option<String>,
    pub net: NetConfig,
    /// Where to take followers of its own once live.
    pub listen: Option<String>,
    pub control: Sender<Control>,
}

/// Connects to the primary, pairs, receives its state (or, restarted on its data
/// directory, resumes from what its disk holds), and returns the replaying driver.
pub fn follower(
    machine: &mut Machine,
    primary_addr: &str,
    connect_within: Duration,
    plan: FollowerPlan,
    s: Services,
) -> Result<Started, ReplicationError> {
    let local = hello(Role::Backup, &machine.header, 0);
    let restart = match &s.data_dir {
        Some(d) => recovery::restore(d, machine)?,
        None => Restart::default(),
    };
    // Hashed before connecting: the primary's guest is paused while it waits for the list.
    let have = pagediff::have_list(&machine.mem).map_err(SnapshotError::from)?;
    let (mut stream, reply) = handshake::connect_primary(
        primary_addr,
        &local,
        connect_within,
        restart.request(),
        handshake::OnRefused::Retry,
    )?;
    let resumed = match (reply, restart.checkpoint) {
        (AttachReply::Resume { from, through }, Some((exit, epoch))) if from == restart.log.position => {
            tracing::info!(
                primary = %primary_addr,
                checkpoint = exit,
                from,
                through,
                "backup paired: resuming from its data directory; replaying exits {} to {from} from disk, then the \
                 primary's log",
                exit + 1
            );
            Some((exit, epoch))
        }
        (AttachReply::Resume { from, .. }, _) => {
            return Err(ReplicationError::Handshake(format!(
                "the primary offered a resume after exit {from}, not asked for"
            )))
        }
        (AttachReply::State { why }, _) if !why.is_empty() => {
            tracing::warn!("the primary cannot resume this follower's log ({why}): it sends the state (a diff)");
            None
        }
        _ => None,
    };
    let (first_index, epoch, position, local_records) = match resumed {
        Some((exit, epoch)) => (exit, epoch.max(restart.log.epoch), restart.log.position, restart.log.records),
        None => {
            let (j, epoch) = snapshot::receive_prepared(
                &mut stream,
                &mut machine.vcpu,
                &machine.mem,
                &mut machine.buses.mmio,
                &have,
            )?;
            (j, epoch, j, Vec::new())
        }
    };
    tracing::info!(primary = %primary_addr, exit = first_index, epoch, "backup paired; replaying the primary's log");
    let upstream = Upstream::new(first_index);
    // A resumed follower holds its disk's log beyond its checkpoint: the stream continues after it.
    upstream.received_through.store(position, std::sync::atomic::Ordering::SeqCst);
    let persist = match &s.data_dir {
        Some(d) => Some(recovery::start(d, machine.header, position, &upstream)?),
        None => None,
    };
    if let (Some(p), None) = (&persist, resumed) {
        p.new_history(first_index, epoch, &mut machine.vcpu, &machine.mem, &machine.buses.mmio)
            .map_err(|e| ReplicationError::Attach(format!("--data-dir: {e}")))?;
    }
    s.group.follow(upstream.clone(), primary_addr, epoch);
    s.releaser.set_policy(Policy::Follower(upstream.clone()));
    // A follower whose connection breaks may reconnect and resume (--reconnect-secs).
    let reconnect = (!s.timing.reconnect.is_zero()).then(|| Reconnect {
        addr: primary_addr.to_string(),
        hello: local,
        within: s.timing.reconnect,
    });
    let stream_source = follower::start(stream, s.timing, upstream.clone(), s.stats.clone(), reconnect.clone())?;
    let source: Box<dyn RecordSource + Send> = if local_records.is_empty() {
        Box::new(stream_source)
    } else {
        Box::new(ChainSource::new(local_records, stream_source))
    };
    let takeover = Takeover {
        tap: plan.tap,
        net: plan.net,
        listen: plan.listen,
        header: machine.header,
        timing: s.timing,
        upstream: upstream.clone(),
        reconnect,
        group: s.group,
        releaser: s.releaser,
        control: plan.control,
        stats: s.stats,
        events: s.events,
        events_tx: s.events_tx,
    };
    let checkpoints = persist.map(|p| p.checkpoints.clone());
    let driver = Driver::Replay(
        ReplayDriver::following(source, upstream.replayed_through.clone()).with_checkpoints(checkpoints),
    );
    Ok(Started { driver, first_index, attacher: None, takeover: Some(takeover), upstream: Some(upstream) })
}
