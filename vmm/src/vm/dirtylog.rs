//! KVM's dirty-page log (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`): which
//! pages the guest wrote since the log was last read. It drives the pre-copy
//! state transfer ([`crate::vm::precopy`]): memory is copied while the guest runs,
//! then again only where the guest wrote. Writes the monitor itself makes to
//! guest memory (a received frame) go around KVM and are not in this log; the
//! bus tracks those ([`crate::devices::bus::Bus::track_monitor_writes`]).
//! `examples/dirty_log.rs` checks the log against page hashes on a host.
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why dirty logging could not be switched or read.
#[derive(Debug, thiserror::Error)]
pub enum DirtyLogError {
    #[error("KVM {what} failed: {source} (this host's KVM may not support dirty-page logging; the state transfer then stops the VM for the whole copy)")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Registers every memory slot of `mem` (as `Machine::new` registered them on `vm`)
/// again, with dirty-page logging `on` or off. Switching it on write-protects the
/// guest's memory: each page's first write after a read of the log costs a fault.
pub fn set_logging(vm: &VmFd, mem: &GuestMemoryMmap, on: bool) -> Result<(), DirtyLogError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem.get_host_address(region.start_addr()).expect("a region's own start") as u64;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host,
        };
        // SAFETY: the same region, at the same host address, that `Machine::new` registered
        // (owned by `mem`, alive as long as the VM); only the flags change.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| DirtyLogError::Kvm { what: "KVM_SET_USER_MEMORY_REGION (dirty log)", source })?;
    }
    Ok(())
}

/// The pages written since the last call (or since logging was switched on), by
/// number, ascending. Safe to call while the vCPU runs.
pub fn take_dirty(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<Vec<u64>, DirtyLogError> {
    let mut pages = Vec::new();
    for (slot, region) in mem.iter().enumerate() {
        let bitmap = vm
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
