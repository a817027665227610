//! The replay driver: at each counted exit, apply exactly what the log holds
//! for it, after checking the guest is where the log says it was. A backup's
//! replay driver also knows how to take over when the primary's log ends.
use crate::host::mirror::Mirror;
use crate::vm::checkpoint::SharedCheckpointer;
use crate::vm::digest;
use crate::vm::driver::{ExitContext, Finish, RunError, Step};
use crate::vm::live::VmEvent;
use crate::vm::replayer::{check_sig, AtExit, RecordSource, ReplayError, Replayer};
use guest_abi::nic;
use logging_channel::{DigestScope, Event, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Replays a log exit by exit, checking the guest against it.
pub struct ReplayDriver {
    log: Replayer<Box<dyn RecordSource + Send>>,
    /// The state digest of the log's end record, once replay reaches it.
    end_digest: Option<Hash>,
    /// A follower publishes how far it has replayed (for its acks); its log may end
    /// without an end record (the primary died), which a file's may not.
    replayed_through: Option<Arc<AtomicU64>>,
    /// A follower with a data directory checkpoints its VM at exits nothing is injected at.
    checkpoints: Option<SharedCheckpointer>,
    /// A follower with mirrored input tells it each frame the log delivers, so that
    /// go-live does not inject that frame again (host/mirror.rs).
    mirror: Option<Arc<Mirror<VmEvent>>>,
}

impl ReplayDriver {
    /// Replays a log that must end with an end record (a file).
    pub fn new(source: Box<dyn RecordSource + Send>) -> ReplayDriver {
        ReplayDriver {
            log: Replayer::new(source),
            end_digest: None,
            replayed_through: None,
            checkpoints: None,
            mirror: None,
        }
    }

    /// Replays a primary's stream, publishing progress in `replayed_through`; when the
    /// stream ends without an end record, the run yields [`Step::LogEnded`].
    pub fn following(source: Box<dyn RecordSource + Send>, replayed_through: Arc<AtomicU64>) -> ReplayDriver {
        ReplayDriver {
            log: Replayer::new(source),
            end_digest: None,
            replayed_through: Some(replayed_through),
            checkpoints: None,
            mirror: None,
        }
    }

    /// Checkpoints the VM when `checkpoints` says one is due, at the next exit nothing
    /// is injected at: its state is then exactly what a log after it replays from.
    pub fn with_checkpoints(mut self, checkpoints: Option<SharedCheckpointer>) -> ReplayDriver {
        self.checkpoints = checkpoints;
        self
    }

    /// Notes each frame the log delivers in `mirror` (a follower with mirrored input).
    pub fn with_mirror(mut self, mirror: Option<Arc<Mirror<VmEvent>>>) -> ReplayDriver {
        if let Some(m) = &mirror {
            m.replay_starts();
        }
        self.mirror = mirror;
        self
    }

    pub fn at_exit(&mut self, ctx: &mut ExitContext<'_>, stop_at: Option<u64>) -> Result<Step, RunError> {
        if let Some(replayed) = &self.replayed_through {
            replayed.store(ctx.index - 1, Ordering::Relaxed);
        }
        let at = self.log.at_exit(ctx.index)?;
        if at.stream_ended && at.entry.is_none() {
            // Everything the primary sent has been replayed: a follower's core decides what
            // comes next (go live, or stand down); a file that ends like this was cut short.
            return match self.replayed_through {
                Some(_) => Ok(Step::LogEnded),
                None => Err(ReplayError::NoEnd { last: self.log.last_index() }.into()),
            };
        }
        // The recording stopped here (its end record is the only thing at this exit),
        // so stop too, and compare the state it ended in.
        if let Some((reason, digest)) = at.end {
            self.end_digest = digest;
            return Ok(Step::Finish(Finish::EndOfLog(reason)));
        }
        if stop_at == Some(ctx.index) {
            return Ok(Step::Finish(Finish::StopAtExit));
        }
        if let Some((logged, events)) = &at.entry {
            check_sig(ctx.index, logged, &ctx.sig()?)?;
            for event in events {
                apply(ctx, event)?;
                if let (Some(mirror), Event::DeviceInput { device: nic::DEVICE_ID, bytes }) = (&self.mirror, event) {
                    mirror.note_delivered(bytes);
                }
            }
        }
        let step = check_digests(ctx, &at)?;
        if let (None, Some(c)) = (&at.entry, &self.checkpoints) {
            c.lock().unwrap_or_else(|p| p.into_inner()).take_if_due(ctx.vcpu, ctx.mem, ctx.bus, ctx.index);
        }
        Ok(step)
    }

    pub fn finish(&self, index: u64, finish: Finish, stop_at: Option<u64>, digest: &Hash) -> Result<(), RunError> {
        if let (Finish::EndOfLog(reason), Some(wanted)) = (finish, stop_at) {
            if wanted > index {
                return Err(ReplayError::PastEnd { end: index, reason, wanted }.into());
            }
        }
        match self.end_digest {
            Some(recorded) if recorded != *digest => Err(ReplayError::Divergence {
                index,
                what: format!(
                    "state digest {} differs from the recorded {} (every logged exit and register check before it matched)",
                    digest::hex(digest),
                    digest::hex(&recorded)
                ),
            }
            .into()),
            _ => Ok(()),
        }
    }
}

fn apply(ctx: &mut ExitContext<'_>, event: &Event) -> Result<(), RunError> {
    let index = ctx.index;
    match event {
        Event::Interrupt { vector } => {
            if !ctx.can_inject() {
                let what = format!("the log injects vector {vector:#x} here, but the guest cannot take an interrupt");
                return Err(ReplayError::Divergence { index, what }.into());
            }
            ctx.inject(*vector)
        }
        Event::DeviceInput { device, bytes } => ctx.bus.input(*device, bytes, ctx.mem).map_err(|e| {
            let what = format!("the log feeds {} bytes to device {device}, which refused them: {e}", bytes.len());
            ReplayError::Divergence { index, what }.into()
        }),
    }
}

fn check_digests(ctx: &mut ExitContext<'_>, at: &AtExit) -> Result<Step, RunError> {
    for (scope, recorded) in &at.digests {
        let (what, actual) = match scope {
            DigestScope::Registers => ("register", digest::regs_digest(ctx.vcpu)?),
            DigestScope::Full => ("memory and register", digest::state_digest(ctx.vcpu, ctx.mem)?),
            DigestScope::Invalid => continue,
        };
        if &actual != recorded {
            let what = format!(
                "{what} digest {} differs from the recorded {}",
                digest::hex(&actual[..8]),
                digest::hex(&recorded[..8])
            );
            return Err(ReplayError::Divergence { index: ctx.index, what }.into());
        }
    }
    Ok(Step::Continue)
}
