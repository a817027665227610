//! The vCPU loop: `KVM_RUN`, classify the exit, and at every counted exit let
//! the driver (live timer + optional recorder, or a replayed log) decide what
//! to inject. Nothing else happens on this thread.
use crate::bus::{DeviceEffect, GuestFault};
use crate::clock::TickClock;
use crate::digest::{self, DigestError};
use crate::exit::{handle_exit, CountedExit, ExitAction, FatalExit};
use crate::kvm_ext::inject_interrupt;
use crate::machine::Machine;
use crate::recorder::{RecordError, Recorder};
use crate::replayer::{check_sig, AtExit, ReplayError, Replayer};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use guest_abi::vector;
use logging_channel::{DigestScope, EndReason, Event, ExitSig, Hash, Record};
use std::fs::File;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A register digest goes into the log every this many exits.
pub const DIGEST_EVERY: u64 = 1 << 14;

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
}

/// Messages to a running vCPU loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
}

pub enum Driver {
    /// Events come from the host (the timer); optionally logged.
    Live {
        clock: TickClock,
        recorder: Option<Recorder>,
    },
    /// Events come from a log.
    Replay(Replayer<BufReader<File>>),
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
    pub elapsed: std::time::Duration,
}

pub struct Runner {
    machine: Machine,
    driver: Driver,
    stop_at: Option<u64>,
    output: Sender<Vec<u8>>,
    control: Receiver<Control>,
    stop: Arc<AtomicBool>,
    /// The recorded state digest of the log's end record, once replay reaches it.
    end_digest: Option<Hash>,
}

/// Where a runner's console output goes and how it is told to stop.
pub struct Plumbing {
    pub output: Sender<Vec<u8>>,
    pub control: Receiver<Control>,
    pub stop: Arc<AtomicBool>,
}

enum Step {
    Continue,
    Finish(Finish),
}

impl Runner {
    pub fn new(
        machine: Machine,
        driver: Driver,
        stop_at: Option<u64>,
        plumbing: Plumbing,
    ) -> Runner {
        let Plumbing {
            output,
            control,
            stop,
        } = plumbing;
        Runner {
            machine,
            driver,
            stop_at,
            output,
            control,
            stop,
            end_digest: None,
        }
    }

    pub fn run(mut self) -> Result<Outcome, RunError> {
        let mut index = 0u64;
        let mut interrupts = 0u64;
        let started = Instant::now();
        let finish = loop {
            let action = match self.machine.vcpu.run() {
                Ok(exit) => handle_exit(exit, &mut self.machine.buses, &self.machine.mem),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    ExitAction::Uncounted
                }
                Err(source) => return Err(RunError::Run { index, source }),
            };
            let exit = match action {
                ExitAction::Counted(exit) => exit,
                ExitAction::Uncounted if self.stop.load(Ordering::Relaxed) => {
                    break Finish::Shutdown
                }
                ExitAction::Uncounted => continue,
                ExitAction::Fatal(exit) => return Err(RunError::Fatal { index, exit }),
            };
            index += 1;
            match self.on_counted_exit(index, exit, &mut interrupts)? {
                Step::Continue => {}
                Step::Finish(f) => break f,
            }
        };
        let elapsed = started.elapsed();
        self.complete_pending_instruction();
        let digest = digest::state_digest(&self.machine.vcpu, &self.machine.mem)?;
        if let Driver::Live {
            recorder: Some(rec),
            ..
        } = &mut self.driver
        {
            let reason = match finish {
                Finish::StopAtExit => EndReason::StopAtExit,
                Finish::PowerOff(_) => EndReason::GuestExit,
                _ => EndReason::Shutdown,
            };
            rec.send(Record::End {
                exit_index: index,
                reason,
                state_digest: Some(digest),
            })?;
        }
        if let Driver::Live { recorder, .. } = &mut self.driver {
            if let Some(rec) = recorder.take() {
                rec.finish()?;
            }
        }
        if let (Finish::EndOfLog(reason), Some(wanted)) = (finish, self.stop_at) {
            if wanted > index {
                return Err(ReplayError::PastEnd {
                    end: index,
                    reason,
                    wanted,
                }
                .into());
            }
        }
        if let (Some(recorded), Finish::EndOfLog(_)) = (self.end_digest, finish) {
            if recorded != digest {
                return Err(ReplayError::Divergence {
                    index,
                    what: format!(
                        "state digest {} differs from the recorded {} (every logged exit and register check before it matched)",
                        digest::hex(&digest),
                        digest::hex(&recorded)
                    ),
                }
                .into());
            }
        }
        Ok(Outcome {
            finish,
            exit_index: index,
            digest,
            interrupts,
            elapsed,
        })
    }

    fn on_counted_exit(
        &mut self,
        index: u64,
        exit: CountedExit,
        interrupts: &mut u64,
    ) -> Result<Step, RunError> {
        let wants_wait = match exit.effect {
            DeviceEffect::None => false,
            DeviceEffect::Wait => true,
            DeviceEffect::Output(bytes) => {
                // The console reader may be gone at shutdown; the VM must not care.
                let _ = self.output.send(bytes);
                false
            }
            DeviceEffect::PowerOff(code) => return Ok(Step::Finish(Finish::PowerOff(code))),
            DeviceEffect::GuestFault(fault) => return Err(RunError::GuestFault { index, fault }),
        };
        let sig = |vcpu| -> Result<ExitSig, RunError> {
            Ok(ExitSig {
                kind: exit.kind,
                addr: exit.addr,
                data: exit.data,
                regs_hash: digest::regs_hash64(vcpu)?,
            })
        };
        match &mut self.driver {
            Driver::Live { clock, recorder } => {
                if self.stop_at == Some(index) {
                    return Ok(Step::Finish(Finish::StopAtExit));
                }
                if wants_wait && !wait_for_event(clock, &self.control) {
                    return Ok(Step::Finish(Finish::Shutdown));
                }
                let vcpu = &mut self.machine.vcpu;
                if clock.pending(Instant::now()) && can_inject(vcpu) {
                    inject(vcpu, index, vector::TIMER)?;
                    clock.delivered();
                    *interrupts += 1;
                    if let Some(rec) = recorder {
                        let events = vec![Event::Interrupt {
                            vector: vector::TIMER,
                        }];
                        rec.send(Record::Entry {
                            exit_index: index,
                            sig: sig(vcpu)?,
                            events,
                        })?;
                    }
                }
                if let Some(rec) = recorder {
                    if index.is_multiple_of(DIGEST_EVERY) {
                        let hash = digest::regs_digest(vcpu)?;
                        rec.send(Record::Digest {
                            exit_index: index,
                            scope: DigestScope::Registers,
                            hash,
                        })?;
                    }
                }
            }
            Driver::Replay(replayer) => {
                let at = replayer.at_exit(index)?;
                // The recording stopped here (its end record is the only thing at this exit),
                // so stop too, and compare the state it ended in.
                if let Some((reason, digest)) = at.end {
                    self.end_digest = digest;
                    return Ok(Step::Finish(Finish::EndOfLog(reason)));
                }
                if self.stop_at == Some(index) {
                    return Ok(Step::Finish(Finish::StopAtExit));
                }
                let vcpu = &mut self.machine.vcpu;
                if let Some((logged, events)) = &at.entry {
                    check_sig(index, logged, &sig(vcpu)?)?;
                    for event in events {
                        apply_replayed(vcpu, index, event)?;
                        *interrupts += 1;
                    }
                }
                check_digests(vcpu, index, &at)?;
            }
        }
        Ok(Step::Continue)
    }

    /// KVM finishes an MMIO or port instruction on the next entry; with
    /// `immediate_exit` it does exactly that and returns, so the state we hash
    /// is the state after the last counted exit.
    fn complete_pending_instruction(&mut self) {
        let vcpu = &mut self.machine.vcpu;
        vcpu.set_kvm_immediate_exit(1);
        let _ = vcpu.run();
        vcpu.set_kvm_immediate_exit(0);
    }
}

