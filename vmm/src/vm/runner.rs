//! The vCPU loop: `KVM_RUN`, classify the exit, and at every counted exit hand
//! over to the driver — live (timer, TAP frames, optional recorder) or replay
//! (a log) — which decides what enters the guest at that exit. Nothing else
//! happens on this thread.
use crate::devices::bus::{Bus, DeviceEffect, GuestFault, Output};
use crate::host::status::{Role, Stats};
use crate::vm::digest::{self, DigestError};
use crate::vm::exit::{handle_exit, CountedExit, ExitAction, FatalExit};
use crate::vm::kvm_ext::inject_interrupt;
use crate::vm::live::LiveDriver;
use crate::vm::machine::Machine;
use crate::vm::recorder::RecordError;
use crate::vm::replay::ReplayDriver;
use crate::vm::replayer::ReplayError;
use crate::vm::snapshot;
use crossbeam_channel::Sender;
use kvm_ioctls::VcpuFd;
use logging_channel::{EndReason, ExitSig, Hash};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;

/// Kicks (10 ms apart) a stopping live VM gets to reach its next counted exit.
const MAX_KICKS_TO_STOP: u32 = 200;

/// A register digest goes into the log every this many exits.
pub const DIGEST_EVERY: u64 = 1 << 14;
/// A digest of the whole machine (registers and memory) goes into the log every this
/// many exits: memory that drifts is caught here rather than only at the end.
pub const FULL_DIGEST_EVERY: u64 = 1 << 17;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("KVM_RUN failed at exit {index}: {source}")]
    Run {
        index: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("the VM stopped at exit {index}: {exit}")]
    Fatal { index: u64, exit: FatalExit },
    #[error("the guest crashed at exit {index}: {fault}")]
    GuestFault { index: u64, fault: GuestFault },
    #[error("injecting vector {vector} at exit {index} failed: {source}")]
    Inject {
        index: u64,
        vector: u8,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("standing down: {0}")]
    StandDown(String),
}

/// Output produced at a counted exit; the Output Rule releases it by that index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputItem {
    pub exit_index: u64,
    pub output: Output,
    /// When the guest produced it: held time is measured from here.
    pub produced: Instant,
}

pub enum Driver {
    Live(LiveDriver),
    Replay(ReplayDriver),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    StopAtExit,
    PowerOff(u32),
    Shutdown,
    /// Replay reached the log's end record.
    EndOfLog(EndReason),
}

#[derive(Debug)]
pub struct Outcome {
    pub finish: Finish,
    pub exit_index: u64,
    pub digest: Hash,
    pub interrupts: u64,
    /// Time spent in the loop, boot and final digest excluded.
    pub elapsed: Duration,
}

pub enum Step {
    Continue,
    Finish(Finish),
    /// A backup's log has ended: this exit and all later ones are live.
    GoLive(Box<LiveDriver>),
}

/// The VM as a driver sees it at one counted exit.
pub struct ExitContext<'a> {
    pub index: u64,
    pub exit: &'a CountedExit,
    pub wants_wait: bool,
    /// The exit produced output (which the Output Rule will hold until the backup acks it).
    pub produced_output: bool,
    pub vcpu: &'a mut VcpuFd,
    pub bus: &'a mut Bus,
    pub mem: &'a GuestMemoryMmap,
    pub interrupts: &'a mut u64,
}

impl ExitContext<'_> {
    /// What the guest is doing at this exit, as a log entry records it.
    pub fn sig(&self) -> Result<ExitSig, RunError> {
        Ok(ExitSig {
            kind: self.exit.kind,
            addr: self.exit.addr,
            data: self.exit.data,
            regs_hash: digest::regs_hash64(self.vcpu)?,
        })
    }

    /// The guest can take an external interrupt now (RFLAGS.IF set, no interrupt shadow).
    pub fn can_inject(&mut self) -> bool {
        let run = self.vcpu.get_kvm_run();
        run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    pub fn inject(&mut self, vector: u8) -> Result<(), RunError> {
        inject_interrupt(self.vcpu, vector).map_err(|source| RunError::Inject { index: self.index, vector, source })?;
        *self.interrupts += 1;
        Ok(())
    }
}

pub struct Runner {
    first_index: u64,
    stats: Arc<Stats>,
    machine: Machine,
    driver: Driver,
    stop_at: Option<u64>,
    output: Sender<OutputItem>,
    stop: Arc<AtomicBool>,
}

