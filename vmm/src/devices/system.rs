//! The system device: identity, wait-for-event, power-off and fault reports.
use crate::devices::bus::{fill_le, le_value, Device, DeviceEffect, GuestFault};
use guest_abi::system::{EXIT, FAULT_CR2, FAULT_ERROR, FAULT_RIP, FAULT_VECTOR, ID, ID_VALUE, REPL_STATUS, WAIT};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// The system device's input id: `REPL_STATUS` changes reach the guest as input.
pub const INPUT_ID: u16 = 0x5359;

#[derive(Default)]
pub struct SystemDevice {
    fault: GuestFault,
    /// Shared with the replication threads; see `guest_abi::system::REPL_STATUS`.
    repl_status: Arc<AtomicU64>,
    /// What the guest reads as `REPL_STATUS`. The host's value is not a function of guest
    /// state, so it reaches the guest only as logged input at a counted exit: a follower
    /// that replays exits its primary ran unprotected (a resumed log) reads what the
    /// primary read there.
    shown: u64,
}

impl SystemDevice {
    pub fn new(repl_status: Arc<AtomicU64>) -> Self {
        SystemDevice { fault: GuestFault::default(), repl_status, shown: 0 }
    }
}

impl Device for SystemDevice {
    fn name(&self) -> &'static str {
        "system"
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            ID => ID_VALUE,
            REPL_STATUS => self.shown,
            _ => 0,
        };
        fill_le(data, value);
    }

    fn write(&mut self, offset: u64, data: &[u8], _mem: &GuestMemoryMmap) -> DeviceEffect {
        let value = le_value(data);
        match offset {
            WAIT => DeviceEffect::Wait,
            EXIT => DeviceEffect::PowerOff(value as u32),
            FAULT_ERROR => {
                self.fault.error = value;
                DeviceEffect::None
            }
            FAULT_RIP => {
                self.fault.rip = value;
                DeviceEffect::None
            }
            FAULT_CR2 => {
                self.fault.cr2 = value;
                DeviceEffect::None
            }
            FAULT_VECTOR => {
                self.fault.vector = value;
                DeviceEffect::GuestFault(self.fault)
            }
            _ => DeviceEffect::None,
        }
    }

    fn input_id(&self) -> Option<u16> {
        Some(INPUT_ID)
    }

    fn input(&mut self, bytes: &[u8], _mem: &GuestMemoryMmap) -> Result<(), crate::devices::bus::InputRefused> {
        let value = crate::devices::u64s::<1>(bytes).ok_or(crate::devices::bus::InputRefused::NotAccepted)?;
        self.shown = value[0];
        Ok(())
    }

    fn host_input(&self) -> Option<Vec<u8>> {
        let host = self.repl_status.load(Ordering::Relaxed);
        (host != self.shown).then(|| host.to_le_bytes().to_vec())
    }

    fn save(&self) -> Vec<u8> {
        let f = &self.fault;
        [f.vector, f.error, f.rip, f.cr2, self.shown].iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let v = crate::devices::u64s::<5>(state).ok_or("system device state must be 40 bytes")?;
        self.fault = GuestFault { vector: v[0], error: v[1], rip: v[2], cr2: v[3] };
        self.shown = v[4];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("tiny memory")
    }

    #[test]
    fn fault_report_carries_the_registers_written_before_the_vector() {
        let mut dev = SystemDevice::default();
        dev.write(FAULT_ERROR, &7u64.to_le_bytes(), &mem());
        dev.write(FAULT_RIP, &0x1234u64.to_le_bytes(), &mem());
        let effect = dev.write(FAULT_VECTOR, &14u64.to_le_bytes(), &mem());
        assert_eq!(effect, DeviceEffect::GuestFault(GuestFault { vector: 14, error: 7, rip: 0x1234, cr2: 0 }));
    }

    #[test]
    fn id_register_reads_the_constant_at_any_width() {
        let mut dev = SystemDevice::default();
        let mut d = [0u8; 4];
        dev.read(ID, &mut d);
        assert_eq!(le_value(&d), ID_VALUE);
    }

    #[test]
    fn repl_status_reaches_the_guest_only_as_input_and_travels_with_the_state() {
        let host = Arc::new(AtomicU64::new(0));
        let mut dev = SystemDevice::new(host.clone());
        assert_eq!(dev.host_input(), None);
        host.store(1, Ordering::SeqCst);
        let mut d = [0u8; 8];
        dev.read(REPL_STATUS, &mut d);
        assert_eq!(le_value(&d), 0, "the host's change is not seen before it is input");
        let input = dev.host_input().expect("a change to take in");
        dev.input(&input, &mem()).expect("input");
        dev.read(REPL_STATUS, &mut d);
        assert_eq!(le_value(&d), 1);
        assert_eq!(dev.host_input(), None);

        // A replaying follower's host value is its own; the guest sees what was logged.
        let mut replica = SystemDevice::new(Arc::new(AtomicU64::new(1)));
        replica.restore(&dev.save()).expect("restore");
        replica.input(&0u64.to_le_bytes(), &mem()).expect("input");
        replica.read(REPL_STATUS, &mut d);
        assert_eq!(le_value(&d), 0);
        assert!(replica.input(&[1, 2, 3], &mem()).is_err(), "malformed input is refused");
    }
}
