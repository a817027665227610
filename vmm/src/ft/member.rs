//! What runs on the vCPU thread of a group member: the vCPU loop, and the
//! core's work at the points where the loop stops for it.
//!
//! ```text
//!   loop: runner.run()
//!     Yield::Attach(conn)  -> attacher.attach(conn, VM at this exit); go on
//!     Yield::LogEnded      -> the primary sends a new state (a reconnection that could not resume)?
//!                               restore it, follow again from its exit; go on
//!                             otherwise takeover.go_live(); the runner switches to the live driver; go on
//!     Yield::Done(outcome) -> the run is over
//! ```
use super::attach::Attacher;
use super::follower;
use super::takeover::Takeover;
use crate::vm::driver::RunError;
use crate::vm::replay::ReplayDriver;
use crate::vm::runner::{Driver, Outcome, Runner, Yield};

/// A group member's vCPU program.
pub struct Member {
    pub runner: Runner,
    /// Followers attach here (a primary, or a follower once live with `--listen`).
    pub attacher: Option<Attacher>,
    /// How this member goes live if it is a follower whose primary dies.
    pub takeover: Option<Takeover>,
}

impl Member {
    /// Runs the VM to its end.
    pub fn run(mut self) -> Result<Outcome, RunError> {
        if let Some(t) = &self.takeover {
            t.upstream.note_vcpu_thread();
        }
        loop {
            match self.runner.run()? {
                Yield::Done(outcome) => return Ok(outcome),
                Yield::Attach(attaching) => match &self.attacher {
                    Some(attacher) => {
                        if let Err(e) = attacher.attach(attaching, self.runner.at_exit()) {
                            tracing::warn!("a follower could not join: {e}");
                        }
                    }
                    None => tracing::warn!("a follower asked to join a VM that takes none; ignored"),
                },
                Yield::LogEnded { last_replayed } => {
                    if self.restore()? {
                        continue;
                    }
                    let Some(takeover) = self.takeover.take() else {
                        return Err(RunError::StandDown("the log ended and this VM cannot go live".into()));
                    };
                    let live = takeover.go_live(last_replayed)?;
                    tracing::info!(exit = last_replayed + 1, "replayed the whole log: this VM is live from here on");
                    self.runner.switch_to_live(live.driver);
                    self.attacher = live.attacher;
                }
            }
        }
    }

    /// If the primary is sending this follower a new state, restores it and follows the
    /// primary again from there.
    fn restore(&mut self) -> Result<bool, RunError> {
        let Some(t) = &self.takeover else { return Ok(false) };
        let Some(conn) = t.upstream.take_restart() else { return Ok(false) };
        let (index, source) = follower::restore(
            conn,
            self.runner.at_exit(),
            t.timing,
            t.upstream.clone(),
            t.stats.clone(),
            t.reconnect.clone(),
        )
        .map_err(|e| RunError::StandDown(format!("the state transfer after a reconnection failed: {e}")))?;
        let checkpoints = t.upstream.persist.get().map(|p| p.checkpoints.clone());
        let driver = ReplayDriver::following(Box::new(source), t.upstream.replayed_through.clone())
            .with_checkpoints(checkpoints)
            .with_mirror(t.mirrored.as_ref().map(|m| m.mirror.clone()));
        self.runner.restart_after(index, Driver::Replay(driver));
        Ok(true)
    }
}
