//! ftvmm: a small KVM monitor that keeps follower VMs in lockstep with a primary
//! by deterministic record/replay (`docs/design.md` explains the whole design).
//!
//! The folders show the layers, each using only those before it:
//!
//! | layer | what it is |
//! |---|---|
//! | [`devices`] | the device bus and the guest's devices; devices return effects, they do no I/O |
//! | [`vm`] | one VM: memory, the vCPU loop, live / replay / record drivers, digests, snapshots |
//! | [`host`] | the host side: TAP, guest network config, the arbiter, status |
//! | [`ft`] | the fault-tolerance core: the group, the log stream, the Output Rule, attach, go-live |
//! | [`launch`] | putting one command together and running its threads |
pub mod devices;
pub mod ft;
pub mod host;
pub mod launch;
pub mod vm;
