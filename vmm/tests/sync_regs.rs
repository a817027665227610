//! The registers a logged entry hashes arrive with the exit (`KVM_CAP_SYNC_REGS`)
//! instead of by `KVM_GET_REGS`: they must be the same registers, at every exit.
use guest_abi::{system, Workload};
use kvm_ioctls::VcpuExit;
use vmm::vm::digest;
use vmm::vm::kvm_ext::exit_regs;
use vmm::vm::machine::{Machine, MachineConfig};

#[test]
fn registers_that_arrive_with_the_exit_equal_kvm_get_regs_at_every_exit() {
    assert!(std::path::Path::new("/dev/kvm").exists(), "this test needs /dev/kvm (run it as root on a KVM host)");
    let config =
        MachineConfig { mem_size: 64 << 20, tick_hz: 0, workload: Workload::ExitStorm, net: Default::default() };
    let mut machine = Machine::new(&config, vmm::vm::guest_image::EMBEDDED).expect("boot the exit-storm guest");
    assert_ne!(
        machine.vcpu.get_kvm_run().kvm_valid_regs & u64::from(kvm_bindings::KVM_SYNC_X86_REGS),
        0,
        "the machine did not turn KVM_CAP_SYNC_REGS on (does this host lack it? then entries cost a KVM_GET_REGS)"
    );
    let mut rips = std::collections::HashSet::new();
    for exit in 0..5000 {
        match machine.vcpu.run().expect("KVM_RUN") {
            VcpuExit::MmioRead(addr, data) => {
                let v = if addr == system::BASE + system::ID { system::ID_VALUE } else { 0 };
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            VcpuExit::MmioWrite(..) | VcpuExit::IoIn(..) | VcpuExit::IoOut(..) | VcpuExit::Hlt => {}
            other => panic!("unexpected exit {other:?}"),
        }
        let synced = exit_regs(&mut machine.vcpu).expect("synced registers");
        let read = machine.vcpu.get_regs().expect("KVM_GET_REGS");
        assert_eq!(synced, read, "exit {exit}: the registers that came with the exit are not KVM_GET_REGS's");
        let short = digest::regs_hash64(&mut machine.vcpu).expect("entry hash");
        let full = digest::regs_digest(&machine.vcpu).expect("register digest");
        assert_eq!(short.to_le_bytes(), full[..8], "exit {exit}: the entry hash is not the digest's prefix");
        rips.insert(read.rip);
    }
    // The guest moved between exits: a stale copy would have shown as a mismatch above.
    assert!(rips.len() > 1, "every exit was at the same RIP; the comparison proved nothing");
}
