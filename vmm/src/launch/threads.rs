//! The threads of a running VM and how it is stopped.
//!
//! `vcpu0` runs the loop; `output` releases the guest's output (the Output
//! Rule lives there); `signals` turns SIGINT and SIGTERM into a clean stop,
//! kicking `vcpu0` out of `KVM_RUN` until it has stopped. Recording and
//! replication add `log-tx`, `ack-rx`, `log-rx`; a NIC adds `nic-rx`.
use super::LaunchError;
use crate::ft::attach::Attacher;
use crate::ft::member::Member;
use crate::ft::release::{Control, SharedReleaser};
use crate::ft::takeover::Takeover;
use crate::host::affinity::CpuList;
use crate::host::status::Stats;
use crate::vm::driver::RunError;
use crate::vm::live::VmEvent;
use crate::vm::machine::Machine;
use crate::vm::outbox::outbox;
use crate::vm::runner::{Driver, Outcome, Runner, Yield};
use crossbeam_channel::{Receiver, Sender};
use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the vCPU thread runs.
pub enum Program {
    /// A VM on its own (run, record, replay).
    Plain,
    /// A group member: the core attaches followers and takes over at the loop's stops.
    Member { attacher: Option<Attacher>, takeover: Option<Box<Takeover>> },
}

impl Program {
    fn run(self, mut runner: Runner) -> Result<Outcome, RunError> {
        match self {
            Program::Member { attacher, takeover } => Member { runner, attacher, takeover: takeover.map(|t| *t) }.run(),
            Program::Plain => loop {
                match runner.run()? {
                    Yield::Done(outcome) => return Ok(outcome),
                    Yield::Attach(_) => tracing::warn!("a follower asked to join a VM that takes none; ignored"),
                    Yield::LogEnded { .. } => {
                        return Err(RunError::StandDown("the log ended and this VM cannot go live".into()))
                    }
                }
            },
        }
    }
}

/// How the guest's output leaves: the releaser (policy, TAP) and its control channel.
pub struct OutputPlan {
    pub stats: Arc<Stats>,
    pub releaser: SharedReleaser,
    pub control: Receiver<Control>,
    /// Where the vCPU thread runs, if pinned apart from the others (`--vcpu-cpu`).
    pub vcpu_cpus: Option<CpuList>,
}

/// Runs the VM on `vcpu0` (with the output thread beside it) until it stops.
#[allow(clippy::too_many_arguments)]
pub fn run_threads(
    machine: Machine,
    driver: Driver,
    program: Program,
    first_index: u64,
    stop_at: Option<u64>,
    output: OutputPlan,
    events: Sender<VmEvent>,
    signals: &Signals,
) -> Result<Outcome, LaunchError> {
    install_kick_handler();
    let (output_tx, output_rx) = outbox();
    let stop = Arc::new(AtomicBool::new(false));
    let exit_counter = output.stats.exit_index.clone();
    let vcpu_cpus = output.vcpu_cpus;
    let output = output.releaser.spawn(output_rx, output.control).map_err(|e| LaunchError::Thread("output", e))?;
    let runner =
        Runner::new(machine, driver, stop_at, output_tx, stop.clone(), exit_counter).starting_after(first_index);
    let alive = Arc::new(Mutex::new(true));
    let vcpu_alive = alive.clone();
    let vcpu = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || {
            // A failed pin leaves the thread where --cpu put it: worth a warning, not a stop.
            if let Some(Err(e)) = vcpu_cpus.map(|c| c.pin_current_thread("the vCPU thread")) {
                tracing::warn!("{e}");
            }
            let result = program.run(runner);
            *vcpu_alive.lock().unwrap_or_else(|p| p.into_inner()) = false;
            result
        })
        .map_err(|e| LaunchError::Thread("vcpu0", e))?;
    signals.attach(Target { vcpu: vcpu.as_pthread_t(), stop, events, alive });
    let result = vcpu.join().map_err(|_| LaunchError::VcpuPanicked)?;
    // The runner dropped its output sender; the output thread drains and ends.
    let _ = output.join();
    Ok(result?)
}

/// SIGINT/SIGTERM are taken by the `signals` thread alone (threads inherit the mask).
pub fn block_stop_signals() {
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

/// The running VM the `signals` thread stops.
struct Target {
    vcpu: libc::pthread_t,
    stop: Arc<AtomicBool>,
    events: Sender<VmEvent>,
    /// True while vcpu0 may still be in KVM_RUN. Kicks happen only while holding this
    /// lock, so the thread kicked cannot have exited (and its id been reused).
    alive: Arc<Mutex<bool>>,
}

/// SIGINT/SIGTERM handling, from before the guest boots (a primary waiting for its
/// backup, a backup receiving state) to the end of the run.
#[derive(Clone, Default)]
pub struct Signals {
    target: Arc<Mutex<Option<Target>>>,
}

impl Signals {
    /// Starts the `signals` thread. Call after [`block_stop_signals`].
    pub fn start() -> Result<Signals, LaunchError> {
        let signals = Signals::default();
        let me = signals.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || me.wait_and_stop())
            .map_err(|e| LaunchError::Thread("signals", e))?;
        Ok(signals)
    }

    fn attach(&self, target: Target) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
    }

    fn wait_and_stop(&self) {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        let Ok(sig) = set.wait() else { return };
        let guard = self.target.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = guard.as_ref() else {
            // Nothing runs yet: nothing to flush, nobody to tell but the peer, which sees
            // the connection close.
            tracing::info!("{sig:?} before the guest started: exiting");
            std::process::exit(0);
        };
        tracing::info!("{sig:?}: stopping the VM");
        t.stop.store(true, Ordering::Relaxed);
        let _ = t.events.send(VmEvent::Stop);
        // The vCPU may be between its stop check and KVM_RUN; kick until it is out.
        loop {
            {
                let alive = t.alive.lock().unwrap_or_else(|p| p.into_inner());
                if !*alive {
                    return;
                }
                let _ = nix::sys::pthread::pthread_kill(t.vcpu, Signal::SIGUSR1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
