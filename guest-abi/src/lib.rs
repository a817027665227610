//! The contract between the ftvmm monitor and its guest.
//!
//! Both sides compile against this crate, so the memory map, the MMIO register
//! offsets, the interrupt vectors and the boot-info layout cannot drift apart.
//! `docs/guest-abi.md` explains the why; this file is the single source of the what.
//!
//! ```text
//!  guest physical (= guest virtual: identity map, 2 MiB pages, all user-accessible)
//!  0x0000_7000  BootInfo (written by the monitor, read-only for the guest)
//!  0x0000_9000  page tables (PML4, PDPT, 4 PDs) built by the monitor
//!  0x0010_0000  guest ELF image, then its .bss (stacks, heap arena)
//!  mem_size     end of RAM (at most RAM_LIMIT)
//!  0xD000_0000  MMIO window: one 4 KiB page per device
//!     +0x0000     system  (ID, WAIT, EXIT, FAULT)
//!     +0x1000     console (TX_ADDR, TX_LEN, TX_BYTE)
//!     +0x2000     NIC     (reserved)
//! ```
#![no_std]
#![forbid(unsafe_code)]

/// Where the monitor writes [`BootInfo`]; the entry point gets this address in RDI.
pub const BOOT_INFO_ADDR: u64 = 0x7000;
/// First page of the monitor-built page tables.
pub const PAGE_TABLE_ADDR: u64 = 0x9000;
/// Where the guest ELF is linked and loaded.
pub const IMAGE_BASE: u64 = 0x10_0000;
/// RAM must end below the MMIO window.
pub const RAM_LIMIT: u64 = MMIO_BASE;
/// Start of the MMIO window; every device register lives here.
pub const MMIO_BASE: u64 = 0xD000_0000;
/// Size of one device's register page.
pub const DEVICE_PAGE: u64 = 0x1000;

/// The system device: identity, wait-for-event, power-off and fault reports.
pub mod system {
    use super::MMIO_BASE;
    pub const BASE: u64 = MMIO_BASE;
    /// Read: [`ID_VALUE`]. A pure register: exits, but is a function of nothing.
    pub const ID: u64 = 0x00;
    /// Write any value (the guest's wait sequence number): block until an event is due.
    pub const WAIT: u64 = 0x08;
    /// Write the guest's exit code: the VM powers off. 0 means success.
    pub const EXIT: u64 = 0x10;
    /// Write the exception vector: the guest took a fatal exception (ring 0 only).
    pub const FAULT_VECTOR: u64 = 0x18;
    pub const FAULT_ERROR: u64 = 0x20;
    pub const FAULT_RIP: u64 = 0x28;
    pub const FAULT_CR2: u64 = 0x30;
    pub const ID_VALUE: u64 = 0x4654_564D; // "FTVM"
}

/// The console: the guest hands over a whole buffer in two exits.
pub mod console {
    use super::{DEVICE_PAGE, MMIO_BASE};
    pub const BASE: u64 = MMIO_BASE + DEVICE_PAGE;
    /// Write the guest-physical address of the bytes to print.
    pub const TX_ADDR: u64 = 0x00;
    /// Write the length: prints `[TX_ADDR, TX_ADDR + len)`. At most [`MAX_TX`].
    pub const TX_LEN: u64 = 0x08;
    /// Write one byte to print.
    pub const TX_BYTE: u64 = 0x10;
    pub const MAX_TX: u64 = 4096;
}

/// Interrupt vectors the monitor injects.
pub mod vector {
    /// The timer tick: the guest's only clock.
    pub const TIMER: u8 = 0x20;
    /// The NIC has received frames.
    pub const NIC: u8 = 0x21;
}

/// What the guest's ring-3 program does; chosen by the monitor at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Workload {
    Invalid = 0,
    /// Deterministic compute mixed with device exits, waits and tick reads.
    SelfTest = 1,
    /// Back-to-back pure device reads: measures the monitor's per-exit cost.
    ExitStorm = 2,
}

impl Workload {
    pub fn from_u32(v: u32) -> Workload {
        match v {
            1 => Workload::SelfTest,
            2 => Workload::ExitStorm,
            _ => Workload::Invalid,
        }
    }
}

pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"FTVMBOOT");
pub const BOOT_VERSION: u32 = 1;

/// Boot information, little-endian, at [`BOOT_INFO_ADDR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    pub workload: u32,
    pub mem_size: u64,
    pub tick_hz: u32,
    pub _reserved: u32,
}

impl BootInfo {
    pub const SIZE: usize = 32;

    pub fn new(workload: Workload, mem_size: u64, tick_hz: u32) -> Self {
        BootInfo {
            magic: BOOT_MAGIC,
            version: BOOT_VERSION,
            workload: workload as u32,
            mem_size,
            tick_hz,
            _reserved: 0,
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.magic.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.workload.to_le_bytes());
        b[16..24].copy_from_slice(&self.mem_size.to_le_bytes());
        b[24..28].copy_from_slice(&self.tick_hz.to_le_bytes());
        b[28..32].copy_from_slice(&self._reserved.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_info_bytes_match_repr_c_layout() {
        assert_eq!(core::mem::size_of::<BootInfo>(), BootInfo::SIZE);
        let b = BootInfo::new(Workload::SelfTest, 64 << 20, 1000).to_bytes();
        assert_eq!(&b[0..8], b"FTVMBOOT");
        assert_eq!(u32::from_le_bytes([b[24], b[25], b[26], b[27]]), 1000);
    }
}
