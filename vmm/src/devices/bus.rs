//! One bus abstraction for every device, so the vCPU loop never knows an address.
//!
//! A [`Bus`] maps address ranges to devices. A device access returns a
//! [`DeviceEffect`]: the few things a device can ask of the monitor (print
//! output, wait for an event, power off, report a guest fault). Devices never
//! block and never see time: a device is a pure function of the guest's
//! accesses and of the events the log feeds it, which is what makes replay exact.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;

/// The unit [`MonitorWrites`] counts in (a guest page).
const PAGE: u64 = 4096;

/// What a device access asks the monitor to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEffect {
    None,
    /// Something leaves the VM. Subject to the Output Rule.
    Output(Output),
    /// The guest has nothing to do until the next event.
    Wait,
    /// The guest powered off with this code.
    PowerOff(u32),
    /// The guest took an exception it cannot handle.
    GuestFault(GuestFault),
}

/// What leaves the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Console(Vec<u8>),
    /// Ethernet frames, in transmit order.
    Frames(Vec<Vec<u8>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestFault {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cr2: u64,
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exception {} (error code {:#x}) at rip {:#x}, cr2 {:#x}",
            self.vector, self.error, self.rip, self.cr2
        )
    }
}

pub trait Device: Send {
    fn name(&self) -> &'static str;
    /// Fills `data` with the register at `offset`. Unknown registers read as zero.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap) -> DeviceEffect;
    /// The number that logged `DeviceInput` events use for this device, if it takes input.
    fn input_id(&self) -> Option<u16> {
        None
    }
    /// Whether [`Device::input`] would take data now. A function of device and guest
    /// state only, so a replay gets the same answer at the same exit.
    fn input_ready(&self, _mem: &GuestMemoryMmap) -> bool {
        false
    }
    /// Data from outside the VM (a received frame), applied at a counted exit.
    fn input(&mut self, _bytes: &[u8], _mem: &GuestMemoryMmap) -> Result<(), InputRefused> {
        Err(InputRefused::NotAccepted)
    }
    /// Host state the device must take in at the next counted exit of a live VM, as
    /// [`Device::input`] bytes. A live VM applies and logs it like any input, so that a
    /// replay sees the same value at the same exit (`REPL_STATUS`).
    fn host_input(&self) -> Option<Vec<u8>> {
        None
    }
    /// The guest memory ranges `(address, length)` the device itself writes (from the
    /// monitor, around KVM, so KVM's dirty-page log does not see them), as configured now.
    fn monitor_writes(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }
    /// The device's state, for a new backup (little-endian, the device's own layout).
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Takes the state `save` produced on the primary.
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!("{} has no state to restore, got {} bytes", self.name(), state.len()))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputRefused {
    #[error("no device {0} takes input")]
    NoSuchDevice(u16),
    #[error("the device does not take input")]
    NotAccepted,
    #[error("the device is not ready (disabled, or its receive ring is full)")]
    NotReady,
    #[error("input of {0} bytes is larger than the device takes")]
    TooLarge(usize),
}

struct Slot {
    base: u64,
    len: u64,
    device: Box<dyn Device>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("device {new} at {base:#x}+{len:#x} overlaps device {existing}")]
    Overlap { new: &'static str, existing: &'static str, base: u64, len: u64 },
}

#[derive(Default)]
pub struct Bus {
    slots: Vec<Slot>,
    /// While a pre-copy runs: the pages devices may have written since it last looked.
    monitor_written: Option<MonitorWrites>,
}

/// The pages devices wrote to guest memory themselves (around KVM), noted by the bus
/// on the vCPU thread and taken by a pre-copy on its own thread, round by round.
#[derive(Debug, Clone, Default)]
pub struct MonitorWrites(Arc<Mutex<BTreeSet<u64>>>);

impl MonitorWrites {
    /// The pages noted since the last call, ascending (a superset: every page of every
    /// range a device that was written to or given input could write).
    pub fn take(&self) -> Vec<u64> {
        let mut pages = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pages).into_iter().collect()
    }
}

/// An access to an address no device claims; the loop logs it and goes on
/// (reads see all ones, like an empty bus), so a guest can't crash the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unclaimed(pub u64);

