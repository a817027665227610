//! One VM: KVM handles, guest memory, the vCPU and its devices, built identically on every host.
use crate::devices::bus::{Bus, BusError};
use crate::devices::standard_bus;
use crate::vm::boot::{self, BootError};
use crate::vm::cpuid::{self, CpuidError};
use crate::vm::exit::Buses;
use guest_abi::{BootInfo, NetConfig, Workload};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use logging_channel::{Hash, LogHeader};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("cannot open /dev/kvm ({0}); this host needs KVM, and ftvmm must run as root or in the kvm group")]
    NoKvm(#[source] kvm_ioctls::Error),
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Everything that must be equal for two VMs to replay each other; goes into log headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    pub mem_size: u64,
    pub tick_hz: u32,
    pub workload: Workload,
    pub net: NetConfig,
}

pub struct Machine {
    // Dropping the VmFd tears the VM down; keep it (and /dev/kvm) alive with the vCPU.
    _kvm: Kvm,
    /// Shared with a pre-copy thread, which reads the dirty-page log while the vCPU runs.
    vm: Arc<VmFd>,
    pub vcpu: VcpuFd,
    pub mem: GuestMemoryMmap,
    pub buses: Buses,
    pub header: LogHeader,
    /// The guest-visible replication status (`guest_abi::system::REPL_STATUS`).
    pub repl_status: Arc<AtomicU64>,
}

/// The VM stopped at counted exit `index` (0: not yet booted), for the
/// fault-tolerance core to read or send.
pub struct AtExit<'a> {
    pub index: u64,
    /// The KVM VM, for its dirty-page log ([`crate::vm::dirtylog`]).
    pub vm: &'a Arc<VmFd>,
    pub vcpu: &'a mut VcpuFd,
    pub mem: &'a GuestMemoryMmap,
    pub bus: &'a mut Bus,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> MachineError {
    move |source| MachineError::Kvm { what, source }
}

impl Machine {
    /// The KVM VM (for `dirtylog`, which registers its memory again).
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// The VM as it stands at counted exit `index`.
    pub fn at_exit(&mut self, index: u64) -> AtExit<'_> {
        AtExit { index, vm: &self.vm, vcpu: &mut self.vcpu, mem: &self.mem, bus: &mut self.buses.mmio }
    }

    pub fn new(config: &MachineConfig, image: &[u8]) -> Result<Machine, MachineError> {
        let kvm = Kvm::new().map_err(MachineError::NoKvm)?;
        let vm = kvm.create_vm().map_err(kvm_err("VM creation"))?;
        let mem = boot::create_memory(config.mem_size)?;
        register_memory(&vm, &mem)?;
        // Deliberately no KVM_CREATE_IRQCHIP: this monitor is the interrupt controller,
        // so every interrupt enters at an exit it chose and logged.
        let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("vCPU creation"))?;
        crate::vm::kvm_ext::enable_sync_regs(&kvm, &mut vcpu);
        let cpuid = cpuid::guest_cpuid(&kvm)?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let info = BootInfo::new(config.workload, config.mem_size, config.tick_hz, config.net);
        let entry = boot::load_guest(&mem, config.mem_size, image, &info)?;
        boot::setup_vcpu(&vcpu, entry)?;
        let header = LogHeader {
            guest_image_digest: image_digest(image, &info),
            mem_size: config.mem_size,
            cpuid_digest: cpuid::cpuid_digest(&cpuid),
            tick_hz: config.tick_hz,
        };
        let repl_status = Arc::new(AtomicU64::new(0));
        let buses = Buses { mmio: standard_bus(repl_status.clone())?, pio: Bus::default() };
        Ok(Machine { _kvm: kvm, vm: Arc::new(vm), vcpu, mem, buses, header, repl_status })
    }
}

/// The guest image digest covers everything loaded at boot: the ELF and the boot info
/// (which names the workload), so a log can only be replayed into the same start state.
fn image_digest(image: &[u8], info: &BootInfo) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(image);
    h.update(&info.to_bytes());
    *h.finalize().as_bytes()
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MachineError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| MachineError::Boot(BootError::Allocate(region.len(), e.to_string())))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which the Machine keeps for as long
        // as the VM exists; slots do not overlap because the regions don't.
        unsafe { vm.set_user_memory_region(desc) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}
