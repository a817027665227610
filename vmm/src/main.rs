//! `ftvmm`: the command line. Errors get context here and become exit codes.
use clap::{Args, Parser, Subcommand, ValueEnum};
use guest_abi::Workload;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vmm::ft::output_rule::ReplicationMode;
use vmm::ft::{self, Timing};
use vmm::host::affinity::CpuList;
use vmm::host::netcfg::{self, NetConfigError};
use vmm::launch::{self, GroupOptions, LaunchError, Mode, VmOptions};

mod arbiter_cmd;
mod recorded_flags;
mod watch;

#[derive(Parser)]
#[command(
    name = "ftvmm",
    version,
    about = "A KVM monitor that keeps a backup VM in lockstep by deterministic record/replay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter for the monitor's own diagnostics (stderr), e.g. `debug` or `vmm=trace`.
    #[arg(long, global = true, default_value = "info", env = "FTVMM_LOG")]
    log_level: String,
    /// How the monitor's own diagnostics are written: `text` for people, `json` (one
    /// object per line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FTVMM_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the guest unreplicated; its console goes to stdout. Ctrl-C stops it.
    Run(VmArgs),
    /// Run the guest and write every nondeterministic event, with its exit index, to a log file.
    Record {
        #[command(flatten)]
        vm: VmArgs,
        /// Where to write the log.
        #[arg(long = "log", value_name = "FILE")]
        log_file: PathBuf,
    },
    /// Wait for a backup to pair, then run in lockstep with it: the log streams to the backup,
    /// and output leaves only once the backup holds the log up to it (the Output Rule).
    Primary {
        #[command(flatten)]
        vm: VmArgs,
        /// Where backups connect, e.g. 10.77.0.1:7000.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: String,
        #[command(flatten)]
        group: GroupArgs,
        #[command(flatten)]
        disk: DiskArgs,
    },
    /// Pair with a primary and replay its log (dropping all output); if the primary dies,
    /// go live in its place. Same guest and flags as the primary.
    Backup {
        #[command(flatten)]
        vm: VmArgs,
        /// The primary's --listen address.
        #[arg(long, value_name = "ADDR:PORT")]
        primary: String,
        /// How long to keep trying to reach the primary at start.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        connect_timeout_secs: u64,
        /// Once live, take on new backups here (like the primary's --listen).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
        #[command(flatten)]
        group: GroupArgs,
        #[command(flatten)]
        disk: DiskArgs,
    },
    /// Run as a member of a replica group: every member runs the same command with its own
    /// --id. The members elect a primary, which boots the VM; the others follow it, and
    /// when it dies they elect the most up-to-date one. A member that restarts, or a
    /// primary that lost its majority, comes back as a follower.
    Replica {
        #[command(flatten)]
        vm: VmArgs,
        /// This member's id in --group.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// Every member's peer address, the same on every member: ID=IP:PORT,... Each
        /// member answers votes on PORT and takes followers on PORT+1 while it is primary.
        #[arg(long, value_name = "ID=IP:PORT,...")]
        group: String,
        /// A voter with no log for groups with an even number of members: file:DIR or
        /// etcd:http://HOST:PORT[,...] (the same on every member).
        #[arg(long, value_name = "SPEC")]
        witness: Option<String>,
        /// Higher stands first when logs are equal; 0 votes but never leads.
        #[arg(long, default_value_t = 1)]
        priority: u8,
        /// Where this member keeps its ballot (its vote and epoch), which must survive
        /// restarts (a member that forgot its vote could vote twice in one epoch), and its
        /// log and checkpoints: restarted with it, the member restores its newest
        /// checkpoint, replays its log and asks the primary only for what came after.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Checkpoint the VM this often (incremental: only changed pages).
        #[arg(long, default_value_t = vmm::ft::recovery::DEFAULT_CHECKPOINT_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        checkpoint_secs: u64,
        /// `async` acks a record on receipt and writes it to disk after; `always` acks
        /// (and as primary sends) only once the record is fsync'd, so a member that
        /// crashed keeps its vote and a group that all crashed at once comes back.
        #[arg(long, default_value = "async", value_name = "async|always", value_parser = parse_fsync)]
        fsync: vmm::ft::disklog::Fsync,
        #[command(flatten)]
        group_args: GroupArgs,
    },
    /// Print the status of a running ftvmm (started with --status ADDR) as one JSON object
    /// (its `GET /status`; a browser on http://ADDR/ shows the dashboard).
    Status {
        /// The address given to --status.
        addr: String,
        /// Print one line a second (role, epoch, protection, exits/s, lag, held time, log rate) until interrupted.
        #[arg(long, conflicts_with = "metrics")]
        watch: bool,
        /// Print its Prometheus metrics (`GET /metrics`) instead.
        #[arg(long)]
        metrics: bool,
    },
    /// List or clear the records of groups at an arbiter or witness location (the rare
    /// manual case: every deployment has its own group name, so none is ever in the way).
    Arbiter {
        #[command(subcommand)]
        command: arbiter_cmd::ArbiterCommand,
    },
    /// Make the TLS files of a replica group: `certs init DIR` writes a CA and one
    /// certificate per member (DIR/NAME is member NAME's --tls-dir).
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Run a fresh VM from a log alone (no timer, no device input) and check it does what was
    /// recorded. The log carries the guest flags it was recorded with; flags given here must agree.
    Replay {
        #[command(flatten)]
        vm: VmArgs,
        /// The log written by `ftvmm record`.
        #[arg(long = "log", value_name = "FILE")]
        log_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Make a CA and per-member certificates in DIR (DIR/ca.pem, DIR/ca.key, DIR/NAME/{ca,cert,key}.pem).
    Init {
        /// Where to write them (created if missing; an existing CA is never replaced).
        dir: PathBuf,
        /// How many members (named member-1, member-2, ...) or their names: a,b,c.
        #[arg(long, default_value = "3", value_name = "N|NAMES")]
        members: String,
    },
}

