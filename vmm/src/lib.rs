//! ftvmm: a small KVM monitor that keeps a backup VM in lockstep with a primary
//! by deterministic record/replay. See DESIGN.md for the determinism contract.
pub mod arbiter;
pub mod boot;
pub mod bus;
pub mod clock;
pub mod cpuid;
pub mod devices;
pub mod digest;
pub mod exit;
pub mod guest_image;
pub mod join;
pub mod kvm_ext;
pub mod launch;
pub mod live;
pub mod machine;
pub mod netcfg;
pub mod pair;
pub mod recorder;
pub mod release;
pub mod replay_driver;
pub mod replayer;
pub mod replication;
pub mod runner;
pub mod snapshot;
pub mod status;
pub mod tap;
pub mod threads;
