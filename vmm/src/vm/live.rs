//! The live driver: events come from the host (timer ticks, frames from the
//! TAP) and are injected at the exit the vCPU happens to be at; with a
//! recorder, each injection is logged with that exit's index and signature.
use crate::vm::checkpoint::SharedCheckpointer;
use crate::vm::clock::TickClock;
use crate::vm::digest;
use crate::vm::driver::{Attaching, ExitContext, Finish, RunError, Step, DIGEST_EVERY, FULL_DIGEST_EVERY};
use crate::vm::recorder::LogSink;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use guest_abi::{nic, vector};
use logging_channel::{DigestScope, EndReason, Event, Hash, Record};
use std::collections::VecDeque;
use std::time::Instant;

/// Frames delivered at one exit, at most: bounds the time one exit can take.
const FRAMES_PER_EXIT: usize = 32;
/// A busy guest with no events still tells its backup how far it got this often.
const PROGRESS_EVERY: u64 = 4096;

/// What reaches a live VM from outside.
#[derive(Debug)]
pub enum VmEvent {
    Frame(Vec<u8>),
    Stop,
    /// A follower passed the handshake and wants the VM's state (see `ft::attach`).
    Attach(Attaching),
    /// Another node won the right to go on alone: stop at once, release nothing.
    Halt(String),
}

pub struct LiveDriver {
    clock: TickClock,
    sink: Option<Box<dyn LogSink>>,
    events: Receiver<VmEvent>,
    frames: VecDeque<Vec<u8>>,
    stopping: bool,
    /// Followers to attach, one per exit: at most one request, and the end of a pre-copy.
    attach: VecDeque<Attaching>,
    halt: Option<String>,
    /// With `--data-dir`: checkpoints of the VM, at exits nothing is injected at.
    checkpoints: Option<SharedCheckpointer>,
}

impl LiveDriver {
    pub fn new(tick_hz: u32, sink: Option<Box<dyn LogSink>>, events: Receiver<VmEvent>) -> LiveDriver {
        LiveDriver {
            clock: TickClock::new(tick_hz),
            sink,
            events,
            frames: VecDeque::new(),
            stopping: false,
            attach: VecDeque::new(),
            halt: None,
            checkpoints: None,
        }
    }

    /// Checkpoints the VM when `checkpoints` says one is due, at the next exit nothing is
    /// injected at (the same points a follower's replay checkpoints at).
    pub fn with_checkpoints(mut self, checkpoints: Option<SharedCheckpointer>) -> LiveDriver {
        self.checkpoints = checkpoints;
        self
    }

    pub fn at_exit(&mut self, ctx: &mut ExitContext<'_>, stop_at: Option<u64>) -> Result<Step, RunError> {
        if stop_at == Some(ctx.index) {
            return Ok(Step::Finish(Finish::StopAtExit));
        }
        self.drain_events();
        if ctx.wants_wait {
            self.wait_for_event();
        }
        if let Some(why) = self.halt.take() {
            return Err(RunError::StandDown(why));
        }
        if self.stopping {
            return Ok(Step::Finish(Finish::Shutdown));
        }
        if let Some(stream) = self.attach.pop_front() {
            // Nothing else happens at this exit: the follower's log starts at the next one.
            return Ok(Step::Attach(stream));
        }
        if let Some(sink) = &mut self.sink {
            sink.throttle(ctx.index);
        }
        // Within one exit the entry comes first, then digest, then progress, sent as one
        // batch: a reader knows an exit is complete when it sees progress for it or any
        // later exit, so nothing (a heartbeat) may come between them.
        let mut records = Vec::new();
        let mut events = if ctx.can_inject() { self.deliver(ctx)? } else { Vec::new() };
        // Host state the guest can read (REPL_STATUS) changes only at counted exits, as
        // logged input: a replay of this exit reads the same.
        for (device, bytes) in ctx.bus.host_inputs() {
            match ctx.bus.input(device, &bytes, ctx.mem) {
                Ok(()) => events.push(Event::DeviceInput { device, bytes }),
                Err(e) => tracing::warn!("device {device} refused host input: {e}"),
            }
        }
        if let (true, Some(c)) = (events.is_empty(), &self.checkpoints) {
            c.lock().unwrap_or_else(|p| p.into_inner()).take_if_due(ctx.vcpu, ctx.mem, ctx.bus, ctx.index);
        }
        if self.sink.is_some() && !events.is_empty() {
            records.push(Record::Entry { exit_index: ctx.index, sig: ctx.sig()?, events });
        }
        if let Some(sink) = &mut self.sink {
            if ctx.index.is_multiple_of(DIGEST_EVERY) {
                let hash = digest::regs_digest(ctx.vcpu)?;
                records.push(Record::Digest { exit_index: ctx.index, scope: DigestScope::Registers, hash });
            }
            if ctx.index.is_multiple_of(FULL_DIGEST_EVERY) {
                // Taken mid-exit (the instruction is not completed), which is the same
                // point on the replaying side.
                let hash = digest::state_digest(ctx.vcpu, ctx.mem)?;
                records.push(Record::Digest { exit_index: ctx.index, scope: DigestScope::Full, hash });
            }
            // Output produced here can be released only once the backup holds this exit.
            if ctx.produced_output || ctx.index.is_multiple_of(PROGRESS_EVERY) {
                records.push(Record::Progress { exit_index: ctx.index });
            }
            sink.send_batch(records)?;
        }
        Ok(Step::Continue)
    }

