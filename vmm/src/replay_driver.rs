//! The replay driver: at each counted exit, apply exactly what the log holds
//! for it, after checking the guest is where the log says it was.
use crate::digest;
use crate::replayer::{check_sig, AtExit, ReplayError, Replayer};
use crate::runner::{ExitContext, Finish, RunError, Step};
use logging_channel::{DigestScope, Event, Hash};
use std::fs::File;
use std::io::BufReader;

pub struct ReplayDriver {
    log: Replayer<BufReader<File>>,
    /// The state digest of the log's end record, once replay reaches it.
    end_digest: Option<Hash>,
}

impl ReplayDriver {
    pub fn new(log: Replayer<BufReader<File>>) -> ReplayDriver {
        ReplayDriver { log, end_digest: None }
    }

    pub fn at_exit(&mut self, ctx: &mut ExitContext<'_>, stop_at: Option<u64>) -> Result<Step, RunError> {
        let at = self.log.at_exit(ctx.index)?;
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
        if *scope != DigestScope::Registers {
            // Full digests need a completed instruction; only the end record carries one.
            continue;
        }
        let actual = digest::regs_digest(ctx.vcpu)?;
        if &actual != recorded {
            let what = format!(
                "register digest {} differs from the recorded {}",
                digest::hex(&actual[..8]),
                digest::hex(&recorded[..8])
            );
            return Err(ReplayError::Divergence { index: ctx.index, what }.into());
        }
    }
    Ok(Step::Continue)
}