impl Bus {
    pub fn insert(&mut self, base: u64, len: u64, device: Box<dyn Device>) -> Result<(), BusError> {
        if let Some(s) = self.slots.iter().find(|s| base < s.base + s.len && s.base < base + len) {
            return Err(BusError::Overlap { new: device.name(), existing: s.device.name(), base, len });
        }
        self.slots.push(Slot { base, len, device });
        self.slots.sort_by_key(|s| s.base);
        Ok(())
    }

    fn find(&mut self, addr: u64) -> Option<(&mut Slot, u64)> {
        let i = self.slots.partition_point(|s| s.base <= addr).checked_sub(1)?;
        let slot = &mut self.slots[i];
        let offset = addr - slot.base;
        (offset < slot.len).then_some((slot, offset))
    }

    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> Result<(), Unclaimed> {
        match self.find(addr) {
            Some((slot, offset)) => {
                slot.device.read(offset, data);
                Ok(())
            }
            None => {
                data.fill(0xff);
                Err(Unclaimed(addr))
            }
        }
    }

    pub fn write(&mut self, addr: u64, data: &[u8], mem: &GuestMemoryMmap) -> Result<DeviceEffect, Unclaimed> {
        let (slot, offset) = self.find(addr).ok_or(Unclaimed(addr))?;
        let effect = slot.device.write(offset, data, mem);
        let ranges = slot.device.monitor_writes();
        self.note_writes(&ranges);
        Ok(effect)
    }

    /// Starts noting (afresh) the pages devices write to guest memory themselves: a
    /// pre-copy must send those again, as KVM's dirty log misses them.
    pub fn track_monitor_writes(&mut self) -> MonitorWrites {
        let writes = MonitorWrites::default();
        self.monitor_written = Some(writes.clone());
        writes
    }

    /// Stops noting them.
    pub fn untrack_monitor_writes(&mut self) {
        self.monitor_written = None;
    }

    fn note_writes(&mut self, ranges: &[(u64, u64)]) {
        let Some(writes) = &self.monitor_written else { return };
        if ranges.is_empty() {
            return;
        }
        let mut pages = writes.0.lock().unwrap_or_else(|p| p.into_inner());
        for &(addr, len) in ranges {
            if len > 0 {
                // Ranges were checked to lie in guest RAM when the device accepted them.
                pages.extend(addr / PAGE..=(addr.saturating_add(len - 1)) / PAGE);
            }
        }
    }

    fn by_input_id(&mut self, id: u16) -> Option<&mut Box<dyn Device>> {
        self.slots.iter_mut().map(|s| &mut s.device).find(|d| d.input_id() == Some(id))
    }

    pub fn input_ready(&mut self, id: u16, mem: &GuestMemoryMmap) -> bool {
        self.by_input_id(id).is_some_and(|d| d.input_ready(mem))
    }

    pub fn input(&mut self, id: u16, bytes: &[u8], mem: &GuestMemoryMmap) -> Result<(), InputRefused> {
        let device = self.by_input_id(id).ok_or(InputRefused::NoSuchDevice(id))?;
        let result = device.input(bytes, mem);
        let ranges = device.monitor_writes();
        self.note_writes(&ranges);
        result
    }

    /// The host state devices must take in now: `(input id, bytes)` (see [`Device::host_input`]).
    pub fn host_inputs(&self) -> Vec<(u16, Vec<u8>)> {
        let inputs = self.slots.iter().filter_map(|s| Some((s.device.input_id()?, s.device.host_input()?)));
        inputs.collect()
    }

    /// Every device's state, in address order: `len u32 LE | bytes` per device.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let state = slot.device.save();
            out.extend_from_slice(&(state.len() as u32).to_le_bytes());
            out.extend_from_slice(&state);
        }
        out
    }

    /// Restores what [`Bus::save`] produced on an identical bus.
    pub fn restore(&mut self, mut state: &[u8]) -> Result<(), String> {
        for slot in &mut self.slots {
            let (len, rest) = state.split_first_chunk::<4>().ok_or("device state cut short")?;
            let len = u32::from_le_bytes(*len) as usize;
            let bytes = rest.get(..len).ok_or("device state cut short")?;
            slot.device.restore(bytes)?;
            state = &rest[len..];
        }
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes of device state left over: the buses differ", state.len()))
        }
    }
}

