//! Hashes of guest state: how record and replay prove they are in the same place.
use kvm_bindings::kvm_regs;
use kvm_ioctls::VcpuFd;
use logging_channel::Hash;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("reading vCPU {what} for the state digest failed: {source}")]
    Vcpu {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("reading guest memory for the state digest failed: {0}")]
    Memory(#[from] vm_memory::guest_memory::Error),
}

fn gprs(r: &kvm_regs) -> [u64; 18] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
        r.rip, r.rflags,
    ]
}

fn hash_u64s(h: &mut blake3::Hasher, values: &[u64]) {
    for v in values {
        h.update(&v.to_le_bytes());
    }
}

/// Digest of the general registers, RIP and RFLAGS.
pub fn regs_digest(vcpu: &VcpuFd) -> Result<Hash, DigestError> {
    let regs = vcpu.get_regs().map_err(|source| DigestError::Vcpu { what: "registers", source })?;
    let mut h = blake3::Hasher::new();
    hash_u64s(&mut h, &gprs(&regs));
    Ok(*h.finalize().as_bytes())
}

/// The short form carried in every log entry, of the registers as of the exit just
/// taken (see [`crate::vm::kvm_ext::exit_regs`]: with `KVM_CAP_SYNC_REGS` no ioctl).
/// Equal to the first 8 bytes of [`regs_digest`] at the same exit.
pub fn regs_hash64(vcpu: &mut VcpuFd) -> Result<u64, DigestError> {
    let regs = crate::vm::kvm_ext::exit_regs(vcpu).map_err(|source| DigestError::Vcpu { what: "registers", source })?;
    let mut h = blake3::Hasher::new();
    hash_u64s(&mut h, &gprs(&regs));
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    Ok(u64::from_le_bytes(b))
}

/// Digest of the whole machine: registers, control and segment state, FPU/SSE, all of RAM.
pub fn state_digest(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Result<Hash, DigestError> {
    let mut h = cpu_hasher(vcpu)?;
    hash_memory(&mut h, mem)?;
    Ok(*h.finalize().as_bytes())
}

/// The state digest's hasher after the vCPU state, before memory: feed it all of
/// guest memory in address order (in any chunking) and finalize to get [`state_digest`].
pub fn cpu_hasher(vcpu: &VcpuFd) -> Result<blake3::Hasher, DigestError> {
    let err = |what| move |source| DigestError::Vcpu { what, source };
    let regs = vcpu.get_regs().map_err(err("registers"))?;
    let sregs = vcpu.get_sregs().map_err(err("special registers"))?;
    // The XSAVE area, not KVM_GET_FPU: on the PVM hosts here the latter reports MXCSR 0.
    let xsave = vcpu.get_xsave().map_err(err("FPU state (XSAVE)"))?;
    let area: Vec<u8> = xsave.region.iter().take(416 / 4).flat_map(|w| w.to_le_bytes()).collect();
    let mut h = blake3::Hasher::new();
    hash_u64s(&mut h, &gprs(&regs));
    hash_u64s(&mut h, &[sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer]);
    for s in [sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss, sregs.tr] {
        hash_u64s(&mut h, &[s.base, u64::from(s.limit), u64::from(s.selector), u64::from(s.dpl)]);
    }
    for t in [sregs.gdt, sregs.idt] {
        hash_u64s(&mut h, &[t.base, u64::from(t.limit)]);
    }
    // Legacy area: FCW (0..2), FSW (2..4), abridged FTW (4), MXCSR (24..28), ST0-7
    // (32..160), XMM0-15 (160..416); the last-instruction pointers are left out.
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([area[i], area[i + 1]]));
    let mxcsr = u64::from(u32::from_le_bytes([area[24], area[25], area[26], area[27]]));
    hash_u64s(&mut h, &[u16_at(0), u16_at(2), u64::from(area[4]), mxcsr]);
    h.update(&area[32..416]);
    Ok(h)
}

/// Bytes of guest memory the digest treats as one unit.
pub const PAGE: usize = 4096;

/// Hashes memory as its non-zero pages, each with its page number: the same
/// contents give the same digest, and hashing skips what a guest never touched
/// (most of it), which keeps the pause of a state transfer short.
fn hash_memory(h: &mut blake3::Hasher, mem: &GuestMemoryMmap) -> Result<(), DigestError> {
    for_each_page(mem, |number, page| {
        if !is_zero(page) {
            hash_page(h, number, page);
        }
        Ok::<(), DigestError>(())
    })
}

/// Feeds one non-zero page into a state digest.
pub fn hash_page(h: &mut blake3::Hasher, number: u64, page: &[u8]) {
    h.update(&number.to_le_bytes());
    h.update(page);
}

pub fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8).all(|w| w == [0u8; 8])
}

/// Calls `f(page_number, bytes)` for every page of guest memory, in address order.
pub fn for_each_page<E: From<vm_memory::guest_memory::Error>>(
    mem: &GuestMemoryMmap,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    for region in mem.iter() {
        let start = region.start_addr().0;
        let len = region.len();
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(CHUNK as u64) as usize;
            mem.read_slice(&mut buf[..n], GuestAddress(start + off))?;
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                f((start + off) / PAGE as u64 + i as u64, page)?;
            }
            off += n as u64;
        }
    }
    Ok(())
}

pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}
