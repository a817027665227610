//! Does KVM's dirty-page log work on this host, and would it find what page hashes find?
//! Boots the self-test guest with dirty logging on, runs it for N counted exits at a time,
//! and compares the pages `KVM_GET_DIRTY_LOG` reports with the pages whose hash changed.
//! Prints one line per round and the cost of each method.
//!
//!   cargo run --release --example dirty_log [ROUNDS] [EXITS_PER_ROUND]
use guest_abi::Workload;
use std::collections::BTreeSet;
use std::time::Instant;
use vmm::vm::machine::{Machine, MachineConfig};
use vmm::vm::{dirtylog, pagediff};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let rounds = args.next().transpose()?.unwrap_or(5);
    let per_round = args.next().transpose()?.unwrap_or(20_000);
    let config =
        MachineConfig { mem_size: 64 << 20, tick_hz: 0, workload: Workload::SelfTest, net: Default::default() };
    let mut m = Machine::new(&config, vmm::vm::guest_image::EMBEDDED)?;
    let t = Instant::now();
    dirtylog::set_logging(m.vm(), &m.mem, true)?;
    println!("dirty logging switched on in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let _ = dirtylog::take_dirty(m.vm(), &m.mem)?;
    let mut before = pagediff::have_list(&m.mem)?;
    for round in 1..=rounds {
        let mut exits = 0;
        while exits < per_round {
            match m.vcpu.run()? {
                kvm_ioctls::VcpuExit::MmioRead(_, data) => {
                    data.fill(0);
                    exits += 1;
                }
                kvm_ioctls::VcpuExit::MmioWrite(..) | kvm_ioctls::VcpuExit::Hlt => exits += 1,
                kvm_ioctls::VcpuExit::IoIn(_, data) => {
                    data.fill(0);
                    exits += 1;
                }
                kvm_ioctls::VcpuExit::IoOut(..) => exits += 1,
                other => return Err(format!("unexpected exit {other:?}").into()),
            }
        }
        let t = Instant::now();
        let dirty: BTreeSet<u64> = dirtylog::take_dirty(m.vm(), &m.mem)?.into_iter().collect();
        let log_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let after = pagediff::have_list(&m.mem)?;
        let hash_ms = t.elapsed().as_secs_f64() * 1e3;
        let old: std::collections::BTreeMap<u32, _> = before.0.iter().copied().collect();
        let new: std::collections::BTreeMap<u32, _> = after.0.iter().copied().collect();
        let changed: BTreeSet<u64> =
            old.keys().chain(new.keys()).filter(|p| old.get(p) != new.get(p)).map(|p| u64::from(*p)).collect();
        let missed = changed.difference(&dirty).count();
        println!(
            "round {round}: {per_round} exits; dirty log {} pages ({log_ms:.2} ms), hashes changed {} pages \
             ({hash_ms:.2} ms); changed but not in the dirty log: {missed}",
            dirty.len(),
            changed.len()
        );
        before = after;
    }
    Ok(())
}
