//! The contract between the vCPU loop ([`super::runner`]) and the drivers that
//! decide what enters the guest at each counted exit ([`super::live`],
//! [`super::replay`]): what a driver sees at an exit, and what it answers.
use crate::devices::bus::{Bus, GuestFault, Output};
use crate::vm::digest::{self, DigestError};
use crate::vm::exit::{CountedExit, FatalExit};
use crate::vm::kvm_ext::inject_interrupt;
use crate::vm::recorder::RecordError;
use crate::vm::replayer::ReplayError;
use kvm_ioctls::VcpuFd;
use logging_channel::{EndReason, ExitSig};
use std::time::Instant;
use vm_memory::GuestMemoryMmap;

/// A register digest goes into the log every this many exits.
pub const DIGEST_EVERY: u64 = 1 << 14;
/// A digest of the whole machine (registers and memory) goes into the log every this
/// many exits: memory that drifts is caught here rather than only at the end.
pub const FULL_DIGEST_EVERY: u64 = 1 << 17;

/// Why the vCPU loop stopped with an error.
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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    StopAtExit,
    PowerOff(u32),
    Shutdown,
    /// Replay reached the log's end record.
    EndOfLog(EndReason),
}

/// A follower waiting for the VM to stop at an exit to be attached.
pub enum Attaching {
    /// It passed the handshake; what it asked for.
    Asked { conn: crate::host::tls::Channel, request: logging_channel::channel::AttachRequest },
    /// Its memory was copied while the VM ran ([`crate::vm::precopy`]); the last round
    /// and the rest of the state go at this exit.
    Precopied(Box<crate::vm::precopy::Precopied>),
}

impl std::fmt::Debug for Attaching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attaching::Asked { conn, request } => {
                f.debug_struct("Asked").field("conn", conn).field("request", request).finish()
            }
            Attaching::Precopied(p) => f.debug_tuple("Precopied").field(&p.conn).finish(),
        }
    }
}

/// A driver's answer at one counted exit.
#[derive(Debug)]
pub enum Step {
    Continue,
    Finish(Finish),
    /// A follower wants the VM's state as of this exit (it replays from the next one).
    /// Nothing else happens at this exit.
    Attach(Attaching),
    /// A follower's log has ended with nothing logged for this exit: everything the
    /// primary sent is replayed, and the fault-tolerance core decides what comes next.
    LogEnded,
}

/// The VM as a driver sees it at one counted exit.
pub struct ExitContext<'a> {
    pub index: u64,
    pub exit: &'a CountedExit,
    pub wants_wait: bool,
    /// The exit produced output (which the Output Rule will hold until followers ack it).
    pub produced_output: bool,
    pub vcpu: &'a mut VcpuFd,
    pub bus: &'a mut Bus,
    pub mem: &'a GuestMemoryMmap,
    pub interrupts: &'a mut u64,
}

impl ExitContext<'_> {
    /// What the guest is doing at this exit, as a log entry records it.
    pub fn sig(&mut self) -> Result<ExitSig, RunError> {
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

    /// Injects `vector` now (KVM delivers it on the next entry).
    pub fn inject(&mut self, vector: u8) -> Result<(), RunError> {
        inject_interrupt(self.vcpu, vector).map_err(|source| RunError::Inject { index: self.index, vector, source })?;
        *self.interrupts += 1;
        Ok(())
    }
}
