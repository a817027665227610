//! One VM and its vCPU loop. Nothing here knows about replication: the loop
//! asks a driver what enters the guest at each counted exit (live, replay, or
//! record), and stops at the points where the fault-tolerance core must act
//! (a follower attaching, a replayed log ending).
pub mod boot;
pub mod checkpoint;
pub mod clock;
pub mod cpuid;
pub mod digest;
pub mod dirtylog;
pub mod driver;
pub mod exit;
pub mod guest_image;
pub mod kvm_ext;
pub mod live;
pub mod machine;
pub mod outbox;
pub mod pagediff;
pub mod precopy;
pub mod progress;
pub mod recorder;
pub mod replay;
pub mod replayer;
pub mod runner;
pub mod snapshot;
