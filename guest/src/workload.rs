//! Deterministic workloads that exercise record/replay.
//!
//! The self-test folds the tick count (which moves only when the monitor
//! injects an interrupt) and its own count of exits into a running state that
//! also scatters into memory, so moving a single interrupt by a single exit
//! changes the final memory and register state.
use crate::{mmio, println, ring0};
use guest_abi::{system, BootInfo};

const SCRATCH_WORDS: usize = 64 * 1024;
static mut SCRATCH: [u64; SCRATCH_WORDS] = [0; SCRATCH_WORDS];

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: cheap, and every input bit reaches every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn scatter(state: u64) {
    let slot = (state as usize) % SCRATCH_WORDS;
    // SAFETY: single-threaded ring-3 program; no interrupt handler touches SCRATCH; slot is in bounds.
    unsafe {
        let p = (&raw mut SCRATCH).cast::<u64>().add(slot);
        *p ^= state;
    }
}

pub fn self_test(boot: &BootInfo) -> ! {
    let hz = u64::from(boot.tick_hz);
    let mut state: u64 = 0x6674_766d_6d21;
    let mut exits: u64 = 0;
    let mut waits: u64 = 0;
    let mut round: u64 = 0;
    let mut reported_secs = 0;
    let mut float_acc = 1.0f64;
    loop {
        round += 1;
        let work = 64 + (state & 511);
        for i in 0..work {
            state = mix(state ^ i);
            scatter(state);
        }
        // Floating point in ring 3 must work (and replay) too.
        float_acc = float_acc * 1.000_001 + (state & 0xff) as f64 / 256.0;
        state ^= float_acc.to_bits();

        let now = ring0::ticks();
        state = mix(state ^ now ^ (exits << 32));
        let id = mmio::system_id();
        exits += 1;
        if id != system::ID_VALUE {
            println!("selftest: system ID register read {id:#x}, expected {:#x}", system::ID_VALUE);
            mmio::power_off(3);
        }
        if hz > 0 && state.is_multiple_of(128) {
            waits += 1;
            mmio::wait(waits);
            exits += 1;
            state = mix(state ^ ring0::ticks());
        }
        if hz > 0 && now / hz > reported_secs {
            reported_secs = now / hz;
            println!("uptime {reported_secs} s: ticks {now} round {round} exits {exits} state {state:016x}");
            exits += 2;
        } else if hz == 0 && round.is_multiple_of(65_536) {
            println!("round {round}: exits {exits} state {state:016x}");
            exits += 2;
        }
    }
}

/// Pure device reads back to back: nothing but the monitor's cost per exit.
pub fn exit_storm() -> ! {
    let mut n: u64 = 0;
    loop {
        let id = mmio::system_id();
        n = n.wrapping_add(id & 1);
        if n.is_multiple_of(1 << 20) {
            println!("exit storm: {n} exits");
        }
    }
}