impl Runner {
    pub fn new(
        machine: Machine,
        driver: Driver,
        stop_at: Option<u64>,
        output: Sender<OutputItem>,
        stop: Arc<AtomicBool>,
        stats: Arc<Stats>,
    ) -> Runner {
        Runner { first_index: 0, stats, machine, driver, stop_at, output, stop }
    }

    /// A VM restored from a state taken at exit `index` counts on from there.
    pub fn starting_after(mut self, index: u64) -> Runner {
        self.first_index = index;
        self
    }

    pub fn run(mut self) -> Result<Outcome, RunError> {
        let mut index = self.first_index;
        let mut interrupts = 0u64;
        let mut kicks_while_stopping = 0u32;
        let started = Instant::now();
        let finish = loop {
            let action = match self.machine.vcpu.run() {
                Ok(exit) => handle_exit(exit, &mut self.machine.buses, &self.machine.mem),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => ExitAction::Uncounted,
                Err(source) => return Err(RunError::Run { index, source }),
            };
            let exit = match action {
                ExitAction::Counted(exit) => exit,
                // A live VM stops at its next counted exit (the live driver sees the stop there),
                // so its final state is one a replay reaches too; a replay, or a guest that
                // makes no exit for a long time, stops where it is.
                ExitAction::Uncounted if self.stop.load(Ordering::Relaxed) => {
                    kicks_while_stopping += 1;
                    if matches!(self.driver, Driver::Replay(_)) || kicks_while_stopping > MAX_KICKS_TO_STOP {
                        break Finish::Shutdown;
                    }
                    continue;
                }
                ExitAction::Uncounted => continue,
                ExitAction::Fatal(exit) => return Err(RunError::Fatal { index, exit }),
            };
            index += 1;
            self.stats.exit_index.store(index, Ordering::Relaxed);
            match self.on_counted_exit(index, exit, &mut interrupts)? {
                Step::Continue => {}
                Step::Finish(f) => break f,
                Step::GoLive(live) => {
                    self.stats.set_role(Role::Live);
                    self.stats.epoch.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(exit = index, "replayed the whole log: this VM is live from here on");
                    self.driver = Driver::Live(*live);
                }
            }
        };
        let elapsed = started.elapsed();
        // The state we hash is the state after the last counted exit.
        snapshot::complete_pending_instruction(&mut self.machine.vcpu);
        let digest = digest::state_digest(&self.machine.vcpu, &self.machine.mem)?;
        match self.driver {
            Driver::Live(live) => live.finish(index, finish, digest)?,
            Driver::Replay(replay) => replay.finish(index, finish, self.stop_at, &digest)?,
        }
        Ok(Outcome { finish, exit_index: index, digest, interrupts, elapsed })
    }

    fn on_counted_exit(&mut self, index: u64, mut exit: CountedExit, interrupts: &mut u64) -> Result<Step, RunError> {
        let (wants_wait, output) = match std::mem::replace(&mut exit.effect, DeviceEffect::None) {
            DeviceEffect::None => (false, None),
            DeviceEffect::Wait => (true, None),
            DeviceEffect::Output(output) => (false, Some(output)),
            DeviceEffect::PowerOff(code) => return Ok(Step::Finish(Finish::PowerOff(code))),
            DeviceEffect::GuestFault(fault) => return Err(RunError::GuestFault { index, fault }),
        };
        let produced_output = output.is_some();
        let mut ctx = ExitContext {
            index,
            exit: &exit,
            wants_wait,
            produced_output,
            vcpu: &mut self.machine.vcpu,
            bus: &mut self.machine.buses.mmio,
            mem: &self.machine.mem,
            interrupts,
        };
        let step = match &mut self.driver {
            Driver::Live(live) => live.at_exit(&mut ctx, self.stop_at),
            Driver::Replay(replay) => replay.at_exit(&mut ctx, self.stop_at),
        };
        // Handed over after the driver logged this exit: on a primary, the log write that
        // starts the backup's ack is the critical path, and waking the output thread first
        // could delay it. (The output thread may be gone at shutdown; the VM must not care.)
        if let Some(output) = output {
            let _ = self.output.send(OutputItem { exit_index: index, output, produced: Instant::now() });
        }
        step
    }
}
