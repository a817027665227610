//! Does KVM's dirty-page log work on this host, would it find what page hashes find,
//! and what does it cost the running guest? Boots the self-test guest, runs it for N
//! counted exits at a time with the log off, then with it on (read after every round),
//! compares the pages `KVM_GET_DIRTY_LOG` reports with the pages whose hash changed,
//! and prints the time per round both ways (the cost of KVM's write-protect faults),
//! and what switching the log on and off takes.
//!
//!   cargo run --release --example dirty_log [ROUNDS] [EXITS_PER_ROUND]
use guest_abi::Workload;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vmm::vm::machine::{Machine, MachineConfig};
use vmm::vm::{dirtylog, pagediff};

/// Runs `exits` counted exits of the self-test guest.
fn run(m: &mut Machine, exits: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let mut done = 0;
    while done < exits {
        match m.vcpu.run()? {
            kvm_ioctls::VcpuExit::MmioRead(_, data) | kvm_ioctls::VcpuExit::IoIn(_, data) => {
                data.fill(0);
                done += 1;
            }
            kvm_ioctls::VcpuExit::MmioWrite(..) | kvm_ioctls::VcpuExit::Hlt | kvm_ioctls::VcpuExit::IoOut(..) => {
                done += 1
            }
            other => return Err(format!("unexpected exit {other:?}").into()),
        }
    }
    Ok(t.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let rounds = args.next().transpose()?.unwrap_or(5);
    let per_round = args.next().transpose()?.unwrap_or(20_000);
    let config =
        MachineConfig { mem_size: 64 << 20, tick_hz: 0, workload: Workload::SelfTest, net: Default::default() };
    let mut m = Machine::new(&config, vmm::vm::guest_image::EMBEDDED)?;
    // The guest's first exits are its boot; measure after them.
    run(&mut m, per_round)?;
    let mut off = Duration::ZERO;
    for _ in 0..rounds {
        off += run(&mut m, per_round)?;
    }
    let t = Instant::now();
    dirtylog::set_logging(m.vm(), &m.mem, true)?;
    println!("dirty logging switched on in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let _ = dirtylog::take_dirty(m.vm(), &m.mem)?;
    let mut before = pagediff::have_list(&m.mem)?;
    let mut on = Duration::ZERO;
    for round in 1..=rounds {
        on += run(&mut m, per_round)?;
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
    let t = Instant::now();
    dirtylog::set_logging(m.vm(), &m.mem, false)?;
    println!("dirty logging switched off in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let per = |d: Duration| d.as_secs_f64() * 1e3 / rounds as f64;
    println!(
        "guest time per round of {per_round} exits: log off {:.2} ms, log on (read every round) {:.2} ms: {:.2}x",
        per(off),
        per(on),
        on.as_secs_f64() / off.as_secs_f64()
    );
    Ok(())
}
