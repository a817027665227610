//! Putting a VM together for one command: machine, driver, output policy, and
//! (for a pair) the replication channel; then `threads` runs it.
//! Putting a VM together for one command: machine, driver, output policy, and
//! (for a group member) the fault-tolerance core; then `threads` runs it.
pub mod threads;

use crate::ft::disklog::DiskLog;
use crate::ft::election::elector::{ElectionTiming, Elector};
use crate::ft::election::peer::Membership;
use crate::ft::election::rules::Rank;
use crate::ft::election::witness::Witness;
use crate::ft::group::{Election, Group, GroupConfig};
use crate::ft::output_rule::ReplicationMode;
use crate::ft::recovery::DataDir;
use crate::ft::release::{Control, Policy, SharedReleaser};
use crate::ft::start::{self, FollowerPlan, Services, Started};
use crate::ft::takeover::{announce, MirroredTap};
use crate::ft::{ReplicationError, Timing};
use crate::host::address_check::{self, AddressError};
use crate::host::affinity::CpuList;
use crate::host::arbiter::{self, Arbiter, Location};
use crate::host::mirror::{GuestAddr, Mirror, MirrorError};
use crate::host::scope::{Scope, ScopeError};
use crate::host::status::{Role, Stats};
use crate::host::tap::{Tap, TapError};
use crate::vm::digest;
use crate::vm::driver::{Finish, RunError};
use crate::vm::guest_image::{self, ImageError};
use crate::vm::live::{LiveDriver, VmEvent};
use crate::vm::machine::{Machine, MachineConfig, MachineError};
use crate::vm::recorder::{RecordError, Recorder};
use crate::vm::replay::ReplayDriver;
use crate::vm::replayer::ReplayError;
use crate::vm::runner::{Driver, Outcome};
use crossbeam_channel::bounded;
use guest_abi::{NetConfig, Workload};
use logging_channel::{FileError, LogReader};
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use threads::{OutputPlan, Program};

/// The guest and host options every command shares.
pub struct VmOptions {
    pub mem_size: u64,
    pub tick_hz: u32,
    pub workload: Workload,
    pub kernel: Option<PathBuf>,
    pub stop_at_exit: Option<u64>,
    pub net: NetConfig,
    /// The TAP device that backs the NIC.
    pub tap: Option<String>,
    /// Serve `ftvmm status` here.
    pub status: Option<String>,
    /// Who decides which side goes on alone (group members only).
    pub arbiter: Option<String>,
    /// The guest flags a recording writes into its log (`flag=value` lines), so that
    /// a replay needs none.
    pub guest_flags: String,
    /// Pin every thread of this VMM to these CPUs (`--cpu`).
    pub cpus: Option<CpuList>,
    /// Pin the vCPU thread alone to these CPUs (`--vcpu-cpu`).
    pub vcpu_cpus: Option<CpuList>,
    /// A follower opens its TAP at once and keeps what clients send the guest, for
    /// go-live (`--mirrored-input`; host/mirror.rs).
    pub mirrored_input: bool,
    /// How long a VM that boots to serve the guest's address (`run`, `primary`) first
    /// listens for someone else answering for it (`--address-check-ms`; zero: no check).
    pub address_check: Duration,
}

/// How a primary replicates.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub timing: Timing,
    pub replication: ReplicationMode,
    pub max_followers: usize,
    /// `--group-name`: none (the usual case) to make one up (a primary) or learn it.
    pub name: logging_channel::GroupName,
    /// How its replication connections are locked (`--tls-dir`, or `--insecure`).
    pub security: crate::host::tls::Security,
}

/// Who a replica group member is (`ftvmm replica`).
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    pub id: u64,
    /// `--group`: every member's peer address.
    pub group: String,
    pub priority: u8,
    /// `--witness`: file:DIR or etcd:URL.
    pub witness: Option<String>,
    /// Where the member keeps its ballot.
    pub data_dir: PathBuf,
    /// Its log and checkpoints (in `data_dir` too), to restart from.
    pub disk: DataDir,
}

/// What the command does.
pub enum Mode {
    Run,
    Record(PathBuf),
    Replay(PathBuf),
    /// Wait for a first follower on `listen`, then run with followers in lockstep.
    Primary {
        listen: String,
        group: GroupOptions,
        /// Where it keeps its log and checkpoints (`--data-dir`), for when it follows later.
        data_dir: Option<DataDir>,
    },
    /// Pair with the primary at `primary`, replay its log, go live if it dies
    /// (and then take followers at `listen`, if given).
    Backup {
        primary: String,
        group: GroupOptions,
        connect_within: Duration,
        listen: Option<String>,
        /// Where it keeps its log and checkpoints, to restart from (`--data-dir`).
        data_dir: Option<DataDir>,
    },
    /// A member of a replica group: the members elect a primary, which boots the VM;
    /// the others follow it, and elect a new one when it dies.
    Replica {
        member: ReplicaOptions,
        group: GroupOptions,
    },
}

