//! Attaching a follower: the one path by which a follower gets the VM's state
//! (or the part of the log it lacks) and joins the log stream — at boot (exit
//! 0), while the VM runs, and when a follower reconnects, alike.
//!
//! ```text
//!   join-listen -> join-pair (one per connection): TLS, hellos (refused when the
//!        |  group is full), the follower's request
//!        |  VmEvent::Attach(conn, Fresh | Resume{epoch, p})
//!   vcpu0 at its next counted exit J: stops (Yield::Attach)
//!        |  Attacher::attach(conn, request, VM at J)
//!        |    Resume{epoch, p}, p < J, p in the backlog, same epoch at p:
//!        |        records after p (from the backlog), progress through J
//!        |    otherwise: state transfer of J (memory, vCPU, devices, epoch)
//!        |    group.add_follower(p or J)  ->  FollowerLink  ->  fanout
//!   vcpu0 runs on; the follower replays from its position
//! ```
//! Nothing is logged for exit J itself (the attach is all that happens there), so
//! the backlog holds every record through J - 1, and J is complete once sent.
//! The guest notices nothing but the pause, which is measured and logged.
//!
//! A state transfer to a VM that has booted is a pre-copy (`attach/precopy.rs`,
//! [`crate::vm::precopy`]): at the exit J0 the request is answered, memory is copied
//! while the VM runs, and the VM stops again at a later exit J for the last round;
//! the follower is attached at J exactly as above. One pre-copy runs at a time (the
//! dirty-page log is the VM's); a follower asking meanwhile gets a stop-and-copy.
use super::backlog::Backlog;
use super::group::{Follower, Group};
use super::handshake;
use super::release::SharedReleaser;
use super::stream::{Fanout, FollowerLink, Resume};
use super::{ReplicationError, Timing};
use crate::host::status::Stats;
use crate::host::tls::{Channel, Security};
use crate::vm::driver::Attaching;
use crate::vm::live::VmEvent;
use crate::vm::machine::AtExit;
use crate::vm::snapshot;
use crossbeam_channel::Sender;
use logging_channel::channel::{hello, AttachReply, AttachRequest, Hello, Role};
use logging_channel::{codec, pack, LogHeader, Record};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

mod precopy;

/// The longest a primary waits for a joining follower's page list (its guest is paused).
const HAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything needed to attach followers to this VM.
pub struct Attacher {
    pub group: Arc<Group>,
    pub fanout: Arc<Fanout>,
    pub releaser: SharedReleaser,
    pub stats: Arc<Stats>,
    pub timing: Timing,
    /// The guest's timer rate: a vCPU with a timer that makes no exits is frozen.
    pub tick_hz: u32,
    /// Where a pre-copy hands its follower back to the vCPU.
    pub events: Sender<VmEvent>,
    /// Set while a pre-copy runs.
    pub precopying: Arc<AtomicBool>,
}

/// How a follower will get what it lacks.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// The encoded records after its position `from`, with standing marks where the
    /// epoch changed after it (`marked`).
    Resume {
        from: u64,
        records: Vec<u8>,
        marked: bool,
    },
    /// The whole state; why a resume was not possible (empty if none was asked for).
    State(String),
    Refuse(String),
}

impl Attacher {
    /// At the exit `at` (the vCPU is stopped there): resumes the follower's log from
    /// its position or sends the state, and starts streaming the log to it.
    pub fn attach(&self, attaching: Attaching, at: AtExit<'_>) -> Result<(), ReplicationError> {
        let (mut conn, request) = match attaching {
            Attaching::Asked { conn, request } => (conn, request),
            Attaching::Precopied(p) => return self.finish_precopy(*p, at),
        };
        // Two followers can pass the handshake before either is attached; the group's
        // limit is checked again here, where it cannot change underneath.
        if let Some(why) = self.group.refuse_follower() {
            handshake::refuse_attach(&mut conn, &why);
            return Err(ReplicationError::Attach(why));
        }
        let addr = conn.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let plan = cheaper_of(plan(request, at.index, &self.fanout.backlog()), at.mem);
        match plan {
            Plan::Refuse(why) => {
                handshake::refuse_attach(&mut conn, &why);
                Err(ReplicationError::Attach(format!("refused the follower at {addr}: {why}")))
            }
            Plan::Resume { from, records, marked } => self.resume(conn, &addr, from, records, marked, at.index),
            Plan::State(why) if self.may_precopy(at.index) => self.start_precopy(conn, &addr, &why, at),
            Plan::State(why) => self.send_state(conn, &addr, &why, at),
        }
    }

