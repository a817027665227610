//! The host side of a VM: its TAP device, the guest's network configuration,
//! the arbiter that decides who may go on alone, the status endpoint, and CPU pinning.
pub mod affinity;
pub mod arbiter;
pub mod bind;
pub mod netcfg;
pub mod status;
pub mod tap;
