//! The replay driver: at each counted exit, apply exactly what the log holds
//! for it, after checking the guest is where the log says it was. A backup's
//! replay driver also knows how to take over when the primary's log ends.
use crate::ft::PairState;
use crate::vm::digest;
use crate::vm::live::LiveDriver;
use crate::vm::replayer::{check_sig, AtExit, RecordSource, ReplayError, Replayer};
use crate::vm::runner::{ExitContext, Finish, RunError, Step};
use logging_channel::{DigestScope, Event, Hash};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Turns a backup into a live VM when the primary's log ends, given the exit
/// index of the last replayed exit.
pub type Takeover = Box<dyn FnOnce(u64) -> Result<LiveDriver, RunError> + Send>;

pub struct ReplayDriver {
    log: Replayer<Box<dyn RecordSource + Send>>,
    /// The state digest of the log's end record, once replay reaches it.
    end_digest: Option<Hash>,
    takeover: Option<Takeover>,
    /// A backup publishes how far it has replayed, for its acks.
    pair: Option<Arc<PairState>>,
}

impl ReplayDriver {
    /// Replays a log that must end with an end record (a file).
    pub fn new(source: Box<dyn RecordSource + Send>) -> ReplayDriver {
        ReplayDriver { log: Replayer::new(source), end_digest: None, takeover: None, pair: None }
    }

    /// Replays a primary's stream; when it ends without an end record, `takeover` runs.
    pub fn with_takeover(
        source: Box<dyn RecordSource + Send>,
        takeover: Takeover,
        pair: Arc<PairState>,
    ) -> ReplayDriver {
        ReplayDriver { log: Replayer::new(source), end_digest: None, takeover: Some(takeover), pair: Some(pair) }
    }

    pub fn at_exit(&mut self, ctx: &mut ExitContext<'_>, stop_at: Option<u64>) -> Result<Step, RunError> {
        if let Some(pair) = &self.pair {
            pair.replayed_through.store(ctx.index - 1, Ordering::Relaxed);
        }
        let at = self.log.at_exit(ctx.index)?;
        if at.stream_ended && at.entry.is_none() {
            // Everything the primary sent has been replayed: from this exit on, this VM is live.
            return match self.takeover.take() {
                Some(takeover) => Ok(Step::GoLive(Box::new(takeover(ctx.index - 1)?))),
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
            }
        }
        check_digests(ctx, &at)
    }

    pub fn finish(self, index: u64, finish: Finish, stop_at: Option<u64>, digest: &Hash) -> Result<(), RunError> {
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
