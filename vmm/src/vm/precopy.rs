//! Pre-copy state transfer: a joiner's memory is copied while the VM runs, in
//! rounds of the pages KVM's dirty-page log says were written meanwhile, and the
//! VM pauses only for the last round, the vCPU and device state and the digest.
//! The stream is the one a stop-and-copy sends ([`crate::vm::snapshot`]): Begin,
//! Pages/Zero (a page may come again, the last copy counts), Blobs, End; Begin
//! names the exit the copy started at, End the exit the state is of.
//!
//! ```text
//!   vCPU thread, exit J0:  begin(): the bus notes pages devices write from here on
//!   precopy thread:        dirty log on; the joiner's page list; Begin{J0, epoch}
//!                          round 0: every page, sent where the joiner's copy differs
//!                          rounds 1..: the pages written since the round before (KVM's
//!                          dirty log + the pages the bus noted)
//!                          until plan::next_step says pause       -> Precopied
//!   vCPU thread, exit J:   finish(): pages written since the last round (the same);
//!                          vCPU, devices; End{J, digest}
//!   after, VM running:     log_off(): KVM's dirty log off (~5 ms here, not in the pause)
//! ```
//! Why it is exact: a page read in round k was either not written afterwards (and the
//! joiner's copy is the VM's at J), or written — by the guest, which KVM logs from
//! before round 0's first read on, or by a device, which the bus notes — and read
//! again in a later round or the last, paused one. [`plan::PageSync`] records what
//! the joiner holds, so after the last round it is also exactly which pages are
//! non-zero at J: the digest reads only those, not all of memory. The joiner checks
//! that digest against its own, of all its memory, as after any transfer.
use crate::devices::bus::{Bus, MonitorWrites};
use crate::host::tls::Channel;
use crate::vm::digest;
use crate::vm::dirtylog;
use crate::vm::machine::AtExit;
use crate::vm::pagediff;
use crate::vm::snapshot::{self, SnapshotError, TransferStats, Wire};
use kvm_ioctls::VmFd;
use logging_channel::state::{StateMessage, MAX_PAGES, PAGE_SIZE};
use plan::{Next, PageSync, PauseWhy, Visit};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub mod plan;

/// The longest a pre-copy waits on a joiner (for its page list, or to take a round).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A pre-copy whose running rounds are over (or failed), for the vCPU thread to end.
pub struct Precopied {
    pub conn: Channel,
    /// The epoch Begin named: the state must be of this epoch when the VM pauses.
    pub epoch: u64,
    /// Why the joiner gets a state (for the log; empty when it asked for nothing else).
    pub why: String,
    sync: PageSync,
    /// Pages devices wrote themselves, noted by the bus.
    writes: MonitorWrites,
    counts: Counts,
    started: Instant,
    /// Why the running rounds ended, or why the pre-copy failed.
    outcome: Result<PauseWhy, SnapshotError>,
}

impl Precopied {
    /// Why the running rounds ended (`None` if they failed).
    pub fn paused_because(&self) -> Option<PauseWhy> {
        self.outcome.as_ref().ok().copied()
    }

    /// Pages sent in each running round, round 0 first.
    pub fn rounds(&self) -> &[u64] {
        &self.counts.rounds
    }
}

/// What a pre-copy sent.
#[derive(Debug, Default)]
struct Counts {
    /// Bytes on the wire (packed), and the frames they carry.
    bytes: u64,
    raw_bytes: u64,
    have_bytes: u64,
    /// Page sends, resends included.
    sent: u64,
    /// Pages round 0 found the joiner held already (non-zero, same hash).
    same: u64,
    rounds: Vec<u64>,
}

/// At exit J0 on the vCPU thread, before the running rounds start: from here on the
/// bus notes the pages devices write themselves (KVM's log will not show them), for
/// [`copy_while_running`].
pub fn begin(bus: &mut Bus) -> MonitorWrites {
    bus.track_monitor_writes()
}