#[derive(Args)]
struct GroupArgs {
    /// Who decides which side goes on alone when the link breaks: file:DIR (a directory
    /// both hosts share) or etcd:http://HOST:PORT[,...]. Without one, a partition can
    /// leave both sides serving.
    #[arg(long, value_name = "SPEC")]
    arbiter: Option<String>,
    /// The group's name, which scopes its arbiter claims and witness record. Normally
    /// not given: a primary makes one up (the guest's address and a random id) and
    /// every member learns it from its primary. Given, every member must give the same.
    #[arg(long, value_name = "NAME")]
    group_name: Option<logging_channel::GroupName>,
    /// How often the primary sends a heartbeat when it has nothing else to send.
    #[arg(long, default_value_t = ft::DEFAULT_HEARTBEAT_MS, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    heartbeat_ms: u64,
    /// Silence on the logging channel for this long means the peer is dead.
    #[arg(long, default_value_t = ft::DEFAULT_FAILOVER_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    failover_timeout_ms: u64,
    /// Flow control: how many exits the backup's replay may trail before the primary's
    /// vCPU waits for it.
    #[arg(long, default_value_t = ft::flow::DEFAULT_MAX_REPLAY_LAG, value_parser = clap::value_parser!(u64).range(1..))]
    max_replay_lag_exits: u64,
    /// How output waits for followers: sync (every follower), semi-sync (one synchronous
    /// follower), async (nobody: a failover can lose acknowledged writes) or quorum:K
    /// (any K followers).
    #[arg(long, default_value = "sync", value_name = "MODE", value_parser = parse_replication)]
    replication: ReplicationMode,
    /// The most followers this VM takes at once.
    #[arg(long, default_value_t = vmm::ft::group::DEFAULT_MAX_FOLLOWERS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_followers: u64,
    /// How much of its recent log a primary keeps in memory, so that a follower whose
    /// connection broke resumes from it instead of receiving the whole state (0: keep none).
    #[arg(long, default_value_t = vmm::ft::backlog::DEFAULT_BACKLOG_MIB, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    backlog_mib: u64,
    /// The backlog in KiB instead (tests use tiny ones); overrides --backlog-mib.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(0..=67_108_864))]
    backlog_kib: Option<u64>,
    /// How long a follower whose connection to its primary broke tries to reconnect and
    /// resume before it takes the primary for dead and goes live (0: it does not try).
    /// A refused connection (the primary's process is gone) ends the wait at once; an
    /// unreachable host delays the failover by up to this long.
    #[arg(long, default_value_t = ft::DEFAULT_RECONNECT_SECS, value_parser = clap::value_parser!(u64).range(0..=3600))]
    reconnect_secs: u64,
    /// This member's TLS files: ca.pem (the group's CA), cert.pem and key.pem (its own);
    /// `ftvmm certs init DIR` makes them, DIR/NAME for member NAME. Every replication
    /// connection is then TLS 1.3, and a peer must hold a certificate of the same CA.
    #[arg(long, value_name = "DIR", env = "FTVMM_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Replicate in clear, unauthenticated: anyone who reaches the replication ports
    /// can take the VM's memory, defeat the Output Rule and vote. Trusted networks only.
    #[arg(long, conflicts_with = "tls_dir")]
    insecure: bool,
    /// A state transfer to a running VM copies its memory while it runs, in rounds of the
    /// pages KVM's dirty-page log says were written, and pauses it only for the last round
    /// (on); off stops the VM for the whole copy of the pages that differ.
    #[arg(long, default_value = "on", value_enum)]
    precopy: OnOff,
}

