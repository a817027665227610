//! The records a primary logs and a backup replays.
//!
//! Every enum that travels on the wire reserves discriminant 0 as `Invalid` (or
//! leaves tag 0 unused) so that a zeroed or half-written buffer never decodes
//! as something meaningful.

use std::fmt;

/// A SHA-256-sized digest (registers, memory, guest image, CPUID table).
pub type Hash = [u8; 32];

/// The kind of synchronous VM exit an entry was recorded at.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// Never valid on the wire; exists so that 0 is rejected.
    Invalid = 0,
    IoIn = 1,
    IoOut = 2,
    MmioRead = 3,
    MmioWrite = 4,
    Hlt = 5,
}

impl ExitKind {
    /// All kinds a log may carry (everything but `Invalid`).
    pub const VALID: [ExitKind; 5] =
        [ExitKind::IoIn, ExitKind::IoOut, ExitKind::MmioRead, ExitKind::MmioWrite, ExitKind::Hlt];

    /// The wire discriminant; `None` for 0 and unknown values.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::VALID.into_iter().find(|k| *k as u8 == value)
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitKind::Invalid => "invalid",
            ExitKind::IoIn => "io-in",
            ExitKind::IoOut => "io-out",
            ExitKind::MmioRead => "mmio-read",
            ExitKind::MmioWrite => "mmio-write",
            ExitKind::Hlt => "hlt",
        })
    }
}

/// What the guest was doing at a logged exit: lets a replayer detect
/// divergence at that very exit instead of many exits later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitSig {
    pub kind: ExitKind,
    /// Port number or guest-physical MMIO address (0 for HLT).
    pub addr: u64,
    /// Value written by the guest, or the value it read (0 when meaningless).
    pub data: u64,
    /// Cheap hash of the vCPU registers at the exit.
    pub regs_hash: u64,
}

/// One nondeterministic input delivered to the guest at an exit.
///
/// Wire tags: Invalid=0 (never valid), Interrupt=1, DeviceInput=2.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// An interrupt vector injected with `KVM_INTERRUPT`.
    Interrupt { vector: u8 },
    /// Bytes handed to device model `device`, e.g. a received network frame.
    DeviceInput { device: u16, bytes: Vec<u8> },
}

/// How much of the machine a [`Record::Digest`] covers.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestScope {
    /// Never valid on the wire; exists so that 0 is rejected.
    Invalid = 0,
    Registers = 1,
    Full = 2,
}

impl DigestScope {
    pub const VALID: [DigestScope; 2] = [DigestScope::Registers, DigestScope::Full];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::VALID.into_iter().find(|k| *k as u8 == value)
    }
}

impl fmt::Display for DigestScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestScope::Invalid => "invalid",
            DigestScope::Registers => "registers",
            DigestScope::Full => "full",
        })
    }
}

/// Why a log ended.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Never valid on the wire; exists so that 0 is rejected.
    Invalid = 0,
    /// Recording was asked to stop at a given exit index.
    StopAtExit = 1,
    /// The guest asked to exit (e.g. a debug-exit port write).
    GuestExit = 2,
    /// The VMM was shut down.
    Shutdown = 3,
}

impl EndReason {
    pub const VALID: [EndReason; 3] = [EndReason::StopAtExit, EndReason::GuestExit, EndReason::Shutdown];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::VALID.into_iter().find(|k| *k as u8 == value)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::Invalid => "invalid",
            EndReason::StopAtExit => "stop-at-exit",
            EndReason::GuestExit => "guest-exit",
            EndReason::Shutdown => "shutdown",
        })
    }
}

/// One unit of the log (`docs/design.md`, "The log").
///
/// Wire tags: Invalid=0 (never valid), Entry=1, Progress=2, Digest=3,
/// Released=4, End=5, Standing=6.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// What happened at exit `exit_index`. Carries at least one event.
    Entry { exit_index: u64, sig: ExitSig, events: Vec<Event> },
    /// Nothing happened at any exit up to `exit_index` that was not already
    /// sent; doubles as the heartbeat.
    Progress { exit_index: u64 },
    /// A hash of machine state at `exit_index`, for divergence detection.
    Digest { exit_index: u64, scope: DigestScope, hash: Hash },
    /// The highest exit whose output the primary has put on the wire.
    Released { exit_index: u64 },
    /// The log is complete; nothing follows.
    End { exit_index: u64, reason: EndReason, state_digest: Option<Hash> },
    /// From here on the group is in replication epoch `epoch` (the primary moves on
    /// when it goes on without a follower), and this follower may (`eligible`) or may
    /// not take over when the primary dies: only a follower that output waited for
    /// holds every write a client was told of. Like released marks, it refers to an
    /// exit already covered.
    Standing { exit_index: u64, epoch: u64, eligible: bool },
}

impl Record {
    /// The exit this record refers to.
    pub fn exit_index(&self) -> u64 {
        match self {
            Record::Entry { exit_index, .. }
            | Record::Progress { exit_index }
            | Record::Digest { exit_index, .. }
            | Record::Released { exit_index }
            | Record::End { exit_index, .. }
            | Record::Standing { exit_index, .. } => *exit_index,
        }
    }

    /// A short lowercase name for messages ("entry", "progress", ...).
    pub fn name(&self) -> &'static str {
        match self {
            Record::Entry { .. } => "entry",
            Record::Progress { .. } => "progress",
            Record::Digest { .. } => "digest",
            Record::Released { .. } => "released",
            Record::End { .. } => "end",
            Record::Standing { .. } => "standing",
        }
    }
}

/// Abbreviates a digest for messages: the first 4 bytes in hex, then "..".
pub fn short_hex(hash: &Hash) -> String {
    let mut s: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    s.push_str("..");
    s
}

/// A digest in full hex.
pub fn full_hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discriminant_zero_is_never_a_valid_kind() {
        assert_eq!(ExitKind::from_u8(0), None);
        assert_eq!(DigestScope::from_u8(0), None);
        assert_eq!(EndReason::from_u8(0), None);
    }

    #[test]
    fn every_valid_discriminant_round_trips() {
        for k in ExitKind::VALID {
            assert_eq!(ExitKind::from_u8(k as u8), Some(k));
        }
        for s in DigestScope::VALID {
            assert_eq!(DigestScope::from_u8(s as u8), Some(s));
        }
        for r in EndReason::VALID {
            assert_eq!(EndReason::from_u8(r as u8), Some(r));
        }
    }

    #[test]
    fn exit_kind_displays_as_kebab_case() {
        assert_eq!(ExitKind::MmioWrite.to_string(), "mmio-write");
        assert_eq!(ExitKind::IoIn.to_string(), "io-in");
    }

    #[test]
    fn short_hex_keeps_four_bytes() {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&[0xab, 0xcd, 0x01, 0x23]);
        assert_eq!(short_hex(&h), "abcd0123..");
    }
}
