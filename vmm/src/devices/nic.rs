//! The NIC: two rings of slots in guest memory (layout in `guest_abi::nic`).
//!
//! Received frames are written into the RX ring by [`Device::input`], which the
//! vCPU loop calls only at a counted exit, recording the frame in the log, so a
//! replay writes the same bytes at the same instruction. Transmit is a doorbell:
//! the guest fills TX slots and writes `TX_KICK`; the frames become output.
//!
//! Everything the guest controls (ring addresses, slot count, indices, lengths)
//! is checked; a bad value disables the device or drops the frame, with a
//! warning, and never touches memory outside guest RAM.
use crate::devices::bus::{fill_le, le_value, Device, DeviceEffect, InputRefused, Output};
use guest_abi::nic::{
    DEVICE_ID, ENABLE, MAX_FRAME, MAX_SLOTS, RING_SLOTS, RX_RING, SHARED, SHARED_RX_CONS, SHARED_RX_PROD,
    SHARED_TX_CONS, SHARED_TX_PROD, SLOT_HEADER, SLOT_SIZE, STATUS, TX_KICK, TX_RING,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Config {
    rx_ring: u64,
    tx_ring: u64,
    shared: u64,
    slots: u64,
}

#[derive(Debug, Default)]
pub struct Nic {
    pending: Config,
    /// Set once ENABLE accepted `pending`.
    active: Option<Config>,
    rx_prod: u32,
    tx_cons: u32,
    /// Counts of what was refused, for the monitor's own diagnostics.
    pub dropped_tx: u64,
}

impl Device for Nic {
    fn name(&self) -> &'static str {
        "nic"
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        fill_le(data, if offset == STATUS { u64::from(self.active.is_some()) } else { 0 });
    }

    fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap) -> DeviceEffect {
        let value = le_value(data);
        match offset {
            RX_RING => self.pending.rx_ring = value,
            TX_RING => self.pending.tx_ring = value,
            SHARED => self.pending.shared = value,
            RING_SLOTS => self.pending.slots = value,
            ENABLE => self.enable(value, mem),
            TX_KICK => return self.transmit(mem),
            _ => {}
        }
        DeviceEffect::None
    }

    fn input_id(&self) -> Option<u16> {
        Some(DEVICE_ID)
    }

    fn input_ready(&self, mem: &GuestMemoryMmap) -> bool {
        match self.active {
            Some(cfg) => self.rx_free(&cfg, mem) > 0,
            None => false,
        }
    }

    fn monitor_writes(&self) -> Vec<(u64, u64)> {
        // The RX ring (frames and their lengths) and the shared indices; the TX ring is
        // only read. ENABLE checked that both lie in RAM.
        match self.active {
            Some(cfg) => vec![(cfg.rx_ring, cfg.slots.saturating_mul(SLOT_SIZE)), (cfg.shared, 16)],
            None => Vec::new(),
        }
    }

    fn save(&self) -> Vec<u8> {
        let a = self.active.unwrap_or_default();
        let p = self.pending;
        let words = [
            p.rx_ring,
            p.tx_ring,
            p.shared,
            p.slots,
            u64::from(self.active.is_some()),
            a.rx_ring,
            a.tx_ring,
            a.shared,
            a.slots,
            u64::from(self.rx_prod),
            u64::from(self.tx_cons),
            self.dropped_tx,
        ];
        words.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let w = crate::devices::u64s::<12>(state).ok_or("NIC state must be 96 bytes")?;
        self.pending = Config { rx_ring: w[0], tx_ring: w[1], shared: w[2], slots: w[3] };
        let active = Config { rx_ring: w[5], tx_ring: w[6], shared: w[7], slots: w[8] };
        // Only a configuration ENABLE accepted can be active: never trust a peer's bytes more
        // than the guest's own register writes.
        self.active = (w[4] == 1).then_some(active);
        if let Some(cfg) = self.active {
            if !cfg.slots.is_power_of_two() || cfg.slots > MAX_SLOTS {
                return Err(format!("NIC state has an invalid ring size {}", cfg.slots));
            }
        }
        self.rx_prod = w[9] as u32;
        self.tx_cons = w[10] as u32;
        self.dropped_tx = w[11];
        Ok(())
    }

    fn input(&mut self, frame: &[u8], mem: &GuestMemoryMmap) -> Result<(), InputRefused> {
        let cfg = self.active.ok_or(InputRefused::NotReady)?;
        if frame.len() as u64 > MAX_FRAME {
            return Err(InputRefused::TooLarge(frame.len()));
        }
        if self.rx_free(&cfg, mem) == 0 {
            return Err(InputRefused::NotReady);
        }
        let slot = cfg.rx_ring + u64::from(self.rx_prod) % cfg.slots * SLOT_SIZE;
        // Addresses were range-checked at ENABLE, so these writes stay inside guest RAM.
        let header = (frame.len() as u32).to_le_bytes();
        let written = mem
            .write_slice(&header, GuestAddress(slot))
            .and_then(|()| mem.write_slice(frame, GuestAddress(slot + SLOT_HEADER)));
        if written.is_err() {
            return Err(InputRefused::NotReady);
        }
        self.rx_prod = self.rx_prod.wrapping_add(1);
        let _ = mem.write_obj(self.rx_prod, GuestAddress(cfg.shared + SHARED_RX_PROD));
        Ok(())
    }
}

