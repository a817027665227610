//! Attaching a follower: the one path by which a follower gets the VM's state
//! and joins the log stream — at boot (exit 0) and while the VM runs alike.
//!
//! ```text
//!   join-listen: handshake (refused when the group is full)
//!        |  VmEvent::Attach(conn)
//!   vcpu0 at its next counted exit J: stops (Yield::Attach)
//!        |  Attacher::attach(conn, VM at J)
//!        |    state transfer of J (memory, vCPU, devices, epoch)
//!        |    group.add_follower(J)  ->  FollowerLink  ->  fanout
//!   vcpu0 runs on; the follower replays from J+1
//! ```
//! The guest notices nothing but the pause, which is measured and logged.
use super::group::Group;
use super::handshake;
use super::release::SharedReleaser;
use super::stream::{Fanout, FollowerLink};
use super::{ReplicationError, Timing};
use crate::host::status::Stats;
use crate::vm::live::VmEvent;
use crate::vm::machine::AtExit;
use crate::vm::snapshot;
use crossbeam_channel::Sender;
use logging_channel::channel::{hello, Role};
use logging_channel::LogHeader;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// Everything needed to attach followers to this VM.
pub struct Attacher {
    pub group: Arc<Group>,
    pub fanout: Arc<Fanout>,
    pub releaser: SharedReleaser,
    pub stats: Arc<Stats>,
    pub timing: Timing,
    /// The guest's timer rate: a vCPU with a timer that makes no exits is frozen.
    pub tick_hz: u32,
}

impl Attacher {
    /// At the exit `at` (the vCPU is stopped there): sends the state and starts
    /// streaming the log to the follower on `conn`, which replays from the next exit.
    pub fn attach(&self, mut conn: TcpStream, at: AtExit<'_>) -> Result<(), ReplicationError> {
        // Two followers can pass the handshake before either is attached; the group's
        // limit is checked again here, where it cannot change underneath.
        if let Some(why) = self.group.refuse_follower() {
            return Err(ReplicationError::Attach(why));
        }
        let addr = conn.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let epoch = self.group.epoch();
        let sent = snapshot::send(&mut conn, at.vcpu, at.mem, at.bus, at.index, epoch)?;
        let follower = self.group.add_follower(&addr, at.index);
        let id = follower.id;
        let link = FollowerLink::start(
            conn,
            self.timing,
            self.tick_hz,
            follower,
            self.group.clone(),
            self.releaser.clone(),
            self.stats.clone(),
        )?;
        self.fanout.add(link);
        let pause_ms = format!("{:.1}", sent.pause.as_secs_f64() * 1e3);
        let followers = self.group.follower_count();
        if at.index == 0 {
            tracing::info!(follower = id, %addr, epoch, followers, "follower paired at boot: state sent");
        } else {
            tracing::info!(
                follower = id,
                %addr,
                exit = at.index,
                epoch,
                followers,
                pages = sent.pages,
                bytes = sent.bytes,
                pause_ms,
                "new backup joined: state sent, protected again"
            );
        }
        Ok(())
    }
}

/// Starts `join-listen` on `listener`: pairs followers (refusing them while the group
/// is full) and hands each to the vCPU, which attaches it at its next exit.
pub fn spawn_listener(
    listener: TcpListener,
    machine: LogHeader,
    group: Arc<Group>,
    events: Sender<VmEvent>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("join-listen".into()).spawn(move || loop {
        let local = || hello(Role::Primary, &machine, group.epoch());
        let refuse = || group.refuse_follower();
        match handshake::accept_backup(&listener, &local, &refuse) {
            Ok(stream) => {
                if events.send(VmEvent::Attach(stream)).is_err() {
                    return; // the VM has stopped
                }
            }
            Err(e) => tracing::warn!("join: {e}"),
        }
    })?;
    Ok(())
}
