//! The attacher's side of a pre-copy ([`crate::vm::precopy`]): answering the
//! follower and starting the copy at exit J0, and attaching it at the exit J the
//! VM stops at for the last round.
//!
//! ```text
//!   exit J0 (vCPU): reply State; bus notes device writes; thread `precopy` started
//!   precopy thread: running rounds -> VmEvent::Attach(Precopied)
//!   exit J  (vCPU): still this epoch and room in the group? last round, End{J}
//!                   -> the follower replays from J + 1, like any state transfer
//!   thread dirty-log-off: the log off (after the pause); then another pre-copy may start
//! ```
use super::Attacher;
use crate::ft::handshake;
use crate::ft::ReplicationError;
use crate::host::tls::Channel;
use crate::vm::driver::Attaching;
use crate::vm::live::VmEvent;
use crate::vm::machine::AtExit;
use crate::vm::precopy::{self, Precopied};
use crate::vm::snapshot::TransferStats;
use kvm_ioctls::VmFd;
use logging_channel::channel::AttachReply;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

impl Attacher {
    /// Whether a state transfer at exit `index` may be a pre-copy: the VM has booted (at
    /// exit 0 nothing runs while the first follower is attached), pre-copy is on, and no
    /// other pre-copy holds the dirty-page log.
    pub(super) fn may_precopy(&self, index: u64) -> bool {
        index > 0 && self.timing.precopy && !self.precopying.load(Ordering::Relaxed)
    }

    /// At exit J0: tells the follower a state comes, and starts copying memory to it
    /// while the VM runs on.
    pub(super) fn start_precopy(
        &self,
        mut conn: Channel,
        addr: &str,
        why: &str,
        at: AtExit<'_>,
    ) -> Result<(), ReplicationError> {
        handshake::reply_attach(&mut conn, AttachReply::State { why: why.to_string() })?;
        self.precopying.store(true, Ordering::Relaxed);
        let writes = precopy::begin(at.bus);
        let (vm, mem, begin, epoch) = (at.vm.clone(), at.mem.clone(), at.index, self.group.epoch());
        let why = why.to_string();
        let events = self.events.clone();
        let spawned = std::thread::Builder::new().name("precopy".into()).spawn(move || {
            let copied = precopy::copy_while_running(conn, vm, mem, writes, begin, epoch, why);
            // A VM that stopped meanwhile takes no follower.
            let _ = events.send(VmEvent::Attach(Attaching::Precopied(Box::new(copied))));
        });
        if let Err(e) = spawned {
            at.bus.untrack_monitor_writes();
            self.precopying.store(false, Ordering::Relaxed);
            return Err(ReplicationError::Thread("precopy", e));
        }
        tracing::info!(%addr, exit = begin, epoch, "state transfer: copying memory while the VM runs (pre-copy)");
        Ok(())
    }

    /// At exit J, the VM stopped for the last round of the pre-copy `p`: sends it, the
    /// vCPU and device state and the digest, and attaches the follower at J.
    pub(super) fn finish_precopy(&self, mut p: Precopied, at: AtExit<'_>) -> Result<(), ReplicationError> {
        let addr = p.conn.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let (vm, mem, index) = (at.vm.clone(), at.mem.clone(), at.index);
        let sent = self.last_round(&mut p, &addr, at);
        // Only after the last round has read the log.
        self.log_off_after(vm, mem);
        let sent = sent?;
        let Precopied { conn, why, .. } = p;
        self.joined(conn, &addr, &why, index, sent)
    }

    fn last_round(&self, p: &mut Precopied, addr: &str, at: AtExit<'_>) -> Result<TransferStats, ReplicationError> {
        // The group may have filled up, or this VM's epoch changed, while memory was copied:
        // the follower then gets no End, sees the connection close, and asks again.
        let refused = self.group.refuse_follower().or_else(|| {
            (self.group.epoch() != p.epoch)
                .then(|| format!("the epoch changed from {} to {} during the copy", p.epoch, self.group.epoch()))
        });
        if let Some(why) = refused {
            at.bus.untrack_monitor_writes();
            return Err(ReplicationError::Attach(format!("the pre-copy to {addr} is dropped: {why}")));
        }
        let paused = p.paused_because().map(|w| w.to_string()).unwrap_or_default();
        let rounds = format!("{:?}", p.rounds());
        let sent = precopy::finish(p, at)?;
        tracing::info!(%addr, paused, rounds, "pre-copy: pages sent in each running round, and why the VM paused");
        Ok(sent)
    }

    /// Switches the dirty log off on a thread of its own (~5 ms here, spent while the VM
    /// runs rather than in its pause), then lets the next pre-copy start: one that started
    /// earlier could have its log switched off under it.
    fn log_off_after(&self, vm: Arc<VmFd>, mem: GuestMemoryMmap) {
        let precopying = self.precopying.clone();
        let (vm2, mem2) = (vm.clone(), mem.clone());
        let spawned = std::thread::Builder::new().name("dirty-log-off".into()).spawn(move || {
            precopy::log_off(&vm, &mem);
            precopying.store(false, Ordering::Relaxed);
        });
        if spawned.is_err() {
            precopy::log_off(&vm2, &mem2);
            self.precopying.store(false, Ordering::Relaxed);
        }
    }
}
