//! KVM's dirty-page log (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`), for
//! measuring whether it can drive a pre-copy state transfer on this host. Used by
//! `examples/dirty_log.rs`; the state transfer itself compares page hashes
//! (`pagediff`), which needs nothing from KVM (see README for what was measured).
use crate::vm::machine::Machine;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// Why dirty logging could not be switched or read.
#[derive(Debug, thiserror::Error)]
pub enum DirtyLogError {
    #[error("KVM {what} failed: {source} (this host's KVM may not support dirty-page logging)")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Registers every memory slot again with dirty-page logging `on` or off.
pub fn set_logging(machine: &Machine, on: bool) -> Result<(), DirtyLogError> {
    for (slot, region) in machine.mem.iter().enumerate() {
        let host = machine.mem.get_host_address(region.start_addr()).expect("a region's own start") as u64;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host,
        };
        // SAFETY: the same region, at the same host address, that `Machine::new` registered
        // (owned by `machine.mem`, alive as long as the VM); only the flags change.
        unsafe { machine.vm().set_user_memory_region(desc) }
            .map_err(|source| DirtyLogError::Kvm { what: "KVM_SET_USER_MEMORY_REGION (dirty log)", source })?;
    }
    Ok(())
}

/// The pages written since the last call (or since logging was switched on), by number.
pub fn take_dirty(machine: &Machine) -> Result<Vec<u64>, DirtyLogError> {
    let mut pages = Vec::new();
    for (slot, region) in machine.mem.iter().enumerate() {
        let bitmap = machine
            .vm()
            .get_dirty_log(slot as u32, region.len() as usize)
            .map_err(|source| DirtyLogError::Kvm { what: "KVM_GET_DIRTY_LOG", source })?;
        let first = region.start_addr().0 / 4096;
        for (i, word) in bitmap.iter().enumerate() {
            for bit in 0..64 {
                if word & (1 << bit) != 0 {
                    pages.push(first + (i * 64 + bit) as u64);
                }
            }
        }
    }
    Ok(pages)
}