    fn resume(
        &self,
        mut conn: Channel,
        addr: &str,
        from: u64,
        mut records: Vec<u8>,
        marked: bool,
        now: u64,
    ) -> Result<(), ReplicationError> {
        let t0 = Instant::now();
        handshake::reply_attach(&mut conn, AttachReply::Resume { from, through: now })?;
        codec::encode(&Record::Progress { exit_index: now }, &mut records);
        let raw_bytes = records.len();
        // Packed (compressed): the follower unpacks them before anything else it reads.
        let mut packed = Vec::with_capacity(raw_bytes / 2);
        let bytes = pack::pack(&records, &mut packed);
        drop(records);
        let follower = self.group.add_follower(addr, from);
        let id = follower.id;
        self.stream_to(conn, follower, Some(Resume { records: packed, through: now, marked }))?;
        self.stats.note_resume(addr, bytes as u64);
        tracing::info!(
            follower = id,
            %addr,
            from,
            exit = now,
            epoch = self.group.epoch(),
            followers = self.group.follower_count(),
            bytes,
            raw_bytes,
            pause_ms = format!("{:.1}", t0.elapsed().as_secs_f64() * 1e3),
            "follower resumed from the backlog: no state transfer, {bytes} bytes of log sent ({raw_bytes} before \
             packing)"
        );
        Ok(())
    }

    /// Starts the log stream to `follower` on `conn` (after `resume`, if it resumes)
    /// and adds it to the followers every record goes to.
    fn stream_to(
        &self,
        conn: Channel,
        follower: Arc<Follower>,
        resume: Option<Resume>,
    ) -> Result<(), ReplicationError> {
        let link = FollowerLink::start(
            conn,
            self.timing,
            self.tick_hz,
            follower,
            self.group.clone(),
            self.releaser.clone(),
            self.stats.clone(),
            resume,
        )?;
        self.fanout.add(link);
        Ok(())
    }

    fn send_state(&self, mut conn: Channel, addr: &str, why: &str, at: AtExit<'_>) -> Result<(), ReplicationError> {
        handshake::reply_attach(&mut conn, AttachReply::State { why: why.to_string() })?;
        let epoch = self.group.epoch();
        // The follower's page list comes first; one that never sends it holds the guest
        // paused for at most this long.
        let _ = conn.set_read_timeout(Some(self.timing.failover_timeout.max(HAVE_TIMEOUT)));
        let sent = snapshot::send(&mut conn, at.vcpu, at.mem, at.bus, at.index, epoch)?;
        let _ = conn.set_read_timeout(None);
        self.joined(conn, addr, why, at.index, sent)
    }

    /// The follower on `conn` holds the state of exit `index`: streams the log to it from
    /// there on, and says what the transfer cost.
    fn joined(
        &self,
        conn: Channel,
        addr: &str,
        why: &str,
        index: u64,
        sent: snapshot::TransferStats,
    ) -> Result<(), ReplicationError> {
        let epoch = self.group.epoch();
        let follower = self.group.add_follower(addr, index);
        let id = follower.id;
        self.stream_to(conn, follower, None)?;
        self.stats.note_state_transfer(addr, sent.bytes, sent.pages);
        let pause_ms = format!("{:.1}", sent.pause.as_secs_f64() * 1e3);
        let total_ms = format!("{:.1}", sent.total.as_secs_f64() * 1e3);
        let followers = self.group.follower_count();
        let how = if sent.running_rounds > 0 {
            format!("pre-copy in {} rounds while the VM ran, then a pause", sent.running_rounds)
        } else {
            "stop-and-copy".to_string()
        };
        if index == 0 {
            tracing::info!(follower = id, %addr, epoch, followers, "follower paired at boot: state sent");
        } else if !why.is_empty() {
            tracing::info!(
                follower = id,
                %addr,
                exit = index,
                epoch,
                pages = sent.pages,
                same_pages = sent.same_pages,
                full_pages = sent.full_pages,
                have_bytes = sent.have_bytes,
                bytes = sent.bytes,
                raw_bytes = sent.raw_bytes,
                rounds = sent.running_rounds,
                total_ms,
                pause_ms,
                "new backup joined: a follower asked to resume, but {why}: state transfer of the pages that differ \
                 ({how}), {} bytes sent ({} before packing; {} of {} pages)",
                sent.bytes,
                sent.raw_bytes,
                sent.pages,
                sent.full_pages
            );
        } else {
            tracing::info!(
                follower = id,
                %addr,
                exit = index,
                epoch,
                followers,
                pages = sent.pages,
                same_pages = sent.same_pages,
                full_pages = sent.full_pages,
                have_bytes = sent.have_bytes,
                bytes = sent.bytes,
                raw_bytes = sent.raw_bytes,
                rounds = sent.running_rounds,
                total_ms,
                pause_ms,
                "new backup joined: state sent ({how}, {} bytes, {} before packing), protected again",
                sent.bytes,
                sent.raw_bytes
            );
        }
        Ok(())
    }
}