/// What the command prints last and how the process exits.
pub struct Report {
    pub digest_line: Option<String>,
    pub exit_code: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error("cannot open log {path}: {source}")]
    OpenLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log {path} refused: {source}")]
    BadLog {
        path: String,
        #[source]
        source: FileError,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("replay takes no --tap: a replayed VM gets its input from the log and sends nothing")]
    TapInReplay,
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("could not start thread {0}: {1}")]
    Thread(&'static str, std::io::Error),
    #[error(transparent)]
    Replication(ReplicationError),
    #[error(transparent)]
    Arbiter(crate::host::arbiter::ArbiterError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("cannot serve status on {addr}: {source}")]
    Status {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Affinity(crate::host::affinity::AffinityError),
    #[error(transparent)]
    Membership(#[from] crate::ft::election::peer::MembershipError),
    #[error(transparent)]
    Election(#[from] crate::ft::election::elector::ElectionError),
    #[error(
        "--mirrored-input is for a backup or a replica member with --tap (a follower keeps the frames its TAP \
         receives for go-live); drop it here"
    )]
    MirroredInputNotFollower,
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("the vCPU thread panicked; this is a bug in ftvmm")]
    VcpuPanicked,
}

/// Process exit codes; README documents them.
pub mod exit_code {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const DIVERGENCE: u8 = 3;
    pub const BAD_LOG: u8 = 4;
    pub const GUEST_FAILED: u8 = 5;
    pub const NO_KVM: u8 = 6;
    /// A backup refused to go live (corrupt stream) or a pairing was refused.
    pub const STOOD_DOWN: u8 = 7;
    /// Someone on the network already answers for the guest's address (a VM of it
    /// serves there): this VM did not boot.
    pub const ADDRESS_IN_USE: u8 = 8;
}

impl LaunchError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Machine(MachineError::NoKvm(_)) => exit_code::NO_KVM,
            LaunchError::Address(AddressError::InUse { .. }) => exit_code::ADDRESS_IN_USE,
            LaunchError::BadLog { .. } | LaunchError::Run(RunError::Replay(ReplayError::Log(_))) => exit_code::BAD_LOG,
            LaunchError::Run(RunError::Replay(ReplayError::NoEnd { .. })) => exit_code::BAD_LOG,
            LaunchError::Run(RunError::Replay(ReplayError::Source(_))) => exit_code::STOOD_DOWN,
            LaunchError::Run(RunError::Replay(_)) => exit_code::DIVERGENCE,
            LaunchError::Run(RunError::GuestFault { .. }) => exit_code::GUEST_FAILED,
            LaunchError::Run(RunError::StandDown(_)) => exit_code::STOOD_DOWN,
            LaunchError::Replication(
                ReplicationError::RefusedPrimary(_)
                | ReplicationError::Refused(_)
                | ReplicationError::Snapshot(_)
                | ReplicationError::Stale(_),
            ) => exit_code::STOOD_DOWN,
            _ => exit_code::ERROR,
        }
    }
}

