//! The one KVM ioctl this monitor needs that kvm-ioctls does not wrap.
use kvm_bindings::{kvm_interrupt, KVMIO};
use kvm_ioctls::VcpuFd;
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
