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
//!     +0x2000     NIC     (rings in guest memory, see [`nic`])
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
    /// Read: replication status, [`REPL_PROTECTED`] set while a backup is in lockstep.
    /// It changes only when no backup replays this VM (backup lost, or backup gone live),
    /// so reading it never needs to be logged.
    pub const REPL_STATUS: u64 = 0x38;
    pub const REPL_PROTECTED: u64 = 1;
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

/// The NIC: two rings of fixed-size slots in guest memory plus four indices.
///
/// ```text
///  slot (SLOT_SIZE bytes):  | len: u16 LE | reserved: u16 | frame bytes (len <= MAX_FRAME) ... |
///  shared indices (16 B):   | rx_prod | rx_cons | tx_prod | tx_cons |   u32 LE, free-running
///  RX: the monitor fills slot rx_prod % slots and bumps rx_prod, only at a counted exit;
///      the guest consumes up to rx_prod and bumps rx_cons.
///  TX: the guest fills slot tx_prod % slots, bumps tx_prod, writes TX_KICK;
///      the monitor sends [tx_cons, tx_prod) and sets tx_cons = tx_prod.
/// ```
pub mod nic {
    use super::{DEVICE_PAGE, MMIO_BASE};
    pub const BASE: u64 = MMIO_BASE + 2 * DEVICE_PAGE;
    /// Guest-physical address of the RX slot array.
    pub const RX_RING: u64 = 0x00;
    /// Guest-physical address of the TX slot array.
    pub const TX_RING: u64 = 0x08;
    /// Guest-physical address of the four shared indices.
    pub const SHARED: u64 = 0x10;
    /// Slots per ring: a power of two, at most [`MAX_SLOTS`].
    pub const RING_SLOTS: u64 = 0x18;
    /// Write 1 after the four above: the device checks them and starts.
    pub const ENABLE: u64 = 0x20;
    /// Write anything: transmit the slots the guest has filled.
    pub const TX_KICK: u64 = 0x28;
    /// Read: 1 while the device is enabled, 0 if ENABLE refused the configuration.
    pub const STATUS: u64 = 0x30;

    pub const SLOT_SIZE: u64 = 2048;
    pub const SLOT_HEADER: u64 = 4;
    /// Largest frame: Ethernet header + 1500-byte MTU, no FCS, with room to spare.
    pub const MAX_FRAME: u64 = 1536;
    pub const MAX_SLOTS: u64 = 1024;
    pub const SHARED_RX_PROD: u64 = 0;
    pub const SHARED_RX_CONS: u64 = 4;
    pub const SHARED_TX_PROD: u64 = 8;
    pub const SHARED_TX_CONS: u64 = 12;
    /// The NIC's device number in logged `DeviceInput` events.
    pub const DEVICE_ID: u16 = 1;
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
    /// The Redis-protocol key-value server on the NIC (needs a NIC).
    KvServer = 3,
}

impl Workload {
    pub fn from_u32(v: u32) -> Workload {
        match v {
            1 => Workload::SelfTest,
            2 => Workload::ExitStorm,
            3 => Workload::KvServer,
            _ => Workload::Invalid,
        }
    }
}

pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"FTVMBOOT");
pub const BOOT_VERSION: u32 = 3;

/// Most sites a multi-leader configuration may name.
pub const MAX_SITES: usize = 8;

/// One site of a multi-leader configuration: its id and site-link address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct SiteEntry {
    /// 1..=255; 0 marks an unused slot.
    pub id: u8,
    pub _pad: u8,
    /// Site-link TCP port.
    pub port: u16,
    /// The site's guest address.
    pub ip: [u8; 4],
}

/// Multi-leader sites (`--site-id`, `--sites`, `--conflict`): part of boot info, so part
/// of the replicated, replayed state and of the guest image digest a pair compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct SiteConfig {
    /// Host wall clock (Unix ms) when the VM booted: the guest's time is this plus
    /// its tick count, so it replays exactly. A pair must be given the same value.
    pub boot_wall_ms: u64,
    /// Added to the guest's wall time (tests skew a site on purpose).
    pub clock_offset_ms: i64,
    /// This site; 0 means sites mode is off.
    pub site_id: u8,
    /// 1 lww, 2 site-id, 3 manual, 4 merge.
    pub conflict: u8,
    /// Used entries of `sites`.
    pub count: u8,
    pub _pad: [u8; 5],
    pub sites: [SiteEntry; MAX_SITES],
}