/// Blocks a waiting live guest until a tick is due or the VM is told to stop.
/// Returns false when it must stop.
fn wait_for_event(clock: &mut TickClock, control: &Receiver<Control>) -> bool {
    if clock.pending(Instant::now()) {
        return true;
    }
    let msg = match clock.next_deadline() {
        Some(deadline) => match control.recv_deadline(deadline) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => None,
        },
        None => control.recv().ok(),
    };
    match msg {
        Some(Control::Stop) | None => false,
    }
}

/// The guest can take an external interrupt now (RFLAGS.IF set, no interrupt shadow).
fn can_inject(vcpu: &mut kvm_ioctls::VcpuFd) -> bool {
    let run = vcpu.get_kvm_run();
    run.ready_for_interrupt_injection != 0 && run.if_flag != 0
}

fn inject(vcpu: &kvm_ioctls::VcpuFd, index: u64, vector: u8) -> Result<(), RunError> {
    inject_interrupt(vcpu, vector).map_err(|source| RunError::Inject {
        index,
        vector,
        source,
    })
}

fn apply_replayed(
    vcpu: &mut kvm_ioctls::VcpuFd,
    index: u64,
    event: &Event,
) -> Result<(), RunError> {
    match event {
        Event::Interrupt { vector } => {
            if !can_inject(vcpu) {
                return Err(ReplayError::Divergence {
                    index,
                    what: format!("the log injects vector {vector:#x} here, but the guest cannot take an interrupt"),
                }
                .into());
            }
            inject(vcpu, index, *vector)
        }
        Event::DeviceInput { device, .. } => Err(ReplayError::Divergence {
            index,
            what: format!("the log feeds input to device {device}, which this VM does not have"),
        }
        .into()),
    }
}

fn check_digests(vcpu: &kvm_ioctls::VcpuFd, index: u64, at: &AtExit) -> Result<(), RunError> {
    for (scope, recorded) in &at.digests {
        let actual = match scope {
            DigestScope::Registers => digest::regs_digest(vcpu)?,
            // Full digests are taken with a completed instruction; only the end record has one.
            _ => continue,
        };
        if &actual != recorded {
            return Err(ReplayError::Divergence {
                index,
                what: format!(
                    "register digest {} differs from the recorded {}",
                    digest::hex(&actual[..8]),
                    digest::hex(&recorded[..8])
                ),
            }
            .into());
        }
    }
    Ok(())
}
