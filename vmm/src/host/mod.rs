//! The host side of a VM: its TAP device, the guest's network configuration,
//! the arbiter that decides who may go on alone, the register a replica group's
//! witness keeps its ballot in, and the status endpoint.
pub mod arbiter;
pub mod bind;
pub mod netcfg;
pub mod register;
pub mod status;
pub mod tap;
