//! Turning one `KVM_RUN` result into what the vCPU loop should do.
//!
//! This is the only place that looks at a `VcpuExit`. It does the device
//! access and classifies the exit: *counted* exits (port I/O, MMIO, HLT) are
//! synchronous, caused by the guest's own instructions, and so happen at the
//! same point on every replay; they are the only points where events may be
//! injected. Everything else (a signal, `immediate_exit`) is uncounted.
use crate::devices::bus::{le_value, Bus, DeviceEffect};
use kvm_ioctls::VcpuExit;
use logging_channel::ExitKind;
use vm_memory::GuestMemoryMmap;

/// The monitor's two address spaces.
pub struct Buses {
    pub mmio: Bus,
    pub pio: Bus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedExit {
    pub kind: ExitKind,
    pub addr: u64,
    /// The value written, or the value the device returned for a read.
    pub data: u64,
    pub effect: DeviceEffect,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalExit {
    #[error("the guest triple-faulted (KVM_EXIT_SHUTDOWN)")]
    TripleFault,
    #[error("KVM could not emulate a guest instruction (KVM_EXIT_INTERNAL_ERROR); on PVM hosts this is SSE arithmetic in ring 0")]
    InternalError,
    #[error("KVM refused to enter the guest (hardware reason {0:#x})")]
    FailEntry(u64),
    #[error("unexpected VM exit {0}")]
    Unexpected(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    Counted(CountedExit),
    Uncounted,
    Fatal(FatalExit),
}

/// Performs the device access of `exit` and says what it means for the loop.
pub fn handle_exit(exit: VcpuExit<'_>, buses: &mut Buses, mem: &GuestMemoryMmap) -> ExitAction {
    let counted = |kind, addr, data, effect| ExitAction::Counted(CountedExit { kind, addr, data, effect });
    match exit {
        VcpuExit::MmioRead(addr, data) => {
            note_unclaimed(buses.mmio.read(addr, data));
            counted(ExitKind::MmioRead, addr, le_value(data), DeviceEffect::None)
        }
        VcpuExit::MmioWrite(addr, data) => {
            let effect = buses.mmio.write(addr, data, mem).unwrap_or_else(unclaimed_write);
            counted(ExitKind::MmioWrite, addr, le_value(data), effect)
        }
        VcpuExit::IoIn(port, data) => {
            note_unclaimed(buses.pio.read(u64::from(port), data));
            counted(ExitKind::IoIn, u64::from(port), le_value(data), DeviceEffect::None)
        }
        VcpuExit::IoOut(port, data) => {
            let effect = buses.pio.write(u64::from(port), data, mem).unwrap_or_else(unclaimed_write);
            counted(ExitKind::IoOut, u64::from(port), le_value(data), effect)
        }
        VcpuExit::Hlt => counted(ExitKind::Hlt, 0, 0, DeviceEffect::Wait),
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => ExitAction::Uncounted,
        VcpuExit::Shutdown => ExitAction::Fatal(FatalExit::TripleFault),
        VcpuExit::InternalError => ExitAction::Fatal(FatalExit::InternalError),
        VcpuExit::FailEntry(reason, _) => ExitAction::Fatal(FatalExit::FailEntry(reason)),
        other => ExitAction::Fatal(FatalExit::Unexpected(format!("{other:?}"))),
    }
}

// A guest poking at addresses nothing owns is the guest's problem, not the monitor's:
// trace it (not warn: a hostile guest could flood the log) and carry on.
fn note_unclaimed(r: Result<(), crate::devices::bus::Unclaimed>) {
    if let Err(u) = r {
        tracing::debug!(addr = u.0, "guest read an unclaimed address");
    }
}

fn unclaimed_write(u: crate::devices::bus::Unclaimed) -> DeviceEffect {
    tracing::debug!(addr = u.0, "guest wrote an unclaimed address");
    DeviceEffect::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::standard_bus;
    use guest_abi::system;
    use vm_memory::GuestAddress;

    fn setup() -> (Buses, GuestMemoryMmap) {
        let buses = Buses { mmio: standard_bus(Default::default()).expect("bus"), pio: Bus::default() };
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("memory");
        (buses, mem)
    }

    #[test]
    fn mmio_read_is_counted_and_filled_by_the_device() {
        let (mut buses, mem) = setup();
        let mut data = [0u8; 8];
        let action = handle_exit(VcpuExit::MmioRead(system::BASE + system::ID, &mut data), &mut buses, &mem);
        assert_eq!(
            action,
            ExitAction::Counted(CountedExit {
                kind: ExitKind::MmioRead,
                addr: system::BASE,
                data: system::ID_VALUE,
                effect: DeviceEffect::None
            })
        );
        assert_eq!(le_value(&data), system::ID_VALUE);
    }

    #[test]
    fn wait_register_write_asks_the_loop_to_wait() {
        let (mut buses, mem) = setup();
        let action =
            handle_exit(VcpuExit::MmioWrite(system::BASE + system::WAIT, &[9, 0, 0, 0, 0, 0, 0, 0]), &mut buses, &mem);
        let ExitAction::Counted(c) = action else { panic!("not counted: {action:?}") };
        assert_eq!((c.kind, c.data, c.effect), (ExitKind::MmioWrite, 9, DeviceEffect::Wait));
    }

    #[test]
    fn signals_and_interrupt_windows_are_not_counted() {
        let (mut buses, mem) = setup();
        assert_eq!(handle_exit(VcpuExit::Intr, &mut buses, &mem), ExitAction::Uncounted);
        assert_eq!(handle_exit(VcpuExit::IrqWindowOpen, &mut buses, &mem), ExitAction::Uncounted);
    }

    #[test]
    fn port_read_nobody_owns_is_counted_and_reads_all_ones() {
        let (mut buses, mem) = setup();
        let mut data = [0u8; 1];
        let action = handle_exit(VcpuExit::IoIn(0x3f8, &mut data), &mut buses, &mem);
        assert!(matches!(action, ExitAction::Counted(CountedExit { kind: ExitKind::IoIn, data: 0xff, .. })));
    }

    #[test]
    fn triple_fault_is_fatal() {
        let (mut buses, mem) = setup();
        assert_eq!(handle_exit(VcpuExit::Shutdown, &mut buses, &mem), ExitAction::Fatal(FatalExit::TripleFault));
    }
}
