//! The guest's devices. Each is a pure state machine behind the [`crate::bus::Bus`].
pub mod console;
pub mod nic;
pub mod system;

use crate::bus::{Bus, BusError};
use guest_abi::DEVICE_PAGE;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The standard device set every ftvmm VM gets, at the addresses of `guest_abi`.
pub fn standard_bus(repl_status: Arc<AtomicU64>) -> Result<Bus, BusError> {
    let mut bus = Bus::default();
    bus.insert(guest_abi::system::BASE, DEVICE_PAGE, Box::new(system::SystemDevice::new(repl_status)))?;
    bus.insert(guest_abi::console::BASE, DEVICE_PAGE, Box::new(console::Console::default()))?;
    bus.insert(guest_abi::nic::BASE, DEVICE_PAGE, Box::new(nic::Nic::default()))?;
    Ok(bus)
}