/// The running rounds, on a thread of their own while the vCPU runs: switches KVM's
/// dirty log on, reads the joiner's page list from `conn`, sends Begin (exit `begin`,
/// `epoch`; `why` is kept for the log) and rounds of pages until [`plan::next_step`] says pause. Never fails: a
/// failure is in the result, for [`finish`] to report after switching the log off.
pub fn copy_while_running(
    mut conn: Channel,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    writes: MonitorWrites,
    begin: u64,
    epoch: u64,
    why: String,
) -> Precopied {
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut sync = PageSync::new(Vec::new());
    let _ = conn.set_read_timeout(Some(STALL_TIMEOUT));
    let _ = conn.set_write_timeout(Some(STALL_TIMEOUT));
    let copy = Copy { vm: &vm, mem: &mem, writes: &writes };
    let outcome = copy.running_rounds(&mut conn, begin, epoch, &mut sync, &mut counts);
    Precopied { conn, epoch, why, sync, writes, counts, started, outcome }
}

/// What the running rounds read.
struct Copy<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    writes: &'a MonitorWrites,
}

impl Copy<'_> {
    /// The pages written since the last call, by the guest or a device, ascending.
    fn written(&self) -> Result<Vec<u64>, SnapshotError> {
        let mut pages = dirtylog::take_dirty(self.vm, self.mem)?;
        pages.extend(self.writes.take());
        pages.sort_unstable();
        pages.dedup();
        Ok(pages)
    }

    fn running_rounds(
        &self,
        conn: &mut Channel,
        begin: u64,
        epoch: u64,
        sync: &mut PageSync,
        counts: &mut Counts,
    ) -> Result<PauseWhy, SnapshotError> {
        let mem = self.mem;
        dirtylog::set_logging(self.vm, mem, true)?;
        // From here on every write is logged or noted; round 0 reads all memory after it.
        self.written()?;
        let theirs = pagediff::read_have(conn, pagediff::page_count(mem))?;
        counts.have_bytes = theirs.bytes;
        *sync = PageSync::new(theirs.into_slots());
        let mut wire = Wire::packed(conn);
        let mem_size = sync.len() * PAGE_SIZE as u64;
        wire.put(&StateMessage::Begin { exit_index: begin, epoch, mem_size })?;
        let mut runs = Runs::default();
        digest::for_each_page(mem, |n, page| runs.visit(&mut wire, sync, n, page))?;
        counts.same = runs.same;
        runs.finish(&mut wire)?;
        wire.flush()?;
        counts.rounds.push(runs.sent);
        counts.sent += runs.sent;
        let (mut dirty, mut previous) = (None, None);
        let why = loop {
            if let Next::Pause(why) = plan::next_step(counts.rounds.len() as u32, dirty, previous) {
                break why;
            }
            let pages = self.written()?;
            let runs = send_listed(&mut wire, mem, sync, &pages)?;
            wire.flush()?;
            counts.rounds.push(runs.sent);
            counts.sent += runs.sent;
            previous = dirty;
            // Pages that changed, not pages listed: the bus lists a device's whole ring
            // (128 pages of the default guest's NIC) when it wrote a frame anywhere in it.
            dirty = Some((runs.sent + runs.cleared) as usize);
        };
        counts.bytes = wire.bytes;
        counts.raw_bytes = wire.raw;
        Ok(why)
    }
}

/// At exit J on the vCPU thread, the VM stopped there: the last round (pages written
/// since the last running round, by the guest or a device), then the vCPU and device
/// state and End with the digest. Stops the bus's noting first, whatever happened: a
/// failed pre-copy ends here too, with its error. The dirty log stays on: switching it
/// off takes ~5 ms here, which [`log_off`] spends after the pause, off the vCPU thread.
pub fn finish(p: &mut Precopied, at: AtExit<'_>) -> Result<TransferStats, SnapshotError> {
    let paused = Instant::now();
    snapshot::complete_pending_instruction(at.vcpu);
    let dirty = dirtylog::take_dirty(at.vm, at.mem);
    let mut pages = p.writes.take();
    at.bus.untrack_monitor_writes();
    p.outcome.as_ref().map_err(|e| SnapshotError::Abandoned(format!("copying while the VM ran failed: {e}")))?;
    pages.extend(dirty?);
    pages.sort_unstable();
    pages.dedup();
    let mut wire = Wire::packed(&mut p.conn);
    let runs = send_listed(&mut wire, at.mem, &mut p.sync, &pages)?;
    let mut hasher = digest::cpu_hasher(at.vcpu)?;
    let mut page = vec![0u8; PAGE_SIZE];
    for n in p.sync.non_zero() {
        at.mem.read_slice(&mut page, GuestAddress(n * PAGE_SIZE as u64))?;
        digest::hash_page(&mut hasher, n, &page);
    }
    snapshot::send_end(&mut wire, at.vcpu, at.bus, at.index, hasher)?;
    let c = &p.counts;
    Ok(TransferStats {
        pages: c.sent + runs.sent,
        bytes: c.bytes + wire.bytes,
        raw_bytes: c.raw_bytes + wire.raw,
        pause: paused.elapsed(),
        full_pages: p.sync.non_zero().count() as u64,
        same_pages: c.same,
        have_bytes: c.have_bytes,
        running_rounds: c.rounds.len() as u32,
        total: p.started.elapsed(),
    })
}

