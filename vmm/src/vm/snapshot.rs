//! Moving a running VM's state to a new backup: the primary pauses at a
//! counted exit, completes the instruction in flight, and sends memory (only
//! pages that are not zero), the vCPU's registers and every device's state,
//! then the state digest; the backup restores it into a freshly booted VM and
//! must reach the same digest before it replays a single record.
use crate::devices::bus::Bus;
use crate::vm::digest::{self, DigestError};
use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};
use kvm_ioctls::VcpuFd;
use logging_channel::state::{self, BlobKind, StateMessage, StateReader, MAX_PAGES, PAGE_SIZE};
use logging_channel::{CodecError, Hash};
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
}

/// What a transfer cost.
#[derive(Debug, Clone, Copy)]
pub struct TransferStats {
    pub pages: u64,
    pub bytes: u64,
    pub pause: Duration,
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

/// Sends the VM's state as of counted exit `exit_index`. The caller has stopped the vCPU there.
/// Memory is read once: each page is hashed into the state digest and, unless it is all
/// zero, sent.
pub fn send(
    out: &mut impl Write,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &Bus,
    exit_index: u64,
    epoch: u64,
) -> Result<TransferStats, SnapshotError> {
    let started = Instant::now();
    complete_pending_instruction(vcpu);
    let mem_size: u64 = mem.iter().map(|r| r.len()).sum();
    let mut hasher = digest::cpu_hasher(vcpu)?;
    let mut wire = Wire { out, buf: Vec::with_capacity(2 << 20), bytes: 0 };
    wire.put(&StateMessage::Begin { exit_index, epoch, mem_size })?;
    let pages = send_pages(&mut wire, &mut hasher, mem)?;
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
    wire.flush()?;
    Ok(TransferStats { pages, bytes: wire.bytes, pause: started.elapsed() })
}

/// Frames buffered and written in large writes.
struct Wire<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    bytes: u64,
}

impl<W: Write> Wire<'_, W> {
    fn put(&mut self, m: &StateMessage) -> Result<(), SnapshotError> {
        state::encode(m, &mut self.buf);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SnapshotError> {
        self.out.write_all(&self.buf).and_then(|()| self.out.flush()).map_err(SnapshotError::Send)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Sends every run of non-zero pages, hashing them into the state digest as it goes;
/// returns the pages sent.
fn send_pages<W: Write>(
    wire: &mut Wire<'_, W>,
    hasher: &mut blake3::Hasher,
    mem: &GuestMemoryMmap,
) -> Result<u64, SnapshotError> {
    let mut run: Vec<u8> = Vec::with_capacity(MAX_PAGES * PAGE_SIZE);
    let mut run_start = 0u64;
    let mut pages = 0u64;
    digest::for_each_page(mem, |number, page| {
        let zero = digest::is_zero(page);
        let contiguous = run_start + (run.len() / PAGE_SIZE) as u64 == number;
        if !run.is_empty() && (zero || !contiguous || run.len() == MAX_PAGES * PAGE_SIZE) {
            wire.put(&StateMessage::Pages { first_page: run_start, data: std::mem::take(&mut run) })?;
        }
        if !zero {
            digest::hash_page(hasher, number, page);
            if run.is_empty() {
                run_start = number;
            }
            run.extend_from_slice(page);
            pages += 1;
        }
        Ok::<(), SnapshotError>(())
    })?;
    if !run.is_empty() {
        wire.put(&StateMessage::Pages { first_page: run_start, data: run })?;
    }
    Ok(pages)
}

fn blob<T: FromBytes>(bytes: &[u8], what: &str) -> Result<T, SnapshotError> {
    T::read_from_bytes(bytes).map_err(|_| SnapshotError::Protocol(format!("{what} blob has the wrong size")))
}

/// Receives a state into `mem`/`vcpu`/`bus` (a freshly booted VM of the same shape).
/// Returns (exit_index, epoch) of the primary at the snapshot.
pub fn receive(
    input: &mut impl Read,
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
) -> Result<(u64, u64), SnapshotError> {
    let mut reader = StateReader::new(input);
    let mut next = || -> Result<StateMessage, SnapshotError> {
        reader
            .next_message()?
            .ok_or_else(|| SnapshotError::Protocol("the primary closed the connection mid-state".into()))
    };
    let StateMessage::Begin { exit_index, epoch, mem_size } = next()? else {
        return Err(SnapshotError::Protocol("the state does not start with Begin".into()));
    };
    let ours: u64 = mem.iter().map(|r| r.len()).sum();
    if mem_size != ours {
        return Err(SnapshotError::Protocol(format!("the primary has {mem_size} bytes of memory, this VM {ours}")));
    }
    zero_memory(mem)?;
    loop {
        match next()? {
            StateMessage::Pages { first_page, data } => {
                let addr =
                    first_page.checked_mul(PAGE_SIZE as u64).filter(|a| a.saturating_add(data.len() as u64) <= ours);
                let addr =
                    addr.ok_or_else(|| SnapshotError::Protocol(format!("pages at {first_page} lie outside memory")))?;
                mem.write_slice(&data, GuestAddress(addr))?;
            }
            StateMessage::Blob { kind, bytes } => restore_blob(kind, &bytes, vcpu, bus)?,
            StateMessage::End { exit_index: end_index, state_digest } => {
                if end_index != exit_index {
                    return Err(SnapshotError::Protocol("Begin and End name different exits".into()));
                }
                check_digest(vcpu, mem, &state_digest)?;
                return Ok((exit_index, epoch));
            }
            StateMessage::Begin { .. } => return Err(SnapshotError::Protocol("a second Begin".into())),
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

fn xsave_bytes(x: &kvm_bindings::kvm_xsave) -> Vec<u8> {
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

fn zero_memory(mem: &GuestMemoryMmap) -> Result<(), SnapshotError> {
    let zeros = vec![0u8; 1 << 20];
    for region in mem.iter() {
        let mut off = 0;
        while off < region.len() {
            let n = (region.len() - off).min(zeros.len() as u64) as usize;
            mem.write_slice(&zeros[..n], GuestAddress(region.start_addr().0 + off))?;
            off += n as u64;
        }
    }
    Ok(())
}

// The digest's pages and the transfer's pages must be the same unit.
const _: () = assert!(PAGE_SIZE == digest::PAGE);