/// A switch.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
struct DiskArgs {
    /// Keep this VM's log and checkpoints here (a primary too: it may be a follower
    /// later). A follower restarted with the same directory (after a crash or a reboot,
    /// or an old primary restarted as a backup) restores its newest checkpoint, replays
    /// its log and asks the primary only for what came after.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// With --data-dir: checkpoint the VM this often (incremental: only changed pages).
    #[arg(long, default_value_t = vmm::ft::recovery::DEFAULT_CHECKPOINT_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400), requires = "data_dir")]
    checkpoint_secs: u64,
    /// With --data-dir: `async` acks a record on receipt and writes it to disk after
    /// (a host crash can lose the last moments of the log on disk, never the replica's);
    /// `always` acks only once the record is fsync'd.
    #[arg(long, default_value = "async", value_name = "async|always", value_parser = parse_fsync, requires = "data_dir")]
    fsync: vmm::ft::disklog::Fsync,
}

impl DiskArgs {
    fn data_dir(&self) -> Option<vmm::ft::recovery::DataDir> {
        self.data_dir.as_ref().map(|dir| vmm::ft::recovery::DataDir {
            dir: dir.clone(),
            checkpoint_every: Duration::from_secs(self.checkpoint_secs),
            fsync: self.fsync,
        })
    }
}

fn parse_fsync(s: &str) -> Result<vmm::ft::disklog::Fsync, String> {
    match s {
        "async" => Ok(vmm::ft::disklog::Fsync::Async),
        "always" => Ok(vmm::ft::disklog::Fsync::Always),
        other => Err(format!("--fsync {other}: expected async or always")),
    }
}

fn parse_replication(s: &str) -> Result<ReplicationMode, String> {
    s.parse().map_err(|e: vmm::ft::output_rule::ModeError| e.to_string())
}

impl GroupArgs {
    fn group(&self) -> Result<GroupOptions, String> {
        let max_followers = self.max_followers as usize;
        let replication = self.replication.check(max_followers).map_err(|e| e.to_string())?;
        Ok(GroupOptions {
            timing: self.timing()?,
            replication,
            max_followers,
            name: self.group_name.unwrap_or_default(),
            security: self.security()?,
        })
    }

    fn security(&self) -> Result<vmm::host::tls::Security, String> {
        use vmm::host::tls::Security;
        match (&self.tls_dir, self.insecure) {
            (Some(dir), _) => Security::from_dir(dir).map_err(|e| e.to_string()),
            (None, true) => {
                eprintln!(
                    "WARNING: --insecure: replication runs in clear and unauthenticated; anyone who can reach its \
                     ports can read the VM's memory, acknowledge output it does not hold, and vote"
                );
                Ok(Security::Insecure)
            }
            (None, false) => Err("replication needs --tls-dir DIR (a member's certificates: `ftvmm certs init DIR` \
                                  makes them) or, on a trusted network only, --insecure"
                .into()),
        }
    }

