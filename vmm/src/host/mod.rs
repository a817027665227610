//! The host side of a VM: its TAP device, the guest's network configuration,
//! the arbiter that decides who may go on alone, the register a replica group's
//! witness keeps its ballot in, the status endpoint (HTTP: status, metrics,
//! dashboard), CPU pinning, threads' scheduling and CPU times, the mirrored input
//! a follower keeps for go-live, the frames that tell clients at go-live that an
//! outage is over, the TLS that locks the replication channels, and the check
//! that nobody else answers for the guest's address before a VM boots to serve it.
pub mod address_check;
pub mod affinity;
pub mod arbiter;
pub mod bind;
pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod netcfg;
pub mod nudge;
pub mod records;
pub mod register;
pub mod sched;
pub mod scope;
pub mod status;
pub mod tap;
pub mod tls;
