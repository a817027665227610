//! `ftvmm`: the command line. Errors get context here and become exit codes.
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vmm::launch::{self, LaunchError, Mode, VmOptions};

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
    /// Run a fresh VM from a log alone (no timer, no device input) and check it does what was recorded.
    Replay {
        #[command(flatten)]
        vm: VmArgs,
        /// The log written by `ftvmm record`.
        #[arg(long = "log", value_name = "FILE")]
        log_file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    /// Compute mixed with device exits, waits and clock reads.
    Selftest,
    /// Back-to-back device reads, for measuring the cost of an exit.
    ExitStorm,
}

#[derive(Args)]
struct VmArgs {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=3072))]
    mem_mib: u64,
    /// Timer interrupts per second (0: no timer). Replay takes it from the log.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    tick_hz: u32,
    /// What the guest runs.
    #[arg(long, value_enum, default_value = "selftest")]
    workload: WorkloadArg,
    /// A guest kernel ELF other than the one built into this binary.
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// Stop at this exit index and print `state digest at exit N: <hex>`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    stop_at_exit: Option<u64>,
}

impl VmArgs {
    fn options(&self) -> VmOptions {
        VmOptions {
            mem_size: self.mem_mib << 20,
            tick_hz: self.tick_hz,
            workload: match self.workload {
                WorkloadArg::Selftest => guest_abi::Workload::SelfTest,
                WorkloadArg::ExitStorm => guest_abi::Workload::ExitStorm,
            },
            kernel: self.kernel.clone(),
            stop_at_exit: self.stop_at_exit,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let (vm, mode) = match cli.command {
        Command::Run(vm) => (vm, Mode::Run),
        Command::Record { vm, log_file } => (vm, Mode::Record(log_file)),
        Command::Replay { vm, log_file } => (vm, Mode::Replay(log_file)),
    };
    let result = launch::launch(&vm.options(), &mode).map_err(anyhow::Error::from);
    match result {
        Ok(report) => {
            if let Some(line) = report.digest_line {
                println!("{line}");
            }
            ExitCode::from(report.exit_code)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            let code = e
                .downcast_ref::<LaunchError>()
                .map_or(1, LaunchError::exit_code);
            ExitCode::from(code)
        }
    }
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
