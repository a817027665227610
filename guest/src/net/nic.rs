//! The guest side of the monitor's NIC (`guest_abi::nic`), as a smoltcp device.
//!
//! The rings live in this program's .bss. The monitor writes received frames
//! into RX slots (only while the vCPU is stopped at an exit), so reading them
//! here needs no locking; indices are read and written volatile.
use core::cell::Cell;
use guest_abi::nic::{
    BASE, ENABLE, MAX_FRAME, RING_SLOTS, RX_RING, SHARED, SHARED_RX_CONS, SHARED_RX_PROD, SHARED_TX_CONS,
    SHARED_TX_PROD, SLOT_HEADER, SLOT_SIZE, STATUS, TX_KICK, TX_RING,
};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

const SLOTS: usize = 256;
const SLOT: usize = SLOT_SIZE as usize;

#[repr(C, align(4096))]
struct Ring([u8; SLOTS * SLOT]);

static mut RX: Ring = Ring([0; SLOTS * SLOT]);
static mut TX: Ring = Ring([0; SLOTS * SLOT]);
#[repr(C, align(64))]
struct Shared([u32; 4]);
static mut INDICES: Shared = Shared([0; 4]);

fn index_ptr(offset: u64) -> *mut u32 {
    // SAFETY: offset is one of the four SHARED_* constants, all inside INDICES.
    unsafe { (&raw mut INDICES).cast::<u8>().add(offset as usize).cast::<u32>() }
}

fn read_index(offset: u64) -> u32 {
    // SAFETY: an aligned u32 inside INDICES; the monitor writes it only while we are stopped.
    unsafe { core::ptr::read_volatile(index_ptr(offset)) }
}

fn write_index(offset: u64, v: u32) {
    // SAFETY: as for `read_index`.
    unsafe { core::ptr::write_volatile(index_ptr(offset), v) }
}

fn slot_ptr(ring: *mut Ring, index: u32) -> *mut u8 {
    // SAFETY: index % SLOTS keeps the slot inside the ring.
    unsafe { ring.cast::<u8>().add((index as usize % SLOTS) * SLOT) }
}

pub struct Nic {
    rx_cons: Cell<u32>,
    tx_prod: Cell<u32>,
    kick: Cell<bool>,
}

impl Nic {
    /// Hands the rings to the device; None if it refused them.
    pub fn init() -> Option<Nic> {
        let reg = |r: u64, v: u64| crate::mmio::write(BASE + r, v);
        reg(RX_RING, (&raw const RX) as u64);
        reg(TX_RING, (&raw const TX) as u64);
        reg(SHARED, (&raw const INDICES) as u64);
        reg(RING_SLOTS, SLOTS as u64);
        reg(ENABLE, 1);
        if crate::mmio::read(BASE + STATUS) != 1 {
            return None;
        }
        Some(Nic { rx_cons: Cell::new(0), tx_prod: Cell::new(0), kick: Cell::new(false) })
    }

    pub fn rx_pending(&self) -> bool {
        read_index(SHARED_RX_PROD) != self.rx_cons.get()
    }

    /// One exit sends everything queued since the last kick.
    pub fn kick_if_needed(&self) {
        if self.kick.replace(false) {
            crate::mmio::write(BASE + TX_KICK, 1);
        }
    }

    fn tx_room(&self) -> bool {
        (self.tx_prod.get().wrapping_sub(read_index(SHARED_TX_CONS)) as usize) < SLOTS
    }
}

pub struct RxToken<'a>(&'a Nic);
pub struct TxToken<'a>(&'a Nic);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let nic = self.0;
        let slot = slot_ptr(&raw mut RX, nic.rx_cons.get());
        // SAFETY: the slot is inside RX; the monitor wrote a header and at most MAX_FRAME bytes,
        // and the length is clamped again here so a bad header can't read past the slot.
        let frame = unsafe {
            let len = (core::ptr::read_volatile(slot.cast::<u32>()) & 0xffff) as usize;
            core::slice::from_raw_parts(slot.add(SLOT_HEADER as usize), len.min(MAX_FRAME as usize))
        };
        let r = f(frame);
        nic.rx_cons.set(nic.rx_cons.get().wrapping_add(1));
        write_index(SHARED_RX_CONS, nic.rx_cons.get());
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let nic = self.0;
        let len = len.min(MAX_FRAME as usize);
        let slot = slot_ptr(&raw mut TX, nic.tx_prod.get());
        // SAFETY: the slot is inside TX and len <= MAX_FRAME < SLOT_SIZE - SLOT_HEADER; the
        // monitor reads TX slots only at TX_KICK, after we published the new tx_prod.
        let r = unsafe {
            core::ptr::write_volatile(slot.cast::<u32>(), len as u32);
            f(core::slice::from_raw_parts_mut(slot.add(SLOT_HEADER as usize), len))
        };
        nic.tx_prod.set(nic.tx_prod.get().wrapping_add(1));
        write_index(SHARED_TX_PROD, nic.tx_prod.get());
        nic.kick.set(true);
        r
    }
}

impl phy::Device for Nic {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        (self.rx_pending() && self.tx_room()).then_some((RxToken(self), TxToken(self)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if !self.tx_room() {
            // Let the monitor drain the ring, then try again.
            self.kick.set(true);
            self.kick_if_needed();
        }
        self.tx_room().then_some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}