/// Little-endian value of an access of 1 to 8 bytes; longer accesses keep their low 8 bytes.
pub fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// Writes `value` into an access of any width, little-endian, truncating or zero-extending.
pub fn fill_le(data: &mut [u8], value: u64) {
    let bytes = value.to_le_bytes();
    for (i, d) in data.iter_mut().enumerate() {
        *d = bytes.get(i).copied().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Const(u64);
    impl Device for Const {
        fn name(&self) -> &'static str {
            "const"
        }
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            fill_le(data, self.0);
        }
        fn write(&mut self, offset: u64, _data: &[u8], _mem: &GuestMemoryMmap) -> DeviceEffect {
            DeviceEffect::PowerOff(offset as u32)
        }
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 0x1000)]).expect("tiny memory")
    }

    /// A device that says it writes `ranges` of guest memory.
    struct Dma(Vec<(u64, u64)>);
    impl Device for Dma {
        fn name(&self) -> &'static str {
            "dma"
        }
        fn read(&mut self, _offset: u64, _data: &mut [u8]) {}
        fn write(&mut self, _offset: u64, _data: &[u8], _mem: &GuestMemoryMmap) -> DeviceEffect {
            DeviceEffect::None
        }
        fn input_id(&self) -> Option<u16> {
            Some(9)
        }
        fn input(&mut self, _bytes: &[u8], _mem: &GuestMemoryMmap) -> Result<(), InputRefused> {
            Ok(())
        }
        fn monitor_writes(&self) -> Vec<(u64, u64)> {
            self.0.clone()
        }
    }

    #[test]
    fn pages_a_device_writes_itself_are_noted_only_while_tracking() {
        let mut bus = Bus::default();
        bus.insert(0x1000, 0x100, Box::new(Dma(vec![(0x3ff0, 0x20), (0x8000, 1), (0x9000, 0)]))).expect("insert");
        bus.input(9, b"frame", &mem()).expect("input");
        let writes = bus.track_monitor_writes();
        assert!(writes.take().is_empty(), "nothing before tracking began");
        bus.input(9, b"frame", &mem()).expect("input");
        // 0x3ff0..0x4010 spans pages 3 and 4; an empty range is no page.
        assert_eq!(writes.take(), [3, 4, 8]);
        assert!(writes.take().is_empty(), "taken: noted afresh");
        bus.write(0x1000, &[1], &mem()).expect("claimed");
        assert_eq!(writes.take(), [3, 4, 8], "register writes count too (a doorbell)");
        bus.untrack_monitor_writes();
        bus.input(9, b"frame", &mem()).expect("input");
        assert!(writes.take().is_empty(), "not tracking any more");
    }

    #[test]
    fn access_goes_to_the_device_owning_the_address_with_its_offset() {
        let mut bus = Bus::default();
        bus.insert(0x2000, 0x1000, Box::new(Const(7))).expect("insert");
        bus.insert(0x1000, 0x1000, Box::new(Const(5))).expect("insert");
        let mut d = [0u8; 4];
        bus.read(0x1ffc, &mut d).expect("claimed");
        assert_eq!(le_value(&d), 5);
        assert_eq!(bus.write(0x2010, &[1], &mem()), Ok(DeviceEffect::PowerOff(0x10)));
    }

    #[test]
    fn unclaimed_read_sees_all_ones_and_is_reported() {
        let mut bus = Bus::default();
        bus.insert(0x1000, 0x1000, Box::new(Const(5))).expect("insert");
        let mut d = [0u8; 2];
        assert_eq!(bus.read(0x3000, &mut d), Err(Unclaimed(0x3000)));
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!(bus.write(0xfff, &[0], &mem()), Err(Unclaimed(0xfff)));
    }

    #[test]
    fn overlapping_devices_are_refused() {
        let mut bus = Bus::default();
        bus.insert(0x1000, 0x1000, Box::new(Const(5))).expect("insert");
        assert!(bus.insert(0x1800, 0x1000, Box::new(Const(6))).is_err());
    }
}
