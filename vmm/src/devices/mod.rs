//! The guest's devices. Each is a pure state machine behind the [`crate::devices::bus::Bus`].
pub mod bus;
pub mod console;
pub mod nic;
pub mod system;

use crate::devices::bus::{Bus, BusError};
use guest_abi::DEVICE_PAGE;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// `N` little-endian u64s, if `bytes` is exactly that long.
pub fn u64s<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut out = [0u64; N];
    for (v, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *v = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(out)
}

/// The standard device set every ftvmm VM gets, at the addresses of `guest_abi`.
pub fn standard_bus(repl_status: Arc<AtomicU64>) -> Result<Bus, BusError> {
    let mut bus = Bus::default();
    bus.insert(guest_abi::system::BASE, DEVICE_PAGE, Box::new(system::SystemDevice::new(repl_status)))?;
    bus.insert(guest_abi::console::BASE, DEVICE_PAGE, Box::new(console::Console::default()))?;
    bus.insert(guest_abi::nic::BASE, DEVICE_PAGE, Box::new(nic::Nic::default()))?;
    Ok(bus)
}
