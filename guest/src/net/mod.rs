//! Networking: the NIC driver and the key-value server on top of smoltcp.
pub mod nic;
pub mod server;
pub mod sites;
