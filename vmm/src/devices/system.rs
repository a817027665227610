//! The system device: identity, wait-for-event, power-off and fault reports.
use crate::devices::bus::{fill_le, le_value, Device, DeviceEffect, GuestFault};
use guest_abi::system::{EXIT, FAULT_CR2, FAULT_ERROR, FAULT_RIP, FAULT_VECTOR, ID, ID_VALUE, REPL_STATUS, WAIT};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

#[derive(Default)]
pub struct SystemDevice {
    fault: GuestFault,
    /// Shared with the replication threads; see `guest_abi::system::REPL_STATUS`.
    repl_status: Arc<AtomicU64>,
}

impl SystemDevice {
    pub fn new(repl_status: Arc<AtomicU64>) -> Self {
        SystemDevice { fault: GuestFault::default(), repl_status }
    }
}

impl Device for SystemDevice {
    fn name(&self) -> &'static str {
        "system"
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            ID => ID_VALUE,
            REPL_STATUS => self.repl_status.load(Ordering::Relaxed),
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

    fn save(&self) -> Vec<u8> {
        let f = &self.fault;
        [f.vector, f.error, f.rip, f.cr2].iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let v = crate::devices::u64s::<4>(state).ok_or("system device state must be 32 bytes")?;
        self.fault = GuestFault { vector: v[0], error: v[1], rip: v[2], cr2: v[3] };
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
}