    fn timing(&self) -> Result<Timing, String> {
        if self.failover_timeout_ms < 2 * self.heartbeat_ms {
            return Err(format!(
                "--failover-timeout-ms ({}) must be at least twice --heartbeat-ms ({}), or a healthy peer looks dead",
                self.failover_timeout_ms, self.heartbeat_ms
            ));
        }
        Ok(Timing {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            failover_timeout: Duration::from_millis(self.failover_timeout_ms),
            max_replay_lag: self.max_replay_lag_exits,
            backlog_bytes: usize::try_from(self.backlog_kib.map_or(self.backlog_mib << 20, |k| k << 10))
                .unwrap_or(usize::MAX),
            reconnect: Duration::from_secs(self.reconnect_secs),
            precopy: self.precopy == OnOff::On,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    /// Compute mixed with device exits, waits and clock reads.
    Selftest,
    /// Back-to-back device reads, for measuring the cost of an exit.
    ExitStorm,
    /// A Redis-protocol key-value server on port 6379 (needs --guest-ip).
    KvServer,
}

#[derive(Args)]
struct VmArgs {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=3072))]
    mem_mib: u64,
    /// Timer interrupts per second (0: no timer). Replay takes it from the log.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    tick_hz: u32,
    /// What the guest runs (default: kv-server with a NIC, selftest without).
    #[arg(long, value_enum)]
    workload: Option<WorkloadArg>,
    /// A guest kernel ELF other than the one built into this binary.
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// Stop at this exit index and print `state digest at exit N: <hex>`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    stop_at_exit: Option<u64>,
    /// Back the guest's NIC with this TAP device (created if missing). Needs --guest-ip.
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// The guest's address and prefix, e.g. 10.77.0.10/24. Gives the VM a NIC.
    #[arg(long, value_name = "ADDR/PREFIX")]
    guest_ip: Option<String>,
    /// The guest's default gateway.
    #[arg(long, value_name = "ADDR", requires = "guest_ip")]
    gateway: Option<String>,
    /// The guest's MAC (default: 52:54:00 and the last three bytes of --guest-ip).
    #[arg(long, value_name = "MAC", requires = "guest_ip")]
    mac: Option<String>,
    /// Serve status over HTTP here: /status (JSON; `ftvmm status ADDR`), /metrics (Prometheus), / (dashboard).
    #[arg(long, value_name = "ADDR:PORT")]
    status: Option<String>,
    /// Multi-leader sites: this VM's site (its guest KV server is a leader).
    #[arg(long, value_name = "N", requires_all = ["sites", "conflict"], value_parser = clap::value_parser!(u8).range(1..))]
    site_id: Option<u8>,
    /// Every site's site-link address, this one included: ID=IP:PORT,... (the same at every site).
    #[arg(long, value_name = "LIST", requires = "site_id")]
    sites: Option<String>,
    /// How concurrent writes to one key are resolved (the same at every site).
    #[arg(long, value_name = "lww|site-id|manual|merge", requires = "site_id")]
    conflict: Option<String>,
    /// Skew this site's guest clock on purpose (tests).
    #[arg(long, default_value_t = 0, value_name = "MS", allow_hyphen_values = true, requires = "site_id")]
    clock_offset_ms: i64,
    /// Pin every thread of this VMM to these CPUs, e.g. `1` or `0-1` (a primary and its
    /// follower on one machine then need not share cores, as on two hosts).
    #[arg(long = "cpu", value_name = "LIST", value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// Pin the vCPU thread alone to these CPUs; the other threads stay on --cpu.
    #[arg(long = "vcpu-cpu", value_name = "LIST", value_parser = parse_cpus)]
    vcpu_cpus: Option<CpuList>,
    /// A backup or replica member: open the TAP at once and keep the last second of
    /// what clients send the guest (the switch mirrors the guest's frames to this
    /// host: `scripts/netns.sh mirror on`); at go-live the guest gets what its old
    /// primary never logged, so a request in flight is answered without waiting for
    /// the client to resend it (docs/client-gap.md).
    #[arg(long, requires = "tap")]
    mirrored_input: bool,
    /// `run` and `primary`: before booting, listen this long for anyone answering ARP
    /// for the guest's address (a VM of it already serving, e.g. the backup that went
    /// live when this host's primary died); if someone does, refuse (exit 8). 0: no check.
    #[arg(long, value_name = "MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    address_check_ms: u64,
    /// The guest's wall clock at boot (Unix ms). Defaults to now for run, record and
    /// primary; a backup or replay of a site must be given the primary's value.
    #[arg(long, value_name = "MS", requires = "site_id")]
    boot_wall_ms: Option<u64>,
}

