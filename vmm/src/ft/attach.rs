//! A new backup joining a running primary (DESIGN.md, "New backup").
//!
//! `join-listen` accepts and pairs backups and hands each to the vCPU as a
//! [`VmEvent::Join`]; at its next counted exit the vCPU stops, sends the VM's
//! state, and from the next exit on logs to the new backup. The guest notices
//! nothing but the pause, which is measured.
use crate::ft::release::{Policy, SharedReleaser};
use crate::ft::stream::{self, StreamSink};
use crate::ft::{handshake, PairState, Timing};
use crate::host::arbiter::Arbiter;
use crate::host::status::Stats;
use crate::vm::live::VmEvent;
use crate::vm::runner::ExitContext;
use crate::vm::snapshot;
use crossbeam_channel::Sender;
use logging_channel::channel::{hello, Role};
use logging_channel::LogHeader;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the vCPU needs to take on a backup.
pub struct Joiner {
    pub releaser: SharedReleaser,
    pub repl_status: Arc<AtomicU64>,
    pub stats: Arc<Stats>,
    pub timing: Timing,
    pub arbiter: Option<Arc<dyn Arbiter>>,
    pub events: Sender<VmEvent>,
}

impl Joiner {
    /// At the current exit: sends the state and starts streaming the log. The
    /// backup replays from the next exit on.
    pub fn join(&self, mut stream: TcpStream, ctx: &mut ExitContext<'_>) -> Result<StreamSink, String> {
        // Two backups can pass the handshake before either is applied; the second must
        // not replace the first (closing its stream would make it go live).
        if self.stats.protected() {
            return Err("a backup is already in lockstep; refusing a second".into());
        }
        let epoch = self.stats.epoch.load(Ordering::SeqCst) + 1;
        let sent = snapshot::send(&mut stream, ctx.vcpu, ctx.mem, ctx.bus, ctx.index, epoch)
            .map_err(|e| format!("sending the state failed: {e}"))?;
        let state = PairState::new_protected(ctx.index);
        self.repl_status.store(guest_abi::system::REPL_PROTECTED, Ordering::SeqCst);
        if let Ok(peer) = stream.peer_addr() {
            self.stats.set_peer(&peer.to_string());
        }
        let poke = self.releaser.clone();
        let shared = stream::Shared {
            state: state.clone(),
            repl_status: self.repl_status.clone(),
            stats: self.stats.clone(),
            on_change: Arc::new(move || poke.poke()),
            arbiter: self.arbiter.clone(),
            events: self.events.clone(),
        };
        let (sink, wire) = stream::start(stream, self.timing, ctx.index, shared).map_err(|e| e.to_string())?;
        self.releaser.set_policy(Policy::Primary { state: state.clone(), wire });
        self.stats.set_pair(state);
        self.stats.epoch.store(epoch, Ordering::SeqCst);
        tracing::info!(
            exit = ctx.index,
            epoch,
            pages = sent.pages,
            bytes = sent.bytes,
            pause_ms = format!("{:.1}", sent.pause.as_secs_f64() * 1e3),
            "new backup joined: state sent, protected again"
        );
        Ok(sink)
    }
}

/// Starts `join-listen` on `listener`: pairs backups (refusing a second one while
/// one is in lockstep) and hands them to the vCPU.
pub fn spawn_listener(
    listener: TcpListener,
    machine: LogHeader,
    stats: Arc<Stats>,
    events: Sender<VmEvent>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("join-listen".into()).spawn(move || loop {
        let local = || hello(Role::Primary, &machine, stats.epoch.load(Ordering::SeqCst));
        let busy = || stats.protected();
        match handshake::accept_backup(&listener, &local, &busy) {
            Ok(stream) => {
                if events.send(VmEvent::Join(stream)).is_err() {
                    return; // the VM has stopped
                }
            }
            Err(e) => tracing::warn!("join: {e}"),
        }
    })?;
    Ok(())
}
