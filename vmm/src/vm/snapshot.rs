//! Moving a running VM's state to a follower: the primary pauses at a counted
//! exit, completes the instruction in flight, reads what the follower already
//! has (a hash per non-zero page, [`crate::vm::pagediff`]), and sends only the
//! pages that differ (and which of the follower's pages to clear), the vCPU's
//! registers and every device's state, then the state digest; the follower
//! applies it on top of its own memory and must reach the same digest before it
//! replays a single record. A follower with a recent copy (restored from its
//! disk, or cut off for a while) gets a small diff; a freshly booted one shares
//! only the guest image's pages, and gets the rest.
use crate::devices::bus::Bus;
use crate::vm::digest::{self, DigestError};
use crate::vm::pagediff::{self, HaveList, PageDiffError, Theirs};
use crate::vm::progress::Progress;
use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};
use kvm_ioctls::VcpuFd;
use logging_channel::state::{self, BlobKind, StateMessage, StateReader, MAX_PAGES, PAGE_SIZE};
use logging_channel::{pack, CodecError, Hash};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use zerocopy::{FromBytes, IntoBytes};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading vCPU {what} failed: {source}")]
    Vcpu {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest memory access failed: {0}")]
    Memory(#[from] vm_memory::guest_memory::Error),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("sending the state failed: {0}")]
    Send(#[source] std::io::Error),
    #[error("the state stream is unreadable: {0}")]
    Codec(#[from] CodecError),
    #[error("the state stream is wrong: {0}")]
    Protocol(String),
    #[error("restored state digest {restored} differs from the primary's {sent}: the VMs are not identical")]
    Mismatch { restored: String, sent: String },
    #[error(transparent)]
    Pages(#[from] PageDiffError),
    #[error(transparent)]
    DirtyLog(#[from] crate::vm::dirtylog::DirtyLogError),
    #[error("the transfer was abandoned: {0}")]
    Abandoned(String),
}

/// What a transfer cost.
#[derive(Debug, Clone, Copy)]
pub struct TransferStats {
    /// Pages sent.
    pub pages: u64,
    /// Bytes sent: on the wire, packed.
    pub bytes: u64,
    /// The frames those bytes carry, unpacked (what the transfer sent before packing).
    pub raw_bytes: u64,
    pub pause: Duration,
    /// The sender's non-zero pages: what a follower with nothing in common would get.
    pub full_pages: u64,
    /// Pages the follower already had (same hash), so not sent.
    pub same_pages: u64,
    /// Bytes of the follower's page list (received).
    pub have_bytes: u64,
    /// Rounds copied while the VM ran (pre-copy; 0 for a stop-and-copy).
    pub running_rounds: u32,
    /// From the start of the transfer to its end (for a stop-and-copy, the pause).
    pub total: Duration,
}

fn vcpu_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Vcpu { what, source }
}

/// Lets KVM finish the MMIO or port instruction of the last exit without running
/// further, so the state read next is the state right after that exit.
pub fn complete_pending_instruction(vcpu: &mut VcpuFd) {
    vcpu.set_kvm_immediate_exit(1);
    let _ = vcpu.run();
    vcpu.set_kvm_immediate_exit(0);
}

/// Sends the VM's state as of counted exit `exit_index` over `conn`, after reading the
/// follower's page list from it. The caller has stopped the vCPU there. Memory is read
/// once: each non-zero page is hashed into the state digest and sent unless the follower
/// has it already.
pub fn send<S: Read + Write>(
    conn: &mut S,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &Bus,
    exit_index: u64,
    epoch: u64,
) -> Result<TransferStats, SnapshotError> {
    let started = Instant::now();
    complete_pending_instruction(vcpu);
    let mem_size: u64 = mem.iter().map(|r| r.len()).sum();
    let theirs = pagediff::read_have(conn, pagediff::page_count(mem))?;
    let mut hasher = digest::cpu_hasher(vcpu)?;
    let mut wire = Wire::packed(conn);
    wire.put(&StateMessage::Begin { exit_index, epoch, mem_size })?;
    let mut progress = Progress::start("state transfer sent", None);
    let counts = send_pages(&mut wire, &mut hasher, mem, &theirs, &mut progress)?;
    send_end(&mut wire, vcpu, bus, exit_index, hasher)?;
    progress.set_wire(wire.bytes);
    progress.set(wire.raw, counts.sent);
    progress.finish();
    Ok(TransferStats {
        pages: counts.sent,
        bytes: wire.bytes,
        raw_bytes: wire.raw,
        pause: started.elapsed(),
        full_pages: counts.non_zero,
        same_pages: counts.non_zero - counts.sent,
        have_bytes: theirs.bytes,
        running_rounds: 0,
        total: started.elapsed(),
    })
}

/// The end of a state: vCPU and device state, then `End` with the digest `hasher`
/// makes (it has the vCPU state and every non-zero page already); flushed.
pub(crate) fn send_end<W: Write>(
    wire: &mut Wire<'_, W>,
    vcpu: &VcpuFd,
    bus: &Bus,
    exit_index: u64,
    hasher: blake3::Hasher,
) -> Result<(), SnapshotError> {
    let blobs = [
        (BlobKind::Regs, vcpu.get_regs().map_err(vcpu_err("registers"))?.as_bytes().to_vec()),
        (BlobKind::Sregs, vcpu.get_sregs().map_err(vcpu_err("special registers"))?.as_bytes().to_vec()),
        (BlobKind::Fpu, xsave_bytes(&vcpu.get_xsave().map_err(vcpu_err("FPU state (XSAVE)"))?)),
        (BlobKind::VcpuEvents, vcpu.get_vcpu_events().map_err(vcpu_err("events"))?.as_bytes().to_vec()),
        (BlobKind::Devices, bus.save()),
    ];
    for (kind, bytes) in blobs {
        wire.put(&StateMessage::Blob { kind, bytes })?;
    }
    let state_digest = *hasher.finalize().as_bytes();
    wire.put(&StateMessage::End { exit_index, state_digest })?;
    wire.flush()
}

/// Frames buffered and written in large writes (state transfer and checkpoints). A
/// state transfer's are packed ([`logging_channel::pack`]: compressed) batch by batch
/// as they go out; a checkpoint's are written as they are.
pub(crate) struct Wire<'a, W: Write> {
    pub(crate) out: &'a mut W,
    pub(crate) buf: Vec<u8>,
    /// Bytes written so far (packed, as they went out).
    pub(crate) bytes: u64,
    /// Bytes of frames written so far, before packing.
    pub(crate) raw: u64,
    /// Pack what goes out (a peer at the protocol version that unpacks it).
    pack: bool,
    packed: Vec<u8>,
}

/// Buffered frames that force a write (and a batch to pack).
const WIRE_BATCH: usize = 1 << 20;

impl<'a, W: Write> Wire<'a, W> {
    /// A state transfer's wire: packed.
    pub(crate) fn packed(out: &'a mut W) -> Self {
        Wire { out, buf: Vec::with_capacity(2 * WIRE_BATCH), bytes: 0, raw: 0, pack: true, packed: Vec::new() }
    }

    /// A file's: frames as they are, after `written` bytes (a header).
    pub(crate) fn plain(out: &'a mut W, written: u64) -> Self {
        Wire { out, buf: Vec::with_capacity(WIRE_BATCH), bytes: written, raw: written, pack: false, packed: Vec::new() }
    }

    pub(crate) fn put(&mut self, m: &StateMessage) -> Result<(), SnapshotError> {
        state::encode(m, &mut self.buf);
        if self.buf.len() >= WIRE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), SnapshotError> {
        let out: &[u8] = if self.pack {
            self.packed.clear();
            pack::pack(&self.buf, &mut self.packed);
            &self.packed
        } else {
            &self.buf
        };
        self.out.write_all(out).and_then(|()| self.out.flush()).map_err(SnapshotError::Send)?;
        self.bytes += out.len() as u64;
        self.raw += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Frames so far, written or waiting (before packing): for progress.
    pub(crate) fn raw_so_far(&self) -> u64 {
        self.raw + self.buf.len() as u64
    }
}

/// Pages counted while sending.
struct PageCounts {
    sent: u64,
    non_zero: u64,
}

/// Sends every run of non-zero pages the follower lacks (or has otherwise) and every run
/// of its pages to clear, hashing all non-zero pages into the state digest as it goes.
fn send_pages<W: Write>(
    wire: &mut Wire<'_, W>,
    hasher: &mut blake3::Hasher,
    mem: &GuestMemoryMmap,
    theirs: &Theirs,
    progress: &mut Progress,
) -> Result<PageCounts, SnapshotError> {
    let mut run: Vec<u8> = Vec::with_capacity(MAX_PAGES * PAGE_SIZE);
    let mut run_start = 0u64;
    let (mut zero_start, mut zero_count) = (0u64, 0u32);
    let mut counts = PageCounts { sent: 0, non_zero: 0 };
    digest::for_each_page(mem, |number, page| {
        let zero = digest::is_zero(page);
        let has = theirs.get(number);
        // Only pages the follower has are hashed for it: a fresh follower costs nothing extra.
        let send = !zero && has.is_none_or(|h| *h != pagediff::page_hash(page));
        let clear = zero && has.is_some();
        let contiguous = run_start + (run.len() / PAGE_SIZE) as u64 == number;
        if !run.is_empty() && (!send || !contiguous || run.len() == MAX_PAGES * PAGE_SIZE) {
            wire.put(&StateMessage::Pages { first_page: run_start, data: std::mem::take(&mut run) })?;
        }
        if zero_count > 0 && (!clear || zero_start + u64::from(zero_count) != number || zero_count == u32::MAX) {
            wire.put(&StateMessage::Zero { first_page: zero_start, count: zero_count })?;
            zero_count = 0;
        }
        if !zero {
            digest::hash_page(hasher, number, page);
            counts.non_zero += 1;
        }
        if send {
            if run.is_empty() {
                run_start = number;
            }
            run.extend_from_slice(page);
            counts.sent += 1;
        }
        if clear {
            if zero_count == 0 {
                zero_start = number;
            }
            zero_count += 1;
        }
        if number % PROGRESS_PAGES == 0 {
            progress.set_wire(wire.bytes);
            progress.set(wire.raw_so_far(), counts.sent);
        }
        Ok::<(), SnapshotError>(())
    })?;
    if !run.is_empty() {
        wire.put(&StateMessage::Pages { first_page: run_start, data: run })?;
    }
    if zero_count > 0 {
        wire.put(&StateMessage::Zero { first_page: zero_start, count: zero_count })?;
    }
    Ok(counts)
}

/// Pages between two looks at the clock for progress (a second is ~100,000 pages).
const PROGRESS_PAGES: u64 = 256;

fn blob<T: FromBytes>(bytes: &[u8], what: &str) -> Result<T, SnapshotError> {
    T::read_from_bytes(bytes).map_err(|_| SnapshotError::Protocol(format!("{what} blob has the wrong size")))
}

/// Receives a state into `mem`/`vcpu`/`bus` (a VM of the same shape, in whatever state):
/// says what pages it has, then applies the difference (from a stop-and-copy or a
/// pre-copy alike). Returns (exit_index, epoch) of the primary at the snapshot.
pub fn receive<S: Read + Write>(
    conn: &mut S,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
) -> Result<(u64, u64), SnapshotError> {
    let have = pagediff::have_list(mem)?;
    receive_prepared(conn, vcpu, mem, bus, &have)
}

/// [`receive`] with the page list computed beforehand (`have` must describe `mem` as it
/// is now): the sender is paused while it waits for the list.
pub fn receive_prepared<S: Read + Write>(
    conn: &mut S,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
    have: &HaveList,
) -> Result<(u64, u64), SnapshotError> {
    pagediff::send_have(conn, have)?;
    let mut progress = Progress::start("state transfer received", None);
    let cut = "the primary closed the connection mid-state";
    let done = apply_state(&mut StateReader::new(conn), vcpu, mem, bus, cut, &mut progress)?;
    progress.finish();
    Ok(done)
}

/// Applies a state (Begin, Pages/Zero, Blobs, End) on top of what `mem` holds and checks
/// the digest. A page may come more than once (a pre-copy sends again what the guest
/// wrote meanwhile): the last copy counts. Returns End's exit (at or after Begin's) and
/// Begin's epoch. `cut` says what a stream that ends early means; the pages written
/// are counted on `progress` (bytes: the page data).
pub fn apply_state<R: Read>(
    reader: &mut StateReader<R>,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
    cut: &str,
    progress: &mut Progress,
) -> Result<(u64, u64), SnapshotError> {
    let (mut pages, mut bytes) = (0u64, 0u64);
    let mut next = || -> Result<StateMessage, SnapshotError> {
        reader.next_message()?.ok_or_else(|| SnapshotError::Protocol(cut.into()))
    };
    let StateMessage::Begin { exit_index, epoch, mem_size } = next()? else {
        return Err(SnapshotError::Protocol("the state does not start with Begin".into()));
    };
    let ours: u64 = mem.iter().map(|r| r.len()).sum();
    if mem_size != ours {
        return Err(SnapshotError::Protocol(format!("the state has {mem_size} bytes of memory, this VM {ours}")));
    }
    let range = |first_page: u64, bytes: u64| {
        first_page
            .checked_mul(PAGE_SIZE as u64)
            .filter(|a| a.checked_add(bytes).is_some_and(|end| end <= ours))
            .ok_or_else(|| SnapshotError::Protocol(format!("pages at {first_page} lie outside memory")))
    };
    loop {
        match next()? {
            StateMessage::Pages { first_page, data } => {
                let addr = range(first_page, data.len() as u64)?;
                mem.write_slice(&data, GuestAddress(addr))?;
                bytes += data.len() as u64;
                pages += (data.len() / PAGE_SIZE) as u64;
                progress.set(bytes, pages);
            }
            StateMessage::Zero { first_page, count } => {
                let len = u64::from(count) * PAGE_SIZE as u64;
                zero_range(mem, range(first_page, len)?, len)?;
            }
            StateMessage::Blob { kind, bytes } => restore_blob(kind, &bytes, vcpu, bus)?,
            StateMessage::End { exit_index: end_index, state_digest } => {
                // A pre-copy begins while the VM runs (at the exit it started) and ends where
                // it paused: the state is the one of End's exit.
                if end_index < exit_index {
                    return Err(SnapshotError::Protocol(format!(
                        "End names exit {end_index}, before Begin's {exit_index}"
                    )));
                }
                check_digest(vcpu, mem, &state_digest)?;
                return Ok((end_index, epoch));
            }
            StateMessage::Begin { .. } => return Err(SnapshotError::Protocol("a second Begin".into())),
            StateMessage::Have { .. } => return Err(SnapshotError::Protocol("a page list inside a state".into())),
        }
    }
}

fn restore_blob(kind: BlobKind, bytes: &[u8], vcpu: &mut VcpuFd, bus: &mut Bus) -> Result<(), SnapshotError> {
    let set = |what| move |source| SnapshotError::Vcpu { what, source };
    match kind {
        BlobKind::Regs => vcpu.set_regs(&blob::<kvm_regs>(bytes, "registers")?).map_err(set("registers")),
        BlobKind::Sregs => vcpu.set_sregs(&blob::<kvm_sregs>(bytes, "special registers")?).map_err(set("sregs")),
        BlobKind::Fpu => {
            let xsave = xsave_from(bytes)?;
            // SAFETY: `xsave` is a whole `kvm_xsave` (4 KiB); the guest's XCR0 enables no
            // state component beyond it (the CPUID table offers none that large).
            unsafe { vcpu.set_xsave(&xsave) }.map_err(set("FPU state (XSAVE)"))
        }
        BlobKind::VcpuEvents => vcpu.set_vcpu_events(&blob::<kvm_vcpu_events>(bytes, "events")?).map_err(set("events")),
        BlobKind::Devices => bus.restore(bytes).map_err(SnapshotError::Protocol),
        BlobKind::Invalid => Err(SnapshotError::Protocol("invalid blob".into())),
    }
}

/// The FPU/SSE state travels as the whole XSAVE area. On the PVM hosts here
/// `KVM_GET_FPU` reports MXCSR as 0 (the guest set 0x1f80), and restoring that
/// left a joined follower's SSE state different from its primary's: the soak's
/// join divergence. `KVM_GET_XSAVE` reports it correctly.
const XSAVE_BYTES: usize = 4096;

/// The XSAVE area as the FPU blob carries it.
pub fn xsave_bytes(x: &kvm_bindings::kvm_xsave) -> Vec<u8> {
    x.region.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn xsave_from(bytes: &[u8]) -> Result<kvm_bindings::kvm_xsave, SnapshotError> {
    if bytes.len() != XSAVE_BYTES {
        return Err(SnapshotError::Protocol(format!("FPU blob is {} bytes, not {XSAVE_BYTES}", bytes.len())));
    }
    let mut x = kvm_bindings::kvm_xsave::default();
    for (w, chunk) in x.region.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok(x)
}

fn check_digest(vcpu: &VcpuFd, mem: &GuestMemoryMmap, sent: &Hash) -> Result<(), SnapshotError> {
    let restored = digest::state_digest(vcpu, mem)?;
    if &restored != sent {
        return Err(SnapshotError::Mismatch { restored: digest::hex(&restored), sent: digest::hex(sent) });
    }
    Ok(())
}

/// Clears `len` bytes of guest memory at `addr` (checked by the caller to lie inside it).
pub fn zero_range(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), SnapshotError> {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(ZEROS.len() as u64) as usize;
        mem.write_slice(&ZEROS[..n], GuestAddress(addr + off))?;
        off += n as u64;
    }
    Ok(())
}

/// Clears all of guest memory.
pub fn zero_memory(mem: &GuestMemoryMmap) -> Result<(), SnapshotError> {
    for region in mem.iter() {
        zero_range(mem, region.start_addr().0, region.len())?;
    }
    Ok(())
}

// The digest's pages and the transfer's pages must be the same unit.
const _: () = assert!(PAGE_SIZE == digest::PAGE);
