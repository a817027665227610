//! The console: the guest hands over a whole buffer (address, then length).
//!
//! The bytes are read from guest memory at the exit, so what is printed is a
//! function of guest state alone. A bad address or length from the guest is
//! logged and dropped; it never reaches the host's memory or stops the VM.
use crate::devices::bus::{le_value, Device, DeviceEffect, Output};
use guest_abi::console::{MAX_TX, TX_ADDR, TX_BYTE, TX_LEN};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Default)]
pub struct Console {
    tx_addr: u64,
}

impl Device for Console {
    fn name(&self) -> &'static str {
        "console"
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap) -> DeviceEffect {
        let value = le_value(data);
        match offset {
            TX_ADDR => {
                self.tx_addr = value;
                DeviceEffect::None
            }
            TX_LEN => self.transmit(value, mem),
            TX_BYTE => DeviceEffect::Output(Output::Console(vec![value as u8])),
            _ => DeviceEffect::None,
        }
    }

    fn save(&self) -> Vec<u8> {
        self.save_state()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = state.try_into().map_err(|_| format!("console state is {} bytes, not 8", state.len()))?;
        self.tx_addr = u64::from_le_bytes(b);
        Ok(())
    }
}

impl Console {
    fn save_state(&self) -> Vec<u8> {
        self.tx_addr.to_le_bytes().to_vec()
    }

    fn transmit(&self, len: u64, mem: &GuestMemoryMmap) -> DeviceEffect {
        if len > MAX_TX {
            tracing::warn!(len, "guest console write longer than {MAX_TX} bytes dropped");
            return DeviceEffect::None;
        }
        let mut buf = vec![0u8; len as usize];
        match mem.read_slice(&mut buf, GuestAddress(self.tx_addr)) {
            Ok(()) => DeviceEffect::Output(Output::Console(buf)),
            Err(e) => {
                tracing::warn!(addr = self.tx_addr, len, "guest console write outside RAM dropped: {e}");
                DeviceEffect::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_with(at: u64, bytes: &[u8]) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).expect("memory");
        mem.write_slice(bytes, GuestAddress(at)).expect("write");
        mem
    }

    #[test]
    fn buffer_handed_over_by_address_and_length_is_output() {
        let mem = mem_with(0x100, b"hello\n");
        let mut c = Console::default();
        c.write(TX_ADDR, &0x100u64.to_le_bytes(), &mem);
        assert_eq!(
            c.write(TX_LEN, &6u64.to_le_bytes(), &mem),
            DeviceEffect::Output(Output::Console(b"hello\n".to_vec()))
        );
    }

    #[test]
    fn hostile_address_or_length_is_dropped_without_output() {
        let mem = mem_with(0, b"");
        let mut c = Console::default();
        c.write(TX_ADDR, &0x1ff0u64.to_le_bytes(), &mem);
        assert_eq!(c.write(TX_LEN, &64u64.to_le_bytes(), &mem), DeviceEffect::None);
        assert_eq!(c.write(TX_LEN, &u64::MAX.to_le_bytes(), &mem), DeviceEffect::None);
        c.write(TX_ADDR, &u64::MAX.to_le_bytes(), &mem);
        assert_eq!(c.write(TX_LEN, &2u64.to_le_bytes(), &mem), DeviceEffect::None);
    }
}
