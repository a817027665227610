//! What one exit costs here, and what the register read for a log entry adds:
//! the `bare_loop` VM and guest, run four ways over the same number of exits —
//! plain `KVM_RUN`; `KVM_RUN` + `KVM_GET_REGS` at every exit (what a primary
//! paid per logged entry); `KVM_RUN` with `KVM_CAP_SYNC_REGS` asking for the
//! general registers with every exit (what it pays now); and the same with the
//! registers read from the shared `kvm_run` page. Says whether the host
//! supports `KVM_CAP_SYNC_REGS`, and checks that the synced registers equal
//! `KVM_GET_REGS` at every exit of one pass.
//!
//! `cargo run --release --example exit_probe [EXITS]`
use guest_abi::{system, Workload};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuExit};
use std::time::Instant;
use vmm::vm::machine::{Machine, MachineConfig};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    GetRegs,
    SyncRegs,
    SyncRegsCompared,
}

fn pass(exits: u64, mode: Mode) -> Result<u128, Box<dyn std::error::Error>> {
    let config =
        MachineConfig { mem_size: 64 << 20, tick_hz: 0, workload: Workload::ExitStorm, net: Default::default() };
    let mut machine = Machine::new(&config, vmm::vm::guest_image::EMBEDDED)?;
    if matches!(mode, Mode::SyncRegs | Mode::SyncRegsCompared) {
        machine.vcpu.set_sync_valid_reg(SyncReg::Register);
    }
    let mut counted = 0u64;
    let mut sink = 0u64;
    let start = Instant::now();
    while counted < exits {
        match machine.vcpu.run()? {
            VcpuExit::MmioRead(addr, data) => {
                let v = if addr == system::BASE + system::ID { system::ID_VALUE } else { 0 };
                let bytes = v.to_le_bytes();
                let n = data.len().min(8);
                data[..n].copy_from_slice(&bytes[..n]);
            }
            VcpuExit::MmioWrite(..) | VcpuExit::IoIn(..) | VcpuExit::IoOut(..) | VcpuExit::Hlt => {}
            other => return Err(format!("unexpected exit {other:?}").into()),
        }
        counted += 1;
        match mode {
            Mode::Plain => {}
            Mode::GetRegs => sink ^= machine.vcpu.get_regs()?.rip,
            Mode::SyncRegs => sink ^= machine.vcpu.sync_regs().regs.rip,
            Mode::SyncRegsCompared => {
                let synced = machine.vcpu.sync_regs().regs;
                let read = machine.vcpu.get_regs()?;
                if synced != read {
                    return Err(format!(
                        "exit {counted}: synced registers {synced:?} differ from KVM_GET_REGS {read:?}"
                    )
                    .into());
                }
            }
        }
    }
    std::hint::black_box(sink);
    Ok(start.elapsed().as_nanos() / u128::from(exits))
}

/// Rounds of the three modes, interleaved: on a machine shared with other work the
/// cost of an exit drifts by tens of percent within a minute, so each mode gets
/// every moment, and the median of its rounds is reported.
const ROUNDS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exits: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let supported = Kvm::new()?.check_extension(Cap::SyncRegs);
    println!("KVM_CAP_SYNC_REGS: {}", if supported { "supported" } else { "NOT supported" });
    let modes: &[(Mode, &str)] = if supported {
        &[
            (Mode::Plain, "plain KVM_RUN"),
            (Mode::GetRegs, "KVM_RUN + KVM_GET_REGS"),
            (Mode::SyncRegs, "KVM_RUN with SYNC_REGS"),
        ]
    } else {
        &[(Mode::Plain, "plain KVM_RUN"), (Mode::GetRegs, "KVM_RUN + KVM_GET_REGS")]
    };
    let per_round = (exits / ROUNDS as u64).max(1000);
    let mut samples = vec![Vec::new(); modes.len()];
    for _ in 0..ROUNDS {
        for (i, (mode, _)) in modes.iter().enumerate() {
            samples[i].push(pass(per_round, *mode)?);
        }
    }
    let plain = median(&mut samples[0]);
    for (i, (_, name)) in modes.iter().enumerate() {
        let m = median(&mut samples[i]);
        println!(
            "{name:<28} {m:>8} ns/exit   {:+6} vs plain   (median of {ROUNDS} interleaved rounds)",
            m as i128 - plain as i128
        );
    }
    if supported {
        pass(exits.min(20_000), Mode::SyncRegsCompared)?;
        println!("synced registers == KVM_GET_REGS at every exit of {} exits", exits.min(20_000));
    }
    Ok(())
}

fn median(v: &mut [u128]) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}