    /// One interrupt per exit: a due tick first (at most a few hundred a second),
    /// else a batch of frames with the NIC interrupt.
    fn deliver(&mut self, ctx: &mut ExitContext<'_>) -> Result<Vec<Event>, RunError> {
        if self.clock.pending(Instant::now()) {
            ctx.inject(vector::TIMER)?;
            self.clock.delivered();
            return Ok(vec![Event::Interrupt { vector: vector::TIMER }]);
        }
        let mut events = Vec::new();
        while events.len() < FRAMES_PER_EXIT && ctx.bus.input_ready(nic::DEVICE_ID, ctx.mem) {
            let Some(frame) = self.frames.pop_front() else { break };
            match ctx.bus.input(nic::DEVICE_ID, &frame, ctx.mem) {
                Ok(()) => events.push(Event::DeviceInput { device: nic::DEVICE_ID, bytes: frame }),
                Err(e) => tracing::debug!("frame not delivered: {e}"),
            }
        }
        if !events.is_empty() {
            ctx.inject(vector::NIC)?;
            events.push(Event::Interrupt { vector: vector::NIC });
        }
        Ok(events)
    }

    fn drain_events(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(event) => self.take(event),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
            }
        }
    }

    fn take(&mut self, event: VmEvent) {
        match event {
            VmEvent::Frame(f) => self.frames.push_back(f),
            VmEvent::Stop => self.stopping = true,
            VmEvent::Attach(stream) => {
                // A newer request replaces one not yet served (its joiner sees the connection
                // close and asks again), as before pre-copy; a pre-copy's end always waits its turn.
                if matches!(stream, Attaching::Asked { .. }) {
                    self.attach.retain(|a| matches!(a, Attaching::Precopied(_)));
                }
                self.attach.push_back(stream)
            }
            VmEvent::Halt(why) => self.halt = Some(why),
        }
    }

    /// Blocks a waiting guest until a tick is due, a frame arrives or the VM must stop.
    /// An event that is already due returns at once: no wake-up is lost.
    fn wait_for_event(&mut self) {
        if self.stopping
            || self.halt.is_some()
            || !self.attach.is_empty()
            || !self.frames.is_empty()
            || self.clock.pending(Instant::now())
        {
            return;
        }
        let received = match self.clock.next_deadline() {
            Some(deadline) => match self.events.recv_deadline(deadline) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => None,
            },
            None => self.events.recv().ok(),
        };
        match received {
            Some(event) => self.take(event),
            None => self.stopping = true,
        }
    }

    /// Ends the log with the final state, and flushes it.
    pub fn finish(&mut self, index: u64, finish: Finish, digest: Hash) -> Result<(), RunError> {
        let Some(mut sink) = self.sink.take() else { return Ok(()) };
        let reason = match finish {
            Finish::StopAtExit => EndReason::StopAtExit,
            Finish::PowerOff(_) => EndReason::GuestExit,
            Finish::Shutdown | Finish::EndOfLog(_) => EndReason::Shutdown,
        };
        sink.send(Record::End { exit_index: index, reason, state_digest: Some(digest) })?;
        sink.finish()?;
        Ok(())
    }
}
