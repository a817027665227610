//! Device registers. Every access is one `mov`, so the monitor can decode it.
use guest_abi::{console, system};

pub fn write(addr: u64, value: u64) {
    // SAFETY: addr is a register in the MMIO window, identity-mapped and user-accessible;
    // the access exits to the monitor and touches no guest memory.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}

pub fn read(addr: u64) -> u64 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Reads the system ID register: a device exit whose value is a constant.
pub fn system_id() -> u64 {
    read(system::BASE + system::ID)
}

/// Block until the monitor has an event (tick, frame) for us; it is injected at this exit.
pub fn wait(seq: u64) {
    write(system::BASE + system::WAIT, seq)
}

pub fn power_off(code: u32) -> ! {
    loop {
        write(system::BASE + system::EXIT, u64::from(code));
    }
}

/// Hands `bytes` to the console in two exits.
pub fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(console::MAX_TX as usize) {
        write(console::BASE + console::TX_ADDR, chunk.as_ptr() as u64);
        write(console::BASE + console::TX_LEN, chunk.len() as u64);
    }
}