/// Switches dirty logging off (with it on, the guest's first write to each page after
/// a read of the log faults into KVM). Safe while the vCPU runs.
pub fn log_off(vm: &VmFd, mem: &GuestMemoryMmap) {
    if let Err(e) = dirtylog::set_logging(vm, mem, false) {
        tracing::warn!("switching KVM's dirty-page log off failed ({e}); the guest runs on with it");
    }
}

/// Visits the listed pages (ascending) and sends what the joiner lacks.
fn send_listed<W: Write>(
    wire: &mut Wire<'_, W>,
    mem: &GuestMemoryMmap,
    sync: &mut PageSync,
    pages: &[u64],
) -> Result<Runs, SnapshotError> {
    let mut runs = Runs::default();
    let mut page = vec![0u8; PAGE_SIZE];
    let end = sync.len();
    for &n in pages.iter().filter(|&&n| n < end) {
        mem.read_slice(&mut page, GuestAddress(n * PAGE_SIZE as u64))?;
        runs.visit(wire, sync, n, &page)?;
    }
    runs.finish(wire)?;
    Ok(runs)
}

/// Pages to send and to clear, gathered into runs of consecutive pages (one frame each).
#[derive(Default)]
struct Runs {
    data: Vec<u8>,
    start: u64,
    zero_start: u64,
    zeros: u32,
    sent: u64,
    cleared: u64,
    same: u64,
}

impl Runs {
    fn visit<W: Write>(
        &mut self,
        wire: &mut Wire<'_, W>,
        sync: &mut PageSync,
        n: u64,
        page: &[u8],
    ) -> Result<(), SnapshotError> {
        match sync.visit(n, page) {
            Visit::Same => self.same += u64::from(!digest::is_zero(page)),
            Visit::Send => {
                let next = self.start + (self.data.len() / PAGE_SIZE) as u64;
                if !self.data.is_empty() && (next != n || self.data.len() == MAX_PAGES * PAGE_SIZE) {
                    self.flush_pages(wire)?;
                }
                if self.data.is_empty() {
                    self.start = n;
                }
                self.data.extend_from_slice(page);
                self.sent += 1;
            }
            Visit::Clear => {
                if self.zeros > 0 && (self.zero_start + u64::from(self.zeros) != n || self.zeros == u32::MAX) {
                    self.flush_zeros(wire)?;
                }
                if self.zeros == 0 {
                    self.zero_start = n;
                }
                self.zeros += 1;
                self.cleared += 1;
            }
        }
        Ok(())
    }

    fn flush_pages<W: Write>(&mut self, wire: &mut Wire<'_, W>) -> Result<(), SnapshotError> {
        wire.put(&StateMessage::Pages { first_page: self.start, data: std::mem::take(&mut self.data) })
    }

    fn flush_zeros<W: Write>(&mut self, wire: &mut Wire<'_, W>) -> Result<(), SnapshotError> {
        wire.put(&StateMessage::Zero { first_page: self.zero_start, count: self.zeros })?;
        self.zeros = 0;
        Ok(())
    }

    fn finish<W: Write>(&mut self, wire: &mut Wire<'_, W>) -> Result<(), SnapshotError> {
        if !self.data.is_empty() {
            self.flush_pages(wire)?;
        }
        if self.zeros > 0 {
            self.flush_zeros(wire)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
