//! Putting a VM together for one command: machine, driver, threads, signals.
//!
//! Threads: `vcpu0` runs the loop; `console-out` writes the guest's console to
//! stdout; `log-tx` writes the log when recording; `signals` turns SIGINT and
//! SIGTERM into a clean stop, kicking `vcpu0` out of `KVM_RUN` until it stops.
use crate::bus::Output;
use crate::digest;
use crate::guest_image::{self, ImageError};
use crate::live::{LiveDriver, VmEvent};
use crate::machine::{Machine, MachineConfig, MachineError};
use crate::recorder::{RecordError, Recorder};
use crate::replay_driver::ReplayDriver;
use crate::replayer::ReplayError;
use crate::runner::{Driver, Finish, Outcome, OutputItem, RunError, Runner};
use crate::tap::{Tap, TapError};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use guest_abi::{NetConfig, Workload};
use logging_channel::{FileError, LogReader};
use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct VmOptions {
    pub mem_size: u64,
    pub tick_hz: u32,
    pub workload: Workload,
    pub kernel: Option<PathBuf>,
    pub stop_at_exit: Option<u64>,
    pub net: NetConfig,
    /// The TAP device that backs the NIC (run and record only).
    pub tap: Option<String>,
}

pub enum Mode {
    Run,
    Record(PathBuf),
    Replay(PathBuf),
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
}

impl LaunchError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Machine(MachineError::NoKvm(_)) => exit_code::NO_KVM,
            LaunchError::BadLog { .. } | LaunchError::Run(RunError::Replay(ReplayError::Log(_))) => exit_code::BAD_LOG,
            LaunchError::Run(RunError::Replay(ReplayError::NoEnd { .. })) => exit_code::BAD_LOG,
            LaunchError::Run(RunError::Replay(_)) => exit_code::DIVERGENCE,
            LaunchError::Run(RunError::GuestFault { .. }) => exit_code::GUEST_FAILED,
            _ => exit_code::ERROR,
        }
    }
}

pub fn launch(opts: &VmOptions, mode: &Mode) -> Result<Report, LaunchError> {
    // Before any thread exists, so that every thread inherits the mask and only
    // `signals` ever takes SIGINT/SIGTERM (default delivery would kill the process
    // without flushing the log).
    block_stop_signals();
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
    let machine = Machine::new(&config, &image)?;
    let tap = opts.tap.as_deref().map(Tap::open).transpose()?;
    let (events_tx, events_rx) = bounded::<VmEvent>(4096);
    let driver = match (mode, replay_log) {
        (Mode::Replay(path), Some((reader, recorded))) => {
            recorded
                .check_matches(&machine.header)
                .map_err(|source| LaunchError::BadLog { path: path.display().to_string(), source })?;
            Driver::Replay(ReplayDriver::new(Box::new(reader)))
        }
        (Mode::Record(path), _) => {
            let recorder = Recorder::create(path, &machine.header)?;
            Driver::Live(LiveDriver::new(config.tick_hz, Some(Box::new(recorder)), events_rx))
        }
        _ => Driver::Live(LiveDriver::new(config.tick_hz, None, events_rx)),
    };
    if let Some(tap) = &tap {
        tap.spawn_reader(events_tx.clone(), VmEvent::Frame).map_err(|e| LaunchError::Thread("nic-rx", e))?;
        tracing::info!(tap = tap.name(), "NIC attached to TAP");
    }
    tracing::info!(
        mem_mib = config.mem_size >> 20,
        tick_hz = config.tick_hz,
        image = %logging_channel::short_hex(&machine.header.guest_image_digest),
        "booting guest"
    );
    let outcome = run_threads(machine, driver, opts.stop_at_exit, tap, events_tx)?;
    Ok(report(&outcome, opts.stop_at_exit))
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

fn run_threads(
    machine: Machine,
    driver: Driver,
    stop_at: Option<u64>,
    tap: Option<Tap>,
    events: Sender<VmEvent>,
) -> Result<Outcome, LaunchError> {
    install_kick_handler();
    let (output_tx, output_rx) = unbounded::<OutputItem>();
    let stop = Arc::new(AtomicBool::new(false));
    let output = spawn_output_thread(output_rx, tap)?;
    let runner = Runner::new(machine, driver, stop_at, output_tx, stop.clone());
    // True while vcpu0 may still be in KVM_RUN. The signal thread kicks only while holding
    // this lock, so the thread it kicks cannot have exited (and its id been reused).
    let alive = Arc::new(Mutex::new(true));
    let vcpu_alive = alive.clone();
    let vcpu = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || {
            let result = runner.run();
            *vcpu_alive.lock().unwrap_or_else(|p| p.into_inner()) = false;
            result
        })
        .map_err(|e| LaunchError::Thread("vcpu0", e))?;
    spawn_signal_thread(vcpu.as_pthread_t(), stop, events, alive)?;
    let result = vcpu.join().map_err(|_| LaunchError::VcpuPanicked)?;
    // The runner dropped its output sender; the output thread drains and ends.
    let _ = output.join();
    Ok(result?)
}

/// `output`: the guest's console to stdout, its frames to the TAP (dropped without one).
fn spawn_output_thread(
    items: Receiver<OutputItem>,
    tap: Option<Tap>,
) -> Result<std::thread::JoinHandle<()>, LaunchError> {
    std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            let mut out = std::io::stdout().lock();
            for item in items {
                match item.output {
                    Output::Console(bytes) => {
                        let _ = out.write_all(&bytes).and_then(|()| out.flush());
                    }
                    Output::Frames(frames) => {
                        if let Some(tap) = &tap {
                            frames.iter().for_each(|f| tap.send(f));
                        }
                    }
                }
            }
        })
        .map_err(|e| LaunchError::Thread("output", e))
}

/// SIGINT/SIGTERM are taken by the `signals` thread alone (threads inherit the mask).
fn block_stop_signals() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if let Err(e) = set.thread_block() {
        tracing::warn!("cannot block SIGINT/SIGTERM ({e}); Ctrl-C will kill the VM without a clean stop");
    }
}

extern "C" fn on_kick(_: libc::c_int) {}

/// SIGUSR1 only has to interrupt `KVM_RUN`; its handler does nothing.
fn install_kick_handler() {
    let action = signal::SigAction::new(SigHandler::Handler(on_kick), signal::SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler is async-signal-safe (it does nothing), and replacing SIGUSR1's
    // disposition affects only this process, which uses SIGUSR1 for nothing else.
    if let Err(e) = unsafe { signal::sigaction(Signal::SIGUSR1, &action) } {
        tracing::warn!("cannot install the vCPU kick handler ({e}); stopping may wait for the guest's next exit");
    }
}

fn spawn_signal_thread(
    vcpu: libc::pthread_t,
    stop: Arc<AtomicBool>,
    events: Sender<VmEvent>,
    alive: Arc<Mutex<bool>>,
) -> Result<(), LaunchError> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut set = SigSet::empty();
            set.add(Signal::SIGINT);
            set.add(Signal::SIGTERM);
            let Ok(sig) = set.wait() else { return };
            tracing::info!("{sig:?}: stopping the VM");
            stop.store(true, Ordering::Relaxed);
            let _ = events.send(VmEvent::Stop);
            // The vCPU may be between its stop check and KVM_RUN; kick until it is out.
            loop {
                {
                    let alive = alive.lock().unwrap_or_else(|p| p.into_inner());
                    if !*alive {
                        return;
                    }
                    let _ = nix::sys::pthread::pthread_kill(vcpu, Signal::SIGUSR1);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .map_err(|e| LaunchError::Thread("signals", e))?;
    Ok(())
}
