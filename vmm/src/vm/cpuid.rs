//! The explicit CPUID table every ftvmm guest sees.
//!
//! Primary and backup must present the same CPU to the guest, and the guest
//! must not find instructions that return nondeterministic values (RDRAND,
//! RDSEED, RDTSCP/RDPID) advertised. So the table is built from an allowlist:
//! a few leaves, and in them only the feature bits a baseline x86-64 program
//! uses. Its digest goes into every log header and handshake.
use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Supported(#[source] kvm_ioctls::Error),
    #[error("could not build the CPUID table: {0}")]
    Build(String),
}

/// (leaf, subleaf, eax mask, ebx mask, ecx mask, edx mask)
type LeafMask = (u32, u32, u32, u32, u32, u32);

const ALL: u32 = u32::MAX;

// Leaf 1 ECX: SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT, AES.
const L1_ECX: u32 =
    (1 << 0) | (1 << 1) | (1 << 9) | (1 << 13) | (1 << 19) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 25);
// Leaf 1 EDX: FPU, PSE, MSR, PAE, CX8, SEP, PGE, CMOV, PAT, CLFSH, MMX, FXSR, SSE, SSE2.
const L1_EDX: u32 = (1 << 0)
    | (1 << 3)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 11)
    | (1 << 13)
    | (1 << 15)
    | (1 << 16)
    | (1 << 19)
    | (1 << 23)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26);
// Leaf 1 EBX: family/brand/CLFLUSH size; the APIC ID and logical count are forced to 0/1 below.
const L1_EBX: u32 = 0x0000_ffff;
// Leaf 7.0 EBX: BMI1, BMI2, ERMS. (RDSEED is bit 18: hidden.)
const L7_EBX: u32 = (1 << 3) | (1 << 8) | (1 << 9);
// 0x8000_0001 ECX: LAHF/SAHF, LZCNT, PREFETCHW. EDX: SYSCALL, NX, LM. (RDTSCP is bit 27: hidden.)
const LX1_ECX: u32 = (1 << 0) | (1 << 5) | (1 << 8);
const LX1_EDX: u32 = (1 << 11) | (1 << 20) | (1 << 29);

const LEAVES: &[LeafMask] = &[
    (0x0, 0, 0, ALL, ALL, ALL),
    (0x1, 0, ALL, L1_EBX, L1_ECX, L1_EDX),
    (0x7, 0, 0, L7_EBX, 0, 0),
    (0x8000_0000, 0, 0, ALL, ALL, ALL),
    (0x8000_0001, 0, 0, 0, LX1_ECX, LX1_EDX),
    (0x8000_0002, 0, ALL, ALL, ALL, ALL),
    (0x8000_0003, 0, ALL, ALL, ALL, ALL),
    (0x8000_0004, 0, ALL, ALL, ALL, ALL),
    (0x8000_0008, 0, 0x0000_ffff, 0, 0, 0),
];

/// Builds the guest's CPUID table from what this host's KVM supports.
pub fn guest_cpuid(kvm: &Kvm) -> Result<CpuId, CpuidError> {
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(CpuidError::Supported)?;
    let mut entries = Vec::with_capacity(LEAVES.len());
    for &(leaf, sub, ma, mb, mc, md) in LEAVES {
        let Some(host) = supported.as_slice().iter().find(|e| e.function == leaf && e.index == sub) else {
            continue;
        };
        let mut e = kvm_cpuid_entry2 {
            function: leaf,
            index: sub,
            flags: host.flags,
            eax: host.eax & ma,
            ebx: host.ebx & mb,
            ecx: host.ecx & mc,
            edx: host.edx & md,
            ..Default::default()
        };
        match leaf {
            // Highest basic / extended leaf: never point past what the table holds.
            0x0 => e.eax = host.eax.min(0x7),
            0x8000_0000 => e.eax = host.eax.min(0x8000_0008),
            // One logical processor (bits 23:16), APIC ID 0.
            0x1 => e.ebx |= 1 << 16,
            _ => {}
        }
        entries.push(e);
    }
    CpuId::from_entries(&entries).map_err(|e| CpuidError::Build(format!("{e:?}")))
}

/// A stable digest of the table, for log headers and the pairing handshake.
pub fn cpuid_digest(cpuid: &CpuId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for e in cpuid.as_slice() {
        for v in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] {
            h.update(&v.to_le_bytes());
        }
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdrand_rdseed_and_rdtscp_are_never_advertised() {
        assert_eq!(L1_ECX & (1 << 30), 0, "RDRAND");
        assert_eq!(L7_EBX & (1 << 18), 0, "RDSEED");
        assert_eq!(LX1_EDX & (1 << 27), 0, "RDTSCP");
    }
}
