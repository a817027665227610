//! Restoring a VM from the newest usable checkpoint in a directory, falling back
//! to older ones when a file is torn, corrupt or its chain is broken, and refusing
//! outright a directory that holds another VM's checkpoints.
use super::{apply_file, machine_differs, parse_name, read_header, CheckpointError, MAX_CHAIN};
use crate::devices::bus::Bus;
use crate::vm::snapshot;
use kvm_ioctls::VcpuFd;
use logging_channel::LogHeader;
use std::path::Path;
use vm_memory::GuestMemoryMmap;

/// What a restore found.
#[derive(Debug, Default)]
pub struct Restored {
    /// The checkpoint the VM now holds, as (exit, epoch); `None` if no checkpoint was
    /// usable (the VM's state is then garbage: it must get a whole state transfer).
    pub at: Option<(u64, u64)>,
    /// The checkpoints passed over, newest first, each with why.
    pub skipped: Vec<String>,
    /// Interrupted checkpoint writes found (and deleted).
    pub interrupted: Vec<String>,
}

/// Restores the newest usable checkpoint in `dir` into the VM. A checkpoint of another
/// VM (`machine` differs) is an error: the directory is not this VM's.
pub fn restore_newest(
    dir: &Path,
    machine: &LogHeader,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
) -> Result<Restored, CheckpointError> {
    let mut found = Restored::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(found) };
    let mut exits = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ckpt-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
            found.interrupted.push(name);
        } else if let Some(exit) = parse_name(&name) {
            exits.push(exit);
        }
    }
    exits.sort_unstable_by(|a, b| b.cmp(a));
    for exit in exits {
        match restore_chain(dir, exit, machine, vcpu, mem, bus) {
            Ok(at) => {
                found.at = Some(at);
                return Ok(found);
            }
            Err(e @ CheckpointError::Foreign { .. }) => return Err(e),
            Err(e) => found.skipped.push(e.to_string()),
        }
    }
    Ok(found)
}

/// Restores the checkpoint at `exit` with the chain of deltas it stands on.
fn restore_chain(
    dir: &Path,
    exit: u64,
    machine: &LogHeader,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
) -> Result<(u64, u64), CheckpointError> {
    let path = |e: u64| dir.join(super::file_name(e));
    let mut chain = vec![exit];
    let mut at = exit;
    loop {
        let (header, _) = read_header(&path(at))?;
        if let Some(what) = machine_differs(&header.machine, machine) {
            return Err(CheckpointError::Foreign { path: path(at).display().to_string(), what });
        }
        let Some(base) = header.base else { break };
        let shown = path(exit).display().to_string();
        if base >= at || chain.len() > MAX_CHAIN as usize {
            return Err(CheckpointError::BrokenChain { path: shown, base, why: "not an earlier checkpoint".into() });
        }
        if !path(base).exists() {
            return Err(CheckpointError::BrokenChain { path: shown, base, why: "missing".into() });
        }
        chain.push(base);
        at = base;
    }
    chain.reverse();
    // A full checkpoint holds only non-zero pages.
    snapshot::zero_memory(mem)?;
    let mut restored = (0, 0);
    // One count for the whole chain: the base and its deltas are one restore.
    let mut progress = crate::vm::progress::Progress::start("checkpoint restore", None);
    for e in chain {
        let (_, reader) = read_header(&path(e))?;
        restored = apply_file(&path(e), reader, vcpu, mem, bus, &mut progress)?;
        if restored.0 != e {
            let source = snapshot::SnapshotError::Protocol(format!("it holds the state of exit {}", restored.0));
            return Err(CheckpointError::Damaged { path: path(e).display().to_string(), source });
        }
    }
    progress.finish();
    Ok(restored)
}
