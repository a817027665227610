//! The ftvmm guest: a tiny kernel whose program runs in ring 3.
//!
//! Ring 0 (`ring0.rs`) is assembly only. Everything here runs in ring 3 and
//! talks to the monitor through MMIO registers (`mmio.rs`), which exit to the
//! monitor; those exits are the points where record/replay happens.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod console;
mod heap;
mod libc;
mod mmio;
mod net;
mod ring0;
mod workload;

use guest_abi::{BootInfo, Workload, BOOT_MAGIC, BOOT_VERSION};

pub const USER_STACK_SIZE: usize = 256 * 1024;

#[repr(C, align(16))]
pub struct UserStack([u8; USER_STACK_SIZE]);

#[no_mangle]
pub static mut USER_STACK: UserStack = UserStack([0; USER_STACK_SIZE]);

/// First ring-3 instruction; `_start` passes the boot info address through RDI.
///
/// # Safety
/// Only `_start` calls this, with the address the monitor wrote a `BootInfo` to.
#[no_mangle]
pub unsafe extern "C" fn user_entry(boot: *const BootInfo) -> ! {
    // SAFETY: the monitor writes a BootInfo at this (aligned, mapped) address before boot
    // and never touches it again.
    let boot = unsafe { core::ptr::read_volatile(boot) };
    if boot.magic != BOOT_MAGIC || boot.version != BOOT_VERSION {
        println!("ftvmm guest: bad boot info (magic {:#x}, version {})", boot.magic, boot.version);
        mmio::power_off(2);
    }
    let workload = Workload::from_u32(boot.workload);
    println!(
        "ftvmm guest {}: ring 3 up, {} MiB RAM, tick {} Hz, workload {:?}",
        env!("CARGO_PKG_VERSION"),
        boot.mem_size >> 20,
        boot.tick_hz,
        workload
    );
    match workload {
        Workload::SelfTest => workload::self_test(&boot),
        Workload::ExitStorm => workload::exit_storm(),
        Workload::KvServer => net::server::serve(&boot),
        Workload::Invalid => {
            println!("ftvmm guest: unknown workload {}", boot.workload);
            mmio::power_off(2)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("ftvmm guest panic: {info}");
    mmio::power_off(101)
}