impl Nic {
    fn enable(&mut self, value: u64, mem: &GuestMemoryMmap) {
        if value == 0 {
            self.active = None;
            return;
        }
        let cfg = self.pending;
        let ring_bytes = cfg.slots.saturating_mul(SLOT_SIZE);
        let ok = cfg.slots.is_power_of_two()
            && cfg.slots <= MAX_SLOTS
            && in_ram(mem, cfg.rx_ring, ring_bytes)
            && in_ram(mem, cfg.tx_ring, ring_bytes)
            && in_ram(mem, cfg.shared, 16);
        if !ok {
            tracing::warn!(
                ?cfg,
                "guest NIC configuration refused: rings must lie in RAM, slots a power of two <= {MAX_SLOTS}"
            );
            self.active = None;
            return;
        }
        self.rx_prod = 0;
        self.tx_cons = 0;
        for off in [SHARED_RX_PROD, SHARED_RX_CONS, SHARED_TX_PROD, SHARED_TX_CONS] {
            let _ = mem.write_obj(0u32, GuestAddress(cfg.shared + off));
        }
        self.active = Some(cfg);
    }

    fn rx_free(&self, cfg: &Config, mem: &GuestMemoryMmap) -> u64 {
        let cons: u32 = mem.read_obj(GuestAddress(cfg.shared + SHARED_RX_CONS)).unwrap_or(self.rx_prod);
        let used = u64::from(self.rx_prod.wrapping_sub(cons));
        // A guest that claims to have consumed more than was produced gets a full ring.
        cfg.slots.saturating_sub(used)
    }

    fn transmit(&mut self, mem: &GuestMemoryMmap) -> DeviceEffect {
        let Some(cfg) = self.active else {
            return DeviceEffect::None;
        };
        let prod: u32 = mem.read_obj(GuestAddress(cfg.shared + SHARED_TX_PROD)).unwrap_or(self.tx_cons);
        let count = u64::from(prod.wrapping_sub(self.tx_cons));
        if count > cfg.slots {
            tracing::warn!(prod, cons = self.tx_cons, "guest NIC TX index out of range; resynchronising");
            self.tx_cons = prod;
            return DeviceEffect::None;
        }
        let mut frames = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let slot = cfg.tx_ring + u64::from(self.tx_cons) % cfg.slots * SLOT_SIZE;
            match read_frame(mem, slot) {
                Some(frame) => frames.push(frame),
                None => self.dropped_tx += 1,
            }
            self.tx_cons = self.tx_cons.wrapping_add(1);
        }
        let _ = mem.write_obj(self.tx_cons, GuestAddress(cfg.shared + SHARED_TX_CONS));
        if frames.is_empty() {
            DeviceEffect::None
        } else {
            DeviceEffect::Output(Output::Frames(frames))
        }
    }
}

fn in_ram(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    len > 0 && addr.checked_add(len).is_some() && mem.check_range(GuestAddress(addr), len as usize)
}