pub fn launch(opts: &VmOptions, mode: &Mode) -> Result<Report, LaunchError> {
    // Before any thread exists, so that every thread inherits the mask and only
    // `signals` ever takes SIGINT/SIGTERM (default delivery would kill the process
    // without flushing the log).
    // Before anything is built: a flag that cannot apply is refused at once.
    if opts.mirrored_input && !matches!(mode, Mode::Backup { .. } | Mode::Replica { .. }) {
        return Err(LaunchError::MirroredInputNotFollower);
    }
    threads::block_stop_signals();
    // Also before any thread exists: every thread inherits it.
    if let Some(cpus) = &opts.cpus {
        cpus.pin_current_thread("this VMM").map_err(LaunchError::Affinity)?;
    }
    let signals = threads::Signals::start()?;
    let image = guest_image::load(opts.kernel.as_deref())?;
    let mut config =
        MachineConfig { mem_size: opts.mem_size, tick_hz: opts.tick_hz, workload: opts.workload, net: opts.net };
    let replay_log = match mode {
        Mode::Replay(path) => Some(open_log(path, &mut config)?),
        _ => None,
    };
    if replay_log.is_some() && opts.tap.is_some() {
        return Err(LaunchError::TapInReplay);
    }
    let mut machine = Machine::new(&config, &image)?;
    let stats = Stats::new(match mode {
        Mode::Run => Role::Standalone,
        Mode::Record(_) => Role::Recording,
        Mode::Replay(_) => Role::Replaying,
        Mode::Primary { .. } => Role::Primary,
        Mode::Backup { .. } | Mode::Replica { .. } => Role::Backup,
    });
    if let Some(addr) = &opts.status {
        crate::host::http::serve(addr, stats.clone())
            .map_err(|source| LaunchError::Status { addr: addr.clone(), source })?;
    }
    if let Mode::Primary { group, .. } | Mode::Backup { group, .. } | Mode::Replica { group, .. } = mode {
        if group.security.is_tls() {
            tracing::info!(security = ?group.security, "replication: TLS 1.3, both sides certified by the group's CA");
        } else {
            tracing::warn!("replication: --insecure: in clear and unauthenticated");
        }
    }
    let (events_tx, events_rx) = bounded::<VmEvent>(4096);
    let (control_tx, control_rx) = bounded::<Control>(64);
    // A backup opens its TAP only when it goes live (a replica member too: it does not
    // know yet whether it leads).
    let mut tap = match mode {
        Mode::Backup { .. } | Mode::Replica { .. } => None,
        _ => opts.tap.as_deref().map(Tap::open).transpose()?,
    };
    // A VM that boots to serve the guest's address first makes sure nobody else does
    // (a restarted primary next to its backup that went live: host/address_check.rs).
    if let (Some(tap), Mode::Run | Mode::Primary { .. }) = (&tap, mode) {
        if !opts.address_check.is_zero() {
            let ip = std::net::Ipv4Addr::from(config.net.ip);
            address_check::check(tap, ip, config.net.prefix_len, opts.address_check)?;
        }
    }
    let mirrored = mirrored_tap(opts, mode, config.net)?;
    let releaser = SharedReleaser::new(Policy::Immediate, None, stats.clone());
    let mut plain: Option<Driver> = None;
    let service = std::net::Ipv4Addr::from(config.net.ip).to_string();
    let arbiter: Option<Arc<dyn Arbiter>> = match &opts.arbiter {
        Some(spec) => {
            let arbiter = arbiter::from_spec(spec).map_err(LaunchError::Arbiter)?;
            if let Some(why) = arbiter.location().unusable() {
                tracing::warn!("the arbiter cannot be used now, so no claim can be won until it can: {why}");
            }
            Some(Arc::from(arbiter))
        }
        None => None,
    };
    let scope = Arc::new(scope(mode, &service)?);
    let elector = match mode {
        Mode::Replica { member, group: g } => Some(elector(member, g, &machine.header, &scope)?),
        _ => None,
    };
    let group = |g: &GroupOptions| {
        let config = GroupConfig {
            mode: g.replication,
            max_followers: g.max_followers,
            arbiter: arbiter.clone(),
            scope: scope.clone(),
            election: elector.clone().map(|elector| Election { elector, step_down_after: g.timing.failover_timeout }),
        };
        Group::new(config, stats.clone(), machine.repl_status.clone(), events_tx.clone())
    };
    let services = |events, g: &GroupOptions, data_dir: Option<DataDir>| Services {
        group: group(g),
        releaser: releaser.clone(),
        stats: stats.clone(),
        events,
        events_tx: events_tx.clone(),
        timing: g.timing,
        data_dir,
        security: g.security.clone(),
    };
    // A replica member's group: what it released, should it stand down and seal its log.
    let mut member_group: Option<Arc<Group>> = None;
    let started: Option<Started> = match (mode, replay_log, &elector) {
        (Mode::Primary { listen, group: g, data_dir }, _, _) => {
            let s = services(events_rx.clone(), g, data_dir.clone());
            Some(start::primary(&mut machine, listen, s).map_err(LaunchError::Replication)?)
        }
        (Mode::Backup { primary, group: g, connect_within, listen, data_dir }, _, _) => {
            let plan = FollowerPlan {
                tap: opts.tap.clone(),
                mirrored: mirrored.clone(),
                net: config.net,
                listen: listen.clone(),
                control: control_tx.clone(),
            };
            let s = services(events_rx.clone(), g, data_dir.clone());
            Some(
                start::follower(&mut machine, primary, *connect_within, plan, s, None)
                    .map_err(LaunchError::Replication)?,
            )
        }
        (Mode::Replica { member, group: g }, _, Some(elector)) => {
            // Its ballot, log and checkpoints, like a primary's or a backup's.
            let s = services(events_rx.clone(), g, Some(member.disk.clone()));
            member_group = Some(s.group.clone());
            elector.start(s.group.clone())?;
            let plan = FollowerPlan {
                tap: opts.tap.clone(),
                mirrored: mirrored.clone(),
                net: config.net,
                listen: Some(elector.join_addr()),
                control: control_tx.clone(),
            };
            let started = start::replica(&mut machine, elector, plan, s).map_err(LaunchError::Replication)?;
            if started.takeover.is_none() {
                // Elected at boot: this member runs the VM and its NIC from the start.
                stats.set_role(Role::Primary);
                tap = match &mirrored {
                    // Its TAP is open and read already: a fresh VM gets what comes from now on.
                    Some(m) => {
                        m.mirror.pass_through(&events_tx, VmEvent::Frame);
                        Some(m.tap.clone())
                    }
                    None => opts.tap.as_deref().map(Tap::open).transpose()?,
                };
            }
            Some(started)
        }
        (Mode::Replay(path), Some((reader, recorded)), _) => {
            recorded
                .check_matches(&machine.header)
                .map_err(|source| LaunchError::BadLog { path: path.display().to_string(), source })?;
            plain = Some(Driver::Replay(ReplayDriver::new(Box::new(reader))));
            None
        }
        (Mode::Record(path), _, _) => {
            let recorder = Recorder::create(path, &machine.header, opts.guest_flags.as_bytes())?;
            plain = Some(Driver::Live(LiveDriver::new(config.tick_hz, Some(Box::new(recorder)), events_rx.clone())));
            None
        }
        _ => None,
    };
    drop(control_tx);
    let member = started.is_some();
    let disk = started.as_ref().and_then(|s| s.disk.clone());
    let (driver, first_index, program, upstream) = match started {
        Some(s) => (
            s.driver,
            s.first_index,
            Program::Member { attacher: s.attacher, takeover: s.takeover.map(Box::new) },
            s.upstream,
        ),
        None => {
            let driver = plain.unwrap_or_else(|| Driver::Live(LiveDriver::new(config.tick_hz, None, events_rx)));
            (driver, 0, Program::Plain, None)
        }
    };
    if let Some(tap) = &tap {
        if mirrored.is_none() {
            tap.spawn_reader(events_tx.clone(), VmEvent::Frame).map_err(|e| LaunchError::Thread("nic-rx", e))?;
        }
        // Switches may remember the guest's MAC on another port (a backup that was live
        // there before); announcing it, as a NIC coming up would, puts it where it is now.
        announce(tap.clone(), config.net);
        tracing::info!(tap = tap.name(), "NIC attached to TAP");
    }
    tracing::info!(
        mem_mib = config.mem_size >> 20,
        tick_hz = config.tick_hz,
        image = %logging_channel::short_hex(&machine.header.guest_image_digest),
        "booting guest"
    );
    releaser.set_tap(tap);
    let output = OutputPlan {
        stats: stats.clone(),
        releaser: releaser.clone(),
        control: control_rx,
        vcpu_cpus: opts.vcpu_cpus.clone(),
    };
    let outcome =
        threads::run_threads(machine, driver, program, first_index, opts.stop_at_exit, output, events_tx, &signals);
    if let (Mode::Replica { member, .. }, Some(elector), Some(disk), Some(group)) =
        (mode, &elector, &disk, &member_group)
    {
        if elector.stood_down_with_log() {
            seal_log(&member.disk, disk, group.released());
        }
    }
    let outcome = outcome?;
    report_held_times(&releaser, member);
    tracing::info!("final status: {}", stats.snapshot());
    if let Some(upstream) = upstream {
        if upstream.clean_end.load(Ordering::SeqCst) {
            tracing::info!("the primary stopped cleanly, so this backup stops too (it did not go live)");
        }
    }
    Ok(report(&outcome, opts.stop_at_exit))
}