/// A resume whose log is bigger than this is weighed against a state transfer.
const WEIGH_RESUME_BYTES: usize = 256 << 10;

/// A resume that would send more than this many times the state's non-zero pages is
/// a state transfer instead.
const RESUME_OVER_STATE: u64 = 4;

/// A resume sends the log the follower missed, which under load grows by about a MiB a
/// second here — soon more than the whole state; a state transfer sends at most the
/// non-zero pages, only those that differ from the follower's, and spares the follower
/// the replay. But it pauses the guest (~20 ms here, against ~1 ms for a resume), so the
/// log must be [`RESUME_OVER_STATE`] times the state before the state goes instead.
/// (Memory is scanned only for a big log: that costs the paused guest a few ms.)
fn cheaper_of(plan: Plan, mem: &vm_memory::GuestMemoryMmap) -> Plan {
    let Plan::Resume { from, records, .. } = &plan else { return plan };
    if records.len() <= WEIGH_RESUME_BYTES {
        return plan;
    }
    let mut pages = 0u64;
    let counted = crate::vm::digest::for_each_page(mem, |_, page| {
        pages += u64::from(!crate::vm::digest::is_zero(page));
        Ok::<(), vm_memory::guest_memory::Error>(())
    });
    let state = pages * logging_channel::state::PAGE_SIZE as u64;
    if counted.is_ok() && records.len() as u64 > RESUME_OVER_STATE * state {
        return Plan::State(format!(
            "the log after exit {from} is {} bytes, more than {RESUME_OVER_STATE} times the state's {pages} \
             non-zero pages ({state} bytes)",
            records.len()
        ));
    }
    plan
}

/// Decides, at exit `now`, between a resume from `backlog` and a state transfer.
fn plan(request: AttachRequest, now: u64, backlog: &Backlog) -> Plan {
    let AttachRequest::Resume { epoch, exit_index: p } = request else {
        return Plan::State(String::new());
    };
    // Everything before `now` is logged and nothing at it: a follower cannot honestly
    // hold `now` or beyond.
    if p >= now && epoch < backlog.epoch_now() {
        return Plan::State(format!(
            "it holds exits through {p} of epoch {epoch}, which this log (epoch {}) never had: they were never \
             released, and the state replaces them",
            backlog.epoch_now()
        ));
    }
    if p >= now {
        return Plan::Refuse(format!(
            "it says it holds the log through exit {p}, but this primary has logged only up to exit {}: \
             it is not a follower of this VM; start it afresh",
            now.saturating_sub(1)
        ));
    }
    match (backlog.epoch_at(p), backlog.from_marked(p)) {
        (Some(ours), Some(records)) if ours == epoch => {
            Plan::Resume { from: p, records, marked: ours != backlog.epoch_now() }
        }
        (Some(ours), Some(_)) => Plan::State(format!(
            "it was in epoch {epoch} at exit {p} and this log in epoch {ours}: its log is not a prefix of this one"
        )),
        _ => Plan::State(format!(
            "exit {p} is no longer in the backlog, which reaches back to exit {} (--backlog-mib)",
            backlog.floor()
        )),
    }
}

/// A primary's join port: its hello is this machine's in the group's epoch, it turns
/// followers away while the group is full, and the vCPU attaches each at its next exit.
struct VmJoins {
    machine: LogHeader,
    group: Arc<Group>,
    events: Sender<VmEvent>,
}

impl handshake::JoinPolicy for VmJoins {
    fn local(&self) -> Hello {
        hello(Role::Primary, &self.machine, self.group.epoch(), self.group.scope().name())
    }

    fn refusal(&self) -> Option<String> {
        self.group.refuse_follower()
    }