/// The guest's network identity, given by the monitor (not built into the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct NetConfig {
    /// 1 when the VM has a NIC.
    pub present: u32,
    pub mac: [u8; 6],
    pub prefix_len: u8,
    pub _pad: u8,
    pub ip: [u8; 4],
    /// 0.0.0.0: no default route.
    pub gateway: [u8; 4],
    pub _pad2: u32,
    /// Multi-leader sites; all zero when off.
    pub sites: SiteConfig,
}

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
    pub net: NetConfig,
}

impl BootInfo {
    /// Every field, padding included (explicit, always zero).
    pub const SIZE: usize = 144;

    pub fn new(workload: Workload, mem_size: u64, tick_hz: u32, net: NetConfig) -> Self {
        BootInfo {
            magic: BOOT_MAGIC,
            version: BOOT_VERSION,
            workload: workload as u32,
            mem_size,
            tick_hz,
            _reserved: 0,
            net,
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
        b[32..36].copy_from_slice(&self.net.present.to_le_bytes());
        b[36..42].copy_from_slice(&self.net.mac);
        b[42] = self.net.prefix_len;
        b[43] = self.net._pad;
        b[44..48].copy_from_slice(&self.net.ip);
        b[48..52].copy_from_slice(&self.net.gateway);
        b[52..56].copy_from_slice(&self.net._pad2.to_le_bytes());
        let s = &self.net.sites;
        b[56..64].copy_from_slice(&s.boot_wall_ms.to_le_bytes());
        b[64..72].copy_from_slice(&s.clock_offset_ms.to_le_bytes());
        b[72] = s.site_id;
        b[73] = s.conflict;
        b[74] = s.count;
        b[75..80].copy_from_slice(&s._pad);
        for (i, e) in s.sites.iter().enumerate() {
            let at = 80 + i * 8;
            b[at] = e.id;
            b[at + 1] = e._pad;
            b[at + 2..at + 4].copy_from_slice(&e.port.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&e.ip);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_info_bytes_match_repr_c_layout() {
        assert_eq!(core::mem::size_of::<BootInfo>(), BootInfo::SIZE);
        let net = NetConfig {
            present: 1,
            mac: [2, 0, 0, 0, 0, 1],
            prefix_len: 24,
            _pad: 0,
            ip: [10, 0, 0, 2],
            gateway: [0; 4],
            ..NetConfig::default()
        };
        let b = BootInfo::new(Workload::SelfTest, 64 << 20, 1000, net).to_bytes();
        assert_eq!(&b[0..8], b"FTVMBOOT");
        assert_eq!(u32::from_le_bytes([b[24], b[25], b[26], b[27]]), 1000);
        assert_eq!(core::mem::offset_of!(BootInfo, net) + core::mem::offset_of!(NetConfig, ip), 44);
        assert_eq!(&b[44..48], &[10, 0, 0, 2]);
    }

    #[test]
    fn site_config_bytes_match_repr_c_layout() {
        let mut net = NetConfig::default();
        net.sites.boot_wall_ms = 0x0102_0304_0506_0708;
        net.sites.clock_offset_ms = -500;
        net.sites.site_id = 2;
        net.sites.conflict = 4;
        net.sites.count = 3;
        net.sites.sites[7] = SiteEntry { id: 9, _pad: 0, port: 6380, ip: [10, 78, 3, 10] };
        let info = BootInfo::new(Workload::KvServer, 64 << 20, 250, net);
        let b = info.to_bytes();
        let base = core::mem::offset_of!(BootInfo, net) + core::mem::offset_of!(NetConfig, sites);
        assert_eq!(base, 56);
        assert_eq!(&b[base..base + 8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[base + 8..base + 16], &(-500i64).to_le_bytes());
        assert_eq!(&b[base + 16..base + 19], &[2, 4, 3]);
        let last = base + core::mem::offset_of!(SiteConfig, sites) + 7 * core::mem::size_of::<SiteEntry>();
        assert_eq!(&b[last..last + 8], &[9, 0, 0xec, 0x18, 10, 78, 3, 10]);
    }
}
