//! Setting up a group member before the guest boots.
//!
//! A primary waits for its first follower and attaches it at exit 0 through
//! the same [`Attacher`] that attaches followers to the running VM later; it
//! keeps listening for more. A follower receives the state, replays the log,
//! and if its primary dies goes live ([`Takeover`]).
use super::attach::{self, Attacher};
use super::backlog::Backlog;
use super::disklog::DiskLog;
use super::election::elector::{Elector, Next};
use super::election::rejoining::Rejoining;
use super::election::rules::MemberId;
use super::follower::{self, Reconnect, Rejoin, Upstream};
use super::group::Group;
use super::handshake;
use super::recovery::{self, DataDir, RejoinTo, Restart};
use super::release::{Control, Policy, SharedReleaser};
use super::stream::{Fanout, GroupSink};
use super::takeover::{MirroredTap, Takeover};
use super::{ReplicationError, Timing};
use crate::host::status::Stats;
use crate::host::tls::Security;
use crate::vm::checkpoint::SharedCheckpointer;
use crate::vm::live::{LiveDriver, VmEvent};
use crate::vm::machine::Machine;
use crate::vm::pagediff;
use crate::vm::replay::ReplayDriver;
use crate::vm::replayer::RecordSource;
use crate::vm::runner::Driver;
use crate::vm::snapshot::{self, SnapshotError};
use crossbeam_channel::{Receiver, Sender};
use guest_abi::NetConfig;
use logging_channel::channel::{hello, AttachReply, AttachRequest, Hello, Role};
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
    /// How replication connections are locked (TLS, or `--insecure`).
    pub security: Security,
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
    /// The VM's log on this member's disk (`--data-dir`): sealed if it stands down.
    pub disk: Option<Arc<DiskLog>>,
}

/// Waits for the first follower on `listen`, attaches it at exit 0, and keeps
/// listening for more.
pub fn primary(machine: &mut Machine, listen: &str, s: Services) -> Result<Started, ReplicationError> {
    s.group.refuse_if_stale().map_err(ReplicationError::Stale)?;
    let listener = handshake::listen(listen)?;
    tracing::info!(%listen, replication = %s.group.mode(), "primary waiting for its first follower");
    let header = machine.header;
    let fanout = Fanout::new(Backlog::new(s.timing.backlog_bytes, 0, s.group.epoch()));
    let attacher = Attacher {
        group: s.group.clone(),
        fanout: fanout.clone(),
        releaser: s.releaser.clone(),
        stats: s.stats.clone(),
        timing: s.timing,
        tick_hz: header.tick_hz,
        events: s.events_tx.clone(),
        precopying: Default::default(),
    };
    // Joins are paired on their own threads from the start (a silent peer delays no
    // one), and reach the VM's events; before boot, they are taken from there.
    attach::spawn_listener(listener, s.security.clone(), header, s.group.clone(), s.events_tx.clone())
        .map_err(|e| ReplicationError::Thread("join-listen", e))?;
    // Other events that come meanwhile (frames, a stop) wait for the VM, in order.
    let mut early = Vec::new();
    // A follower of an earlier run may ask to resume here: it is refused (nothing has been
    // logged yet), and the primary goes on waiting for a first follower it can attach.
    loop {
        // An elected primary that has not booted yet steps down as soon as another member
        // leads a later epoch (it won its own before that member's election, say): it has
        // released nothing, and two primaries must not both wait for followers.
        if let Some(e) = s.group.elector() {
            if let Some(why) = e.superseded(s.group.epoch()) {
                s.group.halt(why.clone());
                return Err(ReplicationError::Stale(why));
            }
        }
        let attaching = match s.events.recv_timeout(Duration::from_millis(50)) {
            Ok(VmEvent::Attach(a)) => a,
            Ok(other) => {
                early.push(other);
                continue;
            }
            Err(_) => continue,
        };
        match attacher.attach(attaching, machine.at_exit(0)) {
            Ok(()) => break,
            Err(ReplicationError::Attach(why)) => tracing::warn!("{why}; still waiting for a first follower"),
            Err(e) => return Err(e),
        }
    }
    for event in early {
        let _ = s.events_tx.send(event);
    }
    s.releaser.set_policy(Policy::Primary(s.group.clone()));
    // Its own log and checkpoints, so that restarted later (as a follower) it rejoins from them.
    let persist = match &s.data_dir {
        Some(d) => Some(recovery::start_primary(d, machine, &s.group)?),
        None => None,
    };
    let disk = persist.as_ref().map(|p| p.disk.clone());
    let sink = GroupSink::new(fanout, s.group.clone(), s.stats.clone()).with_disk(disk.clone());
    let live = LiveDriver::new(header.tick_hz, Some(Box::new(sink)), s.events)
        .with_checkpoints(persist.map(|p| p.checkpoints.clone()));
    let attacher = Some(attacher);
    Ok(Started { driver: Driver::Live(live), first_index: 0, attacher, takeover: None, upstream: None, disk })
}