/// A replica member that stood down holding its log: its VM has stopped, so the log on
/// its disk can be made whole, and the process that starts over keeps its vote.
fn seal_log(d: &DataDir, disk: &DiskLog, released: u64) {
    match crate::ft::recovery::seal(d, disk, released) {
        Ok(note) => tracing::info!(
            exit = note.exit,
            released = note.released,
            "stood down: this member's log is sealed on its disk through exit {}; it keeps its vote when it starts \
             over",
            note.exit
        ),
        Err(e) => {
            tracing::warn!("stood down, but its log could not be sealed ({e}): it starts over as a restarted member")
        }
    }
}

/// With `--mirrored-input`, a follower's TAP opened now, and the reader that keeps what it
/// receives until go-live.
fn mirrored_tap(opts: &VmOptions, mode: &Mode, net: NetConfig) -> Result<Option<MirroredTap>, LaunchError> {
    if !opts.mirrored_input {
        return Ok(None);
    }
    let (Mode::Backup { .. } | Mode::Replica { .. }, Some(name)) = (mode, opts.tap.as_deref()) else {
        return Err(LaunchError::MirroredInputNotFollower);
    };
    let tap = Tap::open(name)?;
    let mirror = Mirror::new(GuestAddr { mac: net.mac, ip: net.ip });
    mirror.spawn_reader(&tap)?;
    tracing::info!(tap = name, "mirrored input: keeping what this TAP receives for the guest until go-live");
    Ok(Some(MirroredTap { tap, mirror }))
}

