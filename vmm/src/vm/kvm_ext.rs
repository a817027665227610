//! The KVM ioctl this monitor needs that kvm-ioctls does not wrap, and the
//! registers that arrive with an exit (`KVM_CAP_SYNC_REGS`).
use kvm_bindings::{kvm_interrupt, kvm_regs, KVMIO, KVM_SYNC_X86_REGS};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuFd};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// Queues external interrupt `vector` for delivery on the next `KVM_RUN`.
///
/// Only valid without an in-kernel irqchip, and only when the vCPU reported
/// `ready_for_interrupt_injection` with IF set; the caller checks both.
pub fn inject_interrupt(vcpu: &VcpuFd, vector: u8) -> std::io::Result<()> {
    let irq = kvm_interrupt { irq: u32::from(vector) };
    // SAFETY: the fd is a vCPU fd owned by `vcpu`, KVM_INTERRUPT reads exactly one
    // `kvm_interrupt` from the pointer, which lives across the call.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_INTERRUPT(), &irq) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks KVM to copy the general registers into the shared `kvm_run` page at every
/// exit, where the host supports `KVM_CAP_SYNC_REGS` (the PVM hosts here do). A
/// logged entry hashes the registers of its exit; without this, that is one
/// `KVM_GET_REGS` ioctl per entry on the primary and per replayed entry on every
/// follower. Returns whether it is on.
pub fn enable_sync_regs(kvm: &Kvm, vcpu: &mut VcpuFd) -> bool {
    let supported = kvm.check_extension(Cap::SyncRegs);
    if supported {
        vcpu.set_sync_valid_reg(SyncReg::Register);
    }
    supported
}

/// The general registers as of the last exit: from the `kvm_run` page when
/// [`enable_sync_regs`] turned that on, else by `KVM_GET_REGS`. Only valid right
/// after `KVM_RUN` returned and before anything sets the registers: the synced
/// copy is written by KVM at the exit and not updated by `KVM_SET_REGS`.
pub fn exit_regs(vcpu: &mut VcpuFd) -> Result<kvm_regs, kvm_ioctls::Error> {
    if vcpu.get_kvm_run().kvm_valid_regs & u64::from(KVM_SYNC_X86_REGS) != 0 {
        return Ok(vcpu.sync_regs().regs);
    }
    vcpu.get_regs()
}