/// How a follower goes live, besides what [`Services`] has.
pub struct FollowerPlan {
    pub tap: Option<String>,
    /// `--mirrored-input`: the TAP, open from the start, and what it keeps.
    pub mirrored: Option<MirroredTap>,
    pub net: NetConfig,
    /// Where to take followers of its own once live.
    pub listen: Option<String>,
    pub control: Sender<Control>,
}

/// A replica group member: finds the group's primary or wins the election, then boots
/// as the primary or joins the primary as a follower (by state transfer).
pub fn replica(
    machine: &mut Machine,
    elector: &Arc<Elector>,
    plan: FollowerPlan,
    s: Services,
) -> Result<Started, ReplicationError> {
    // A member whose disk holds all it acknowledged (it sealed its log when it stood
    // down, or runs with --fsync always) starts from it: it votes and may stand on it,
    // before any primary answers (recovery/seal.rs).
    if let Some(dir) = s.data_dir.clone() {
        if let Some((restart, released)) = recovery::kept_restart(&dir, machine)? {
            let hello = hello(Role::Backup, &machine.header, elector.epoch(), s.group.scope().introduce());
            let to = RejoinTo::Elect(elector.clone());
            let within = s.timing.failover_timeout;
            let how = FromDisk { dir, restart, to, within, hello, released };
            let group = Some(GroupJoin { elector: elector.clone(), epoch: elector.epoch(), member: 0 });
            return from_disk(machine, how, plan, s, group);
        }
    }
    loop {
        match elector.find_or_win() {
            Next::Lead { epoch } => {
                // The group's first primary names it (a member that followed knows the name).
                let name = s.group.scope().create_if_none().map_err(|e| ReplicationError::Attach(e.to_string()))?;
                s.group.lead(epoch);
                tracing::info!(group = %name, "group name");
                tracing::info!(epoch, "this member boots the VM as the primary of epoch {epoch}");
                return primary(machine, &elector.join_addr(), s);
            }
            Next::Follow { member, join, epoch } => {
                let services = Services {
                    group: s.group.clone(),
                    releaser: s.releaser.clone(),
                    stats: s.stats.clone(),
                    events: s.events.clone(),
                    events_tx: s.events_tx.clone(),
                    timing: s.timing,
                    data_dir: s.data_dir.clone(),
                    security: s.security.clone(),
                };
                let plan = FollowerPlan {
                    tap: plan.tap.clone(),
                    mirrored: plan.mirrored.clone(),
                    net: plan.net,
                    listen: plan.listen.clone(),
                    control: plan.control.clone(),
                };
                let group = Some(GroupJoin { elector: elector.clone(), epoch, member });
                match follower(machine, &join, s.timing.failover_timeout, plan, services, group) {
                    Ok(started) => return Ok(started),
                    Err(e) => {
                        tracing::warn!("cannot join member {member}, primary of epoch {epoch}: {e}; looking again")
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A replica member joining member `member`, primary of `epoch`.
pub struct GroupJoin {
    pub elector: Arc<Elector>,
    pub epoch: u64,
    pub member: MemberId,
}

impl GroupJoin {
    fn rejoining(&self) -> Rejoining {
        Rejoining { elector: self.elector.clone(), primary: self.member }
    }
}

/// Connects to the primary, pairs, receives its state, and returns the replaying driver.
/// In a replica group (`group`: its elector, and the epoch of the primary it joins), a
/// broken connection goes to the election, and the follower keeps the log it receives.
/// A follower restarted on its data directory first restores its checkpoint and replays
/// its log from disk, and only then asks the primary for the rest ([`recovery::rejoin`]).
pub fn follower(
    machine: &mut Machine,
    primary_addr: &str,
    connect_within: Duration,
    plan: FollowerPlan,
    s: Services,
    group: Option<GroupJoin>,
) -> Result<Started, ReplicationError> {
    let local =
        hello(Role::Backup, &machine.header, group.as_ref().map_or(0, |g| g.epoch), s.group.scope().introduce());
    let restart = match &s.data_dir {
        Some(d) => recovery::restore(d, machine)?,
        None => Restart::default(),
    };
    if let (Some(dir), true) = (s.data_dir.clone(), restart.checkpoint.is_some()) {
        let to = RejoinTo::Primary(primary_addr.to_string());
        let how = FromDisk { dir, restart, to, within: connect_within, hello: local, released: 0 };
        return from_disk(machine, how, plan, s, group);
    }
    // Hashed before connecting: the primary's guest is paused while it waits for the list.
    let have = pagediff::have_list(&machine.mem).map_err(SnapshotError::from)?;
    let (mut stream, reply) = handshake::connect_primary(
        primary_addr,
        &local,
        connect_within,
        AttachRequest::Fresh,
        handshake::OnRefused::Retry,
        s.group.scope(),
        &s.security,
    )?;
    if let AttachReply::Resume { .. } = reply {
        return Err(ReplicationError::Handshake("the primary offered a resume to a new follower".into()));
    }
    let (first_index, epoch) =
        snapshot::receive_prepared(&mut stream, &mut machine.vcpu, &machine.mem, &mut machine.buses.mmio, &have)?;
    tracing::info!(
        primary = %primary_addr,
        exit = first_index,
        epoch,
        pages_held = have.0.len(),
        "backup paired; replaying the primary's log"
    );
    let upstream = Upstream::new(first_index);
    let persist = match &s.data_dir {
        Some(d) => Some(recovery::start(d, machine.header, first_index, &upstream)?),
        None => None,
    };
    if let Some(p) = &persist {
        p.new_history(first_index, epoch, &mut machine.vcpu, &machine.mem, &machine.buses.mmio)
            .map_err(|e| ReplicationError::Attach(format!("--data-dir: {e}")))?;
    }
    s.group.follow(upstream.clone(), primary_addr, epoch);
    s.releaser.set_policy(Policy::Follower(upstream.clone()));
    if let Some(g) = &group {
        g.rejoining().report();
    }
    let reconnect = reconnect_plan(&s, &upstream, group, local, primary_addr, first_index, epoch);
    let source = follower::start(stream, s.timing, upstream.clone(), s.stats.clone(), reconnect.clone())?;
    let checkpoints = persist.map(|p| p.checkpoints.clone());
    Ok(finish(machine, plan, s, upstream, Box::new(source), first_index, checkpoints, reconnect))
}

/// A follower restarted on its data directory, as [`recovery::restore`] left it.
struct FromDisk {
    dir: DataDir,
    restart: Restart,
    /// Whom it asks for the rest once it has replayed its disk.
    to: RejoinTo,
    /// How long it tries to reach that primary.
    within: Duration,
    hello: Hello,
    /// The output of the exits through this one left the member before it restarted (a
    /// sealed log says; otherwise its primary's released marks will).
    released: u64,
}

/// The VM holds the checkpoint; it replays its disk's log, then asks `how.to` for what
/// comes after ([`recovery::rejoin`]).
fn from_disk(
    machine: &mut Machine,
    how: FromDisk,
    plan: FollowerPlan,
    s: Services,
    group: Option<GroupJoin>,
) -> Result<Started, ReplicationError> {
    let FromDisk { dir, restart, to, within, hello, released } = how;
    let (exit, checkpoint_epoch) = restart.checkpoint.ok_or_else(|| {
        ReplicationError::Attach(format!("--data-dir {}: no checkpoint to start from", dir.dir.display()))
    })?;
    let position = restart.log.position;
    let upstream = Upstream::from_disk(exit, checkpoint_epoch, position, restart.log.epoch);
    upstream.released.fetch_max(released.min(position), std::sync::atomic::Ordering::SeqCst);
    let epoch = upstream.log_position().epoch;
    let persist = recovery::start(&dir, machine.header, position, &upstream)?;
    let primary_addr = match &to {
        RejoinTo::Primary(addr) => addr.clone(),
        RejoinTo::Elect(_) => String::new(),
    };
    s.group.follow(upstream.clone(), &primary_addr, epoch);
    match (&to, &group) {
        // It neither votes nor counts as following until that primary answers
        // ([`Upstream::rejoined`]): it is still replaying its own disk.
        (RejoinTo::Primary(_), Some(g)) => {
            *upstream.rejoining.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.rejoining());
        }
        // Its log is whole and the group sees where it ends from now on: it votes.
        (RejoinTo::Elect(elector), _) => elector.kept_log(),
        (RejoinTo::Primary(_), None) => {}
    }
    s.releaser.set_policy(Policy::Follower(upstream.clone()));
    // Its backlog (served if it leads later) starts after its disk's log: the records it
    // replays from disk are not in it.
    let reconnect = reconnect_plan(&s, &upstream, group, hello, &primary_addr, position, epoch);
    let plan_rejoin = recovery::RestartPlan {
        to,
        hello,
        within,
        request: restart.request(),
        timing: s.timing,
        stats: s.stats.clone(),
        reconnect: reconnect.clone(),
        mem: machine.mem.clone(),
        scope: s.group.scope().clone(),
        security: s.security.clone(),
    };
    let source = recovery::rejoin(plan_rejoin, restart.log.records, upstream.clone())?;
    let checkpoints = Some(persist.checkpoints.clone());
    Ok(finish(machine, plan, s, upstream, Box::new(source), exit, checkpoints, reconnect))
}

/// Where a follower whose connection breaks goes.
fn reconnect_plan(
    s: &Services,
    upstream: &Upstream,
    group: Option<GroupJoin>,
    local: Hello,
    primary_addr: &str,
    first_index: u64,
    epoch: u64,
) -> Option<Reconnect> {
    match group {
        // A member whose primary is gone follows whoever the group elects next.
        Some(GroupJoin { elector, .. }) => {
            upstream.keep_log(s.timing.backlog_bytes, first_index, epoch);
            let _ = upstream.fence.set(elector.fence());
            Some(Reconnect {
                to: Rejoin::Elect(elector),
                hello: local,
                within: s.timing.failover_timeout,
                scope: s.group.scope().clone(),
                security: s.security.clone(),
            })
        }
        // A follower whose connection breaks may reconnect and resume (--reconnect-secs).
        None => (!s.timing.reconnect.is_zero()).then(|| Reconnect {
            to: Rejoin::Same(primary_addr.to_string()),
            hello: local,
            within: s.timing.reconnect,
            scope: s.group.scope().clone(),
            security: s.security.clone(),
        }),
    }
}

/// A follower's driver and how it goes live, once it has a record source.
#[allow(clippy::too_many_arguments)]
fn finish(
    machine: &Machine,
    plan: FollowerPlan,
    s: Services,
    upstream: Arc<Upstream>,
    source: Box<dyn RecordSource + Send>,
    first_index: u64,
    checkpoints: Option<SharedCheckpointer>,
    reconnect: Option<Reconnect>,
) -> Started {
    let mirror = plan.mirrored.as_ref().map(|m| m.mirror.clone());
    let takeover = Takeover {
        tap: plan.tap,
        mirrored: plan.mirrored,
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
        security: s.security,
    };
    if let Err(e) = super::catchup::watch(Arc::downgrade(&upstream)) {
        tracing::warn!("cannot start the catch-up thread ({e}); its progress lines are missing");
    }
    let driver = Driver::Replay(
        ReplayDriver::following(source, upstream.replayed_through.clone())
            .with_checkpoints(checkpoints)
            .with_mirror(mirror),
    );
    let disk = upstream.persist.get().map(|p| p.disk.clone());
    Started { driver, first_index, attacher: None, takeover: Some(takeover), upstream: Some(upstream), disk }
}