/// This member's group name (`host::scope`): a primary starts a new group, a backup
/// learns its primary's, a replica member keeps the one in its data directory.
fn scope(mode: &Mode, guest: &str) -> Result<Scope, LaunchError> {
    Ok(match mode {
        Mode::Primary { group, .. } if group.name.is_none() => Scope::fresh(guest)?,
        Mode::Primary { group, .. } | Mode::Backup { group, .. } => Scope::given(group.name),
        Mode::Replica { member, group } => Scope::stored_in(&member.data_dir, group.name, guest)?,
        Mode::Run | Mode::Record(_) | Mode::Replay(_) => Scope::unknown(),
    })
}

/// A replica group member's elector, from its options.
fn elector(
    member: &ReplicaOptions,
    g: &GroupOptions,
    machine: &logging_channel::LogHeader,
    scope: &Arc<Scope>,
) -> Result<Arc<Elector>, LaunchError> {
    let witness = match &member.witness {
        Some(spec) => {
            let location = Location::parse(spec).map_err(LaunchError::Arbiter)?;
            if let Some(why) = location.unusable() {
                tracing::warn!("the witness cannot be used now, so it counts as no vote until it can: {why}");
            }
            Some(Arc::new(Witness::new(location, scope.clone())))
        }
        None => None,
    };
    let me = Rank { id: member.id, priority: member.priority };
    let membership = Membership::parse(&member.group, me, witness.is_some(), machine, g.security.clone())?;
    let timing = ElectionTiming::from(g.timing.failover_timeout, g.timing.heartbeat);
    Ok(Elector::new(membership, timing, witness, &member.data_dir)?)
}

fn report_held_times(releaser: &SharedReleaser, paired: bool) {
    if !paired {
        return;
    }
    if let Some((n, p50, p90, p99, max)) = releaser.held_summary() {
        tracing::info!(
            outputs = n,
            p50_us = p50,
            p90_us = p90,
            p99_us = p99,
            max_us = max,
            "output held by the Output Rule"
        );
    }
}

type OpenedLog = (LogReader<BufReader<File>>, logging_channel::LogHeader);

/// Opens a log and takes the machine shape it was recorded with.
fn open_log(path: &std::path::Path, config: &mut MachineConfig) -> Result<OpenedLog, LaunchError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| LaunchError::OpenLog { path: shown.clone(), source })?;
    let (reader, header) =
        LogReader::open(BufReader::new(file)).map_err(|source| LaunchError::BadLog { path: shown, source })?;
    config.mem_size = header.mem_size;
    config.tick_hz = header.tick_hz;
    Ok((reader, header))
}

fn report(outcome: &Outcome, stop_at: Option<u64>) -> Report {
    let line = format!("state digest at exit {}: {}", outcome.exit_index, digest::hex(&outcome.digest));
    let ns_per_exit = outcome.elapsed.as_nanos() / u128::from(outcome.exit_index.max(1));
    tracing::info!(
        finish = ?outcome.finish,
        exits = outcome.exit_index,
        interrupts = outcome.interrupts,
        ns_per_exit,
        "VM stopped"
    );
    let (digest_line, exit_code) = match outcome.finish {
        _ if stop_at == Some(outcome.exit_index) => (Some(line), exit_code::OK),
        Finish::StopAtExit | Finish::PowerOff(0) | Finish::Shutdown | Finish::EndOfLog(_) => {
            tracing::info!("{line}");
            (None, exit_code::OK)
        }
        Finish::PowerOff(code) => {
            tracing::error!(code, "the guest powered off with a failure code");
            (None, exit_code::GUEST_FAILED)
        }
    };
    Report { digest_line, exit_code }
}
