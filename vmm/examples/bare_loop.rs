//! The floor for `scripts/bench-exit-cost.sh`: the same VM and guest as
//! `ftvmm run --workload exit-storm`, driven by the barest possible loop
//! (`KVM_RUN`, answer the ID read, count). No bus, no exit classification,
//! no event checks. Prints `bare loop: N exits, X ns/exit`.
use guest_abi::{system, Workload};
use kvm_ioctls::VcpuExit;
use std::time::Instant;
use vmm::vm::machine::{Machine, MachineConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exits: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let config =
        MachineConfig { mem_size: 64 << 20, tick_hz: 0, workload: Workload::ExitStorm, net: Default::default() };
    let mut machine = Machine::new(&config, vmm::vm::guest_image::EMBEDDED)?;
    let mut counted = 0u64;
    let start = Instant::now();
    while counted < exits {
        match machine.vcpu.run()? {
            VcpuExit::MmioRead(addr, data) => {
                let v = if addr == system::BASE + system::ID { system::ID_VALUE } else { 0 };
                let bytes = v.to_le_bytes();
                let n = data.len().min(8);
                data[..n].copy_from_slice(&bytes[..n]);
                counted += 1;
            }
            VcpuExit::MmioWrite(..) | VcpuExit::IoIn(..) | VcpuExit::IoOut(..) | VcpuExit::Hlt => counted += 1,
            other => return Err(format!("unexpected exit {other:?}").into()),
        }
    }
    let ns = start.elapsed().as_nanos() / u128::from(exits);
    println!("bare loop: {exits} exits, {ns} ns/exit");
    Ok(())
}