impl VmArgs {
    /// The guest's boot wall clock for a site: `--boot-wall-ms`, else now when `may_default`
    /// (a VM that boots fresh); a backup or replay must be told, or its boot info differs.
    fn boot_wall_ms(&self, may_default: bool) -> Result<u64, String> {
        match (self.boot_wall_ms, self.site_id) {
            (Some(ms), _) => Ok(ms),
            (None, None) => Ok(0),
            (None, Some(_)) if may_default => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let ms = now.as_millis() as u64;
                eprintln!("sites: guest boot wall clock --boot-wall-ms {ms} (give a backup or replay the same)");
                Ok(ms)
            }
            (None, Some(_)) => Err("a backup or replay of a site needs the primary's --boot-wall-ms".to_string()),
        }
    }

    fn options(&self, boot_wall_ms: u64) -> Result<VmOptions, NetConfigError> {
        let net = netcfg::parse(self.guest_ip.as_deref(), self.gateway.as_deref(), self.mac.as_deref())?;
        let site_flags = netcfg::SiteFlags {
            site_id: self.site_id,
            sites: self.sites.as_deref(),
            conflict: self.conflict.as_deref(),
            clock_offset_ms: self.clock_offset_ms,
            boot_wall_ms,
        };
        let net = netcfg::parse_sites(net, &site_flags)?;
        if self.tap.is_some() && net.present == 0 {
            return Err(NetConfigError::TapWithoutAddress);
        }
        let workload = match self.workload {
            Some(WorkloadArg::Selftest) => Workload::SelfTest,
            Some(WorkloadArg::ExitStorm) => Workload::ExitStorm,
            Some(WorkloadArg::KvServer) => Workload::KvServer,
            None if net.present != 0 => Workload::KvServer,
            None => Workload::SelfTest,
        };
        Ok(VmOptions {
            mem_size: self.mem_mib << 20,
            tick_hz: self.tick_hz,
            workload,
            kernel: self.kernel.clone(),
            stop_at_exit: self.stop_at_exit,
            net,
            tap: self.tap.clone(),
            status: self.status.clone(),
            arbiter: None,
            guest_flags: String::new(),
            cpus: self.cpus.clone(),
            vcpu_cpus: self.vcpu_cpus.clone(),
            mirrored_input: self.mirrored_input,
            address_check: std::time::Duration::from_millis(self.address_check_ms),
        })
    }
}

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    CpuList::parse_here(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    let (vm, mode, arbiter) = match cli.command {
        Command::Status { addr, watch: true, .. } => return watch::run(&addr),
        Command::Arbiter { command } => return arbiter_cmd::run(&command),
        Command::Status { addr, metrics, .. } => {
            return print_status(&addr, if metrics { "/metrics" } else { "/status" })
        }
        Command::Certs { action: CertsAction::Init { dir, members } } => return certs_init(&dir, &members),
        Command::Run(vm) => (vm, Mode::Run, None),
        Command::Record { vm, log_file } => (vm, Mode::Record(log_file), None),
        Command::Replay { vm, log_file } => (vm, Mode::Replay(log_file), None),
        Command::Primary { vm, listen, group: args, disk } => match args.group() {
            Ok(group) => (vm, Mode::Primary { listen, group, data_dir: disk.data_dir() }, args.arbiter),
            Err(e) => return usage_error(&e),
        },
        Command::Backup { vm, primary, connect_timeout_secs, listen, group: args, disk } => match args.group() {
            Ok(group) => {
                let connect_within = Duration::from_secs(connect_timeout_secs);
                let data_dir = disk.data_dir();
                (vm, Mode::Backup { primary, group, connect_within, listen, data_dir }, args.arbiter)
            }
            Err(e) => return usage_error(&e),
        },
        Command::Replica { vm, id, group, witness, priority, data_dir, checkpoint_secs, fsync, group_args } => {
            match group_args.group() {
                Ok(g) => {
                    if group_args.arbiter.is_some() {
                        return usage_error("a replica group takes --witness, not --arbiter");
                    }
                    let disk = vmm::ft::recovery::DataDir {
                        dir: data_dir.clone(),
                        checkpoint_every: Duration::from_secs(checkpoint_secs),
                        fsync,
                    };
                    let member = launch::ReplicaOptions { id, group, priority, witness, data_dir, disk };
                    (vm, Mode::Replica { member, group: g }, None)
                }
                Err(e) => return usage_error(&e),
            }
        }
    };
    let mut vm = vm;
    if let Mode::Replay(path) = &mode {
        if let Some(recorded) = recorded_flags::read(path) {
            if let Err(e) = vm.adopt_recorded(&recorded) {
                eprintln!("error: {e}");
                return ExitCode::from(launch::exit_code::BAD_LOG);
            }
        }
    }
    let fresh_boot = matches!(mode, Mode::Run | Mode::Record(_) | Mode::Primary { .. });
    let boot_wall_ms = match vm.boot_wall_ms(fresh_boot) {
        Ok(ms) => ms,
        Err(e) => return usage_error(&e),
    };
    let options = match vm.options(boot_wall_ms) {
        Ok(o) => VmOptions { arbiter, guest_flags: vm.recorded_flags(boot_wall_ms), ..o },
        Err(e) => return usage_error(&e.to_string()),
    };
    let result = launch::launch(&options, &mode).map_err(anyhow::Error::from);
    if let (Mode::Replica { group, .. }, Err(e)) = (&mode, &result) {
        if e.downcast_ref::<LaunchError>().map(LaunchError::exit_code) == Some(launch::exit_code::STOOD_DOWN) {
            rejoin_as_follower(&error_chain(e), group.timing.failover_timeout);
        }
    }
    match result {
        Ok(report) => {
            if let Some(line) = report.digest_line {
                println!("{line}");
            }
            ExitCode::from(report.exit_code)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            let code = e.downcast_ref::<LaunchError>().map_or(1, LaunchError::exit_code);
            ExitCode::from(code)
        }
    }
}