    fn paired(&self, conn: Channel, request: AttachRequest) -> bool {
        self.events.send(VmEvent::Attach(Attaching::Asked { conn, request })).is_ok()
    }
}

/// Starts `join-listen` on `listener`: pairs followers (refusing them while the group
/// is full) and hands each to the vCPU (as [`VmEvent::Attach`]), which attaches it at
/// its next exit.
pub fn spawn_listener(
    listener: TcpListener,
    security: Security,
    machine: LogHeader,
    group: Arc<Group>,
    events: Sender<VmEvent>,
) -> std::io::Result<()> {
    handshake::serve_joins(listener, security, Arc::new(VmJoins { machine, group, events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog() -> Backlog {
        let mut b = Backlog::new(48, 0, 1);
        for exit in [10, 20, 30] {
            b.push(exit, 1, &[exit as u8; 16]);
        }
        b.note_epoch(35, 2);
        b.push(40, 2, &[40; 16]);
        b
    }

    #[test]
    fn a_resume_whose_log_outweighs_the_state_becomes_a_state_transfer() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
        // 16 MiB of memory, 100 non-zero pages: 400 KiB of state.
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("memory");
        for p in 0..100u64 {
            mem.write_slice(&[1u8; 8], GuestAddress(p * 4096)).expect("write");
        }
        let resume = |bytes: usize| Plan::Resume { from: 7, records: vec![0; bytes], marked: false };
        let Plan::State(why) = cheaper_of(resume(1600 * 1024 + 1), &mem) else { panic!("past 4 x 400 KiB of state") };
        assert!(why.contains("100 non-zero pages"), "{why}");
        assert!(
            matches!(cheaper_of(resume(1600 * 1024), &mem), Plan::Resume { .. }),
            "4 x the state is still a resume"
        );
        assert!(
            matches!(cheaper_of(resume(WEIGH_RESUME_BYTES), &mem), Plan::Resume { .. }),
            "small logs are not weighed"
        );
        let empty = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("memory");
        assert!(
            matches!(cheaper_of(resume(WEIGH_RESUME_BYTES + 1), &empty), Plan::State(_)),
            "one byte past the limit is weighed"
        );
    }

    fn resume(epoch: u64, exit_index: u64) -> AttachRequest {
        AttachRequest::Resume { epoch, exit_index }
    }

    #[test]
    fn a_fresh_follower_gets_the_state() {
        assert_eq!(plan(AttachRequest::Fresh, 50, &backlog()), Plan::State(String::new()));
    }

    #[test]
    fn a_position_in_the_backlog_in_the_same_epoch_resumes_with_the_records_after_it() {
        let b = backlog();
        assert_eq!(plan(resume(2, 45), 50, &b), Plan::Resume { from: 45, records: Vec::new(), marked: false });
        let Plan::Resume { from: 25, records, marked: true } = plan(resume(1, 25), 50, &b) else {
            panic!("a resume across the epoch change")
        };
        let mut mark = Vec::new();
        codec::encode(&Record::Standing { exit_index: 30, epoch: 2, eligible: true }, &mut mark);
        assert_eq!(records, [vec![30; 16], mark, vec![40; 16]].concat(), "the new epoch is marked where it begins");
    }

    #[test]
    fn an_evicted_position_or_another_epoch_falls_back_to_the_state() {
        let b = backlog();
        // 48 bytes kept of 64: exit 10's chunk is gone.
        let Plan::State(why) = plan(resume(1, 5), 50, &b) else { panic!("expected a state transfer") };
        assert!(why.contains("no longer in the backlog"), "{why}");
        let Plan::State(why) = plan(resume(1, 38), 50, &b) else { panic!("expected a state transfer") };
        assert!(why.contains("not a prefix"), "{why}");
    }

    #[test]
    fn a_follower_holding_exits_of_an_older_epoch_past_this_log_gets_the_state() {
        // It received exits 50..60 from the old primary, which the new one never had.
        let Plan::State(why) = plan(resume(1, 60), 50, &backlog()) else { panic!("expected a state transfer") };
        assert!(why.contains("never had"), "{why}");
    }

    #[test]
    fn a_position_past_what_was_logged_is_refused() {
        assert!(matches!(plan(resume(2, 50), 50, &backlog()), Plan::Refuse(_)));
        assert!(matches!(plan(resume(2, 0), 0, &backlog()), Plan::Refuse(_)), "at boot nothing was logged");
    }
}
