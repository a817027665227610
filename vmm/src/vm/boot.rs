//! Everything that makes the guest's first instruction run in 64-bit mode:
//! guest memory with the image, boot info and page tables in it, and the vCPU's
//! initial registers. The state is the same on every host, bit for bit, which
//! is the first half of the determinism contract.
use guest_abi::{BootInfo, BOOT_INFO_ADDR, IMAGE_BASE, MMIO_BASE, PAGE_TABLE_ADDR, RAM_LIMIT};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("guest memory must be between 16 MiB and {limit} MiB, in whole MiB; got {0} bytes", limit = RAM_LIMIT >> 20)]
    MemorySize(u64),
    #[error("could not allocate {0} bytes of guest memory: {1}")]
    Allocate(u64, String),
    #[error("the guest image is not a loadable ELF for this monitor: {0}")]
    Elf(String),
    #[error("the guest image ends at {end:#x}, beyond guest memory ({mem:#x}); give the VM more memory")]
    ImageTooBig { end: u64, mem: u64 },
    #[error("the guest image must be linked at {IMAGE_BASE:#x}; its entry point is {0:#x}")]
    EntryPoint(u64),
    #[error("writing boot structures into guest memory failed: {0}")]
    Write(#[from] vm_memory::guest_memory::Error),
    #[error("setting the vCPU's boot {what} failed: {source}")]
    Vcpu {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Where the monitor's boot GDT lives; the guest loads its own at once.
const BOOT_GDT_ADDR: u64 = 0x500;
const BOOT_GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
const PAGE_PRESENT_RW_USER: u64 = 0x7;
const PAGE_HUGE: u64 = 0x80;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

pub fn create_memory(mem_size: u64) -> Result<GuestMemoryMmap, BootError> {
    if !(16 << 20..=RAM_LIMIT).contains(&mem_size) || !mem_size.is_multiple_of(1 << 20) {
        return Err(BootError::MemorySize(mem_size));
    }
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size as usize)])
        .map_err(|e| BootError::Allocate(mem_size, e.to_string()))
}

/// Loads the ELF and writes boot info, GDT and page tables. Returns the entry point.
pub fn load_guest(mem: &GuestMemoryMmap, mem_size: u64, image: &[u8], info: &BootInfo) -> Result<u64, BootError> {
    let mut reader = std::io::Cursor::new(image);
    let loaded =
        Elf::load(mem, None, &mut reader, Some(GuestAddress(IMAGE_BASE))).map_err(|e| BootError::Elf(e.to_string()))?;
    if loaded.kernel_end > mem_size {
        return Err(BootError::ImageTooBig { end: loaded.kernel_end, mem: mem_size });
    }
    let entry = loaded.kernel_load.0;
    if !(IMAGE_BASE..loaded.kernel_end).contains(&entry) {
        return Err(BootError::EntryPoint(entry));
    }
    mem.write_slice(&info.to_bytes(), GuestAddress(BOOT_INFO_ADDR))?;
    for (i, d) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))?;
    }
    write_page_tables(mem)?;
    Ok(entry)
}

/// Identity-maps the low 4 GiB (RAM and the MMIO window) with 2 MiB pages, user-accessible,
/// because the guest's ring-3 program reaches its devices directly.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let pml4 = PAGE_TABLE_ADDR;
    let pdpt = pml4 + 0x1000;
    let pd0 = pdpt + 0x1000;
    mem.write_obj(pdpt | PAGE_PRESENT_RW_USER, GuestAddress(pml4))?;
    for gib in 0..4u64 {
        let pd = pd0 + gib * 0x1000;
        mem.write_obj(pd | PAGE_PRESENT_RW_USER, GuestAddress(pdpt + gib * 8))?;
        for i in 0..512u64 {
            let frame = (gib << 30) | (i << 21);
            mem.write_obj(frame | PAGE_PRESENT_RW_USER | PAGE_HUGE, GuestAddress(pd + i * 8))?;
        }
    }
    const _: () = assert!(MMIO_BASE < 4 << 30, "the MMIO window must be inside the identity map");
    Ok(())
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 64-bit ring 0 at `entry` with RDI pointing at the boot info.
pub fn setup_vcpu(vcpu: &VcpuFd, entry: u64) -> Result<(), BootError> {
    let err = |what| move |source| BootError::Vcpu { what, source };
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(err("special registers"))?;
    sregs.cs = segment(0x08, true);
    let data = segment(0x10, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = PAGE_TABLE_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(err("special registers"))?;

    let regs = kvm_regs { rip: entry, rdi: BOOT_INFO_ADDR, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(err("registers"))?;

    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(err("FPU state"))?;
    Ok(())
}