/// A replica group member that stood down (it lost its majority, or its stream broke in
/// a way that forbids going live) comes back as a follower: the process starts over
/// with the same command and a fresh VM, and joins the current primary by state
/// transfer. Its ballot is on disk, so it remembers its votes. Returns only if the
/// exec failed.
fn rejoin_as_follower(why: &str, pause: Duration) {
    use std::os::unix::process::CommandExt;
    eprintln!("ftvmm: stood down ({why}); rejoining the group as a follower");
    std::thread::sleep(pause);
    let err = std::process::Command::new("/proc/self/exe").args(std::env::args_os().skip(1)).exec();
    eprintln!("error: cannot restart to rejoin the group: {err}");
}

fn certs_init(dir: &std::path::Path, members: &str) -> ExitCode {
    use vmm::host::tls::certs;
    let made = certs::member_names(members).and_then(|names| certs::init(dir, &names));
    match made {
        Ok(dirs) => {
            println!("group CA: {}/ca.pem (its key {}/ca.key: keep it off the members)", dir.display(), dir.display());
            for d in dirs {
                println!("member:   --tls-dir {}", d.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e.to_string()),
    }
}

fn print_status(addr: &str, path: &str) -> ExitCode {
    match vmm::host::http::fetch(addr, path, Duration::from_secs(2)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot read the status of an ftvmm at {addr}: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// The error and its causes, skipping a cause whose text the message already includes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}
