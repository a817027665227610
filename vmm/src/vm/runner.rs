//! The vCPU loop: `KVM_RUN`, classify the exit, and at every counted exit hand
//! over to the driver — live (timer, TAP frames, optional log sink) or replay
//! (a log) — which decides what enters the guest at that exit.
//!
//! The loop knows nothing about replication. Where the fault-tolerance core
//! must act — a follower attaching at this exit, a follower's log ending — the
//! loop stops and [`Runner::run`] returns a [`Yield`]; the caller does its work
//! with [`Runner::at_exit`] or [`Runner::switch_to_live`] and calls `run` again,
//! which carries on from the next exit.
use crate::devices::bus::DeviceEffect;
use crate::vm::digest;
use crate::vm::driver::{Attaching, ExitContext, Finish, OutputItem, RunError, Step};
use crate::vm::exit::{handle_exit, CountedExit, ExitAction};
use crate::vm::live::LiveDriver;
use crate::vm::machine::{AtExit, Machine};
use crate::vm::outbox::Outbox;
use crate::vm::replay::ReplayDriver;
use crate::vm::snapshot;
use logging_channel::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kicks (10 ms apart) a stopping live VM gets to reach its next counted exit.
const MAX_KICKS_TO_STOP: u32 = 200;

/// Who decides what enters the guest at each exit.
pub enum Driver {
    Live(LiveDriver),
    Replay(ReplayDriver),
}

/// How a finished run went.
#[derive(Debug)]
pub struct Outcome {
    pub finish: Finish,
    pub exit_index: u64,
    pub digest: Hash,
    pub interrupts: u64,
    /// Time spent in the loop, boot and final digest excluded.
    pub elapsed: Duration,
}

/// Why [`Runner::run`] returned.
#[derive(Debug)]
pub enum Yield {
    /// The run is over.
    Done(Outcome),
    /// A follower wants the state as of the current exit.
    Attach(Attaching),
    /// A follower's log ended; the current exit is the first one nothing was logged for.
    LogEnded {
        /// The last exit replayed from the log.
        last_replayed: u64,
    },
}

/// The vCPU loop and the VM it runs.
pub struct Runner {
    index: u64,
    interrupts: u64,
    kicks_while_stopping: u32,
    elapsed: Duration,
    exit_counter: Arc<AtomicU64>,
    machine: Machine,
    driver: Driver,
    stop_at: Option<u64>,
    output: Outbox,
    stop: Arc<AtomicBool>,
}

impl Runner {
    /// A loop over `machine` driven by `driver`; output goes to `output`, the exit
    /// index is published in `exit_counter`, and `stop` asks for a clean stop.
    pub fn new(
        machine: Machine,
        driver: Driver,
        stop_at: Option<u64>,
        output: Outbox,
        stop: Arc<AtomicBool>,
        exit_counter: Arc<AtomicU64>,
    ) -> Runner {
        Runner {
            index: 0,
            interrupts: 0,
            kicks_while_stopping: 0,
            elapsed: Duration::ZERO,
            exit_counter,
            machine,
            driver,
            stop_at,
            output,
            stop,
        }
    }

    /// A VM restored from a state taken at exit `index` counts on from there.
    pub fn starting_after(mut self, index: u64) -> Runner {
        self.index = index;
        self
    }

    /// The VM at the exit the loop stopped at.
    pub fn at_exit(&mut self) -> AtExit<'_> {
        self.machine.at_exit(self.index)
    }

    /// The VM's state was just replaced by one taken at exit `index` (a follower that
    /// received a new state): the loop counts on from there, driven by `driver`.
    pub fn restart_after(&mut self, index: u64, driver: Driver) {
        self.index = index;
        self.exit_counter.store(index, Ordering::Relaxed);
        self.driver = driver;
    }

    /// From the next exit on, the VM is live.
    pub fn switch_to_live(&mut self, live: LiveDriver) {
        self.driver = Driver::Live(live);
    }

    /// Runs until the VM stops or the fault-tolerance core must act.
    pub fn run(&mut self) -> Result<Yield, RunError> {
        let started = Instant::now();
        let result = self.run_until_yield();
        self.elapsed += started.elapsed();
        let finish = match result? {
            Ok(finish) => finish,
            Err(pause) => return Ok(pause),
        };
        // The state we hash is the state after the last counted exit.
        snapshot::complete_pending_instruction(&mut self.machine.vcpu);
        let digest = digest::state_digest(&self.machine.vcpu, &self.machine.mem)?;
        match &mut self.driver {
            Driver::Live(live) => live.finish(self.index, finish, digest)?,
            Driver::Replay(replay) => replay.finish(self.index, finish, self.stop_at, &digest)?,
        }
        let outcome =
            Outcome { finish, exit_index: self.index, digest, interrupts: self.interrupts, elapsed: self.elapsed };
        Ok(Yield::Done(outcome))
    }

    /// `Ok(Ok(finish))` when the run is over, `Ok(Err(yield))` at a stop point.
    fn run_until_yield(&mut self) -> Result<Result<Finish, Yield>, RunError> {
        loop {
            let index = self.index;
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
                    self.kicks_while_stopping += 1;
                    if matches!(self.driver, Driver::Replay(_)) || self.kicks_while_stopping > MAX_KICKS_TO_STOP {
                        return Ok(Ok(Finish::Shutdown));
                    }
                    continue;
                }
                ExitAction::Uncounted => continue,
                ExitAction::Fatal(exit) => return Err(RunError::Fatal { index, exit }),
            };
            self.index += 1;
            self.exit_counter.store(self.index, Ordering::Relaxed);
            match self.on_counted_exit(exit)? {
                Step::Continue => {}
                Step::Finish(f) => return Ok(Ok(f)),
                Step::Attach(conn) => return Ok(Err(Yield::Attach(conn))),
                Step::LogEnded => return Ok(Err(Yield::LogEnded { last_replayed: self.index - 1 })),
            }
        }
    }

    fn on_counted_exit(&mut self, mut exit: CountedExit) -> Result<Step, RunError> {
        let index = self.index;
        let (wants_wait, output) = match std::mem::replace(&mut exit.effect, DeviceEffect::None) {
            DeviceEffect::None => (false, None),
            DeviceEffect::Wait => (true, None),
            DeviceEffect::Output(output) => (false, Some(output)),
            DeviceEffect::PowerOff(code) => return Ok(Step::Finish(Finish::PowerOff(code))),
            DeviceEffect::GuestFault(fault) => return Err(RunError::GuestFault { index, fault }),
        };
        let produced_output = output.is_some();
        // Queued before the driver logs this exit: the ack that lets it go can only come
        // after the log, and whoever releases on that ack finds it queued (vm::outbox).
        // The output thread is not woken for it unless it must be.
        if let Some(output) = output {
            self.output.send(OutputItem { exit_index: index, output, produced: Instant::now() });
        }
        let mut ctx = ExitContext {
            index,
            exit: &exit,
            wants_wait,
            produced_output,
            vcpu: &mut self.machine.vcpu,
            bus: &mut self.machine.buses.mmio,
            mem: &self.machine.mem,
            interrupts: &mut self.interrupts,
        };
        match &mut self.driver {
            Driver::Live(live) => live.at_exit(&mut ctx, self.stop_at),
            Driver::Replay(replay) => replay.at_exit(&mut ctx, self.stop_at),
        }
    }
}