fn read_frame(mem: &GuestMemoryMmap, slot: u64) -> Option<Vec<u8>> {
    let len: u32 = mem.read_obj(GuestAddress(slot)).ok()?;
    let len = u64::from(len & 0xffff);
    if !(14..=MAX_FRAME).contains(&len) {
        return None;
    }
    let mut frame = vec![0u8; len as usize];
    mem.read_slice(&mut frame, GuestAddress(slot + SLOT_HEADER)).ok()?;
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RX: u64 = 0x10000;
    const TX: u64 = 0x20000;
    const SH: u64 = 0x30000;

    fn setup(slots: u64) -> (Nic, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40000)]).expect("memory");
        let mut nic = Nic::default();
        for (reg, v) in [(RX_RING, RX), (TX_RING, TX), (SHARED, SH), (RING_SLOTS, slots), (ENABLE, 1)] {
            nic.write(reg, &v.to_le_bytes(), &mem);
        }
        (nic, mem)
    }

    #[test]
    fn received_frame_lands_in_the_next_rx_slot_and_bumps_rx_prod() {
        let (mut nic, mem) = setup(4);
        nic.input(&[7u8; 60], &mem).expect("accepted");
        nic.input(&[8u8; 61], &mem).expect("accepted");
        let len: u32 = mem.read_obj(GuestAddress(RX + SLOT_SIZE)).expect("read");
        let byte: u8 = mem.read_obj(GuestAddress(RX + SLOT_SIZE + SLOT_HEADER)).expect("read");
        let prod: u32 = mem.read_obj(GuestAddress(SH + SHARED_RX_PROD)).expect("read");
        assert_eq!((len, byte, prod), (61, 8, 2));
    }

    #[test]
    fn full_rx_ring_refuses_input_until_the_guest_consumes() {
        let (mut nic, mem) = setup(2);
        nic.input(&[1; 60], &mem).expect("slot 0");
        nic.input(&[1; 60], &mem).expect("slot 1");
        assert!(!nic.input_ready(&mem));
        assert_eq!(nic.input(&[1; 60], &mem), Err(InputRefused::NotReady));
        mem.write_obj(1u32, GuestAddress(SH + SHARED_RX_CONS)).expect("consume one");
        assert!(nic.input_ready(&mem));
    }

    #[test]
    fn tx_kick_outputs_the_filled_slots_in_order() {
        let (mut nic, mem) = setup(4);
        for (i, len) in [(0u64, 60u32), (1, 70)] {
            mem.write_obj(len, GuestAddress(TX + i * SLOT_SIZE)).expect("len");
            mem.write_slice(&vec![i as u8 + 1; len as usize], GuestAddress(TX + i * SLOT_SIZE + SLOT_HEADER))
                .expect("data");
        }
        mem.write_obj(2u32, GuestAddress(SH + SHARED_TX_PROD)).expect("prod");
        let effect = nic.write(TX_KICK, &[1], &mem);
        let DeviceEffect::Output(Output::Frames(frames)) = effect else { panic!("no frames: {effect:?}") };
        assert_eq!(frames.iter().map(Vec::len).collect::<Vec<_>>(), vec![60, 70]);
        assert_eq!(mem.read_obj::<u32>(GuestAddress(SH + SHARED_TX_CONS)).expect("cons"), 2);
    }

    #[test]
    fn hostile_configuration_and_indices_are_refused_without_touching_memory_outside_ram() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40000)]).expect("memory");
        let mut nic = Nic::default();
        for (reg, v) in [(RX_RING, u64::MAX - 10), (TX_RING, TX), (SHARED, SH), (RING_SLOTS, 3), (ENABLE, 1)] {
            nic.write(reg, &v.to_le_bytes(), &mem);
        }
        let mut status = [0u8; 8];
        nic.read(STATUS, &mut status);
        assert_eq!(le_value(&status), 0);
        assert_eq!(nic.input(&[0; 60], &mem), Err(InputRefused::NotReady));

        let (mut nic, mem) = setup(4);
        mem.write_obj(1000u32, GuestAddress(SH + SHARED_TX_PROD)).expect("bogus prod");
        assert_eq!(nic.write(TX_KICK, &[1], &mem), DeviceEffect::None);
        mem.write_obj(u32::MAX, GuestAddress(TX)).expect("bogus len");
        mem.write_obj(1001u32, GuestAddress(SH + SHARED_TX_PROD)).expect("prod");
        assert_eq!(nic.write(TX_KICK, &[1], &mem), DeviceEffect::None);
        assert_eq!(nic.dropped_tx, 1);
        assert_eq!(nic.input(&[0; 4000], &mem), Err(InputRefused::TooLarge(4000)));
    }
}
