//! Everything that runs in ring 0, in assembly.
//!
//! Ring-0 guest code is emulated one instruction at a time on PVM hosts and
//! cannot do SSE arithmetic, so this is kept to the minimum: load descriptor
//! tables, enter ring 3, count timer ticks, report fatal exceptions. No Rust
//! code ever runs in ring 0.
//!
//! GDT: 0x08 kernel code, 0x10 kernel data, 0x18 user data (RPL 3 = 0x1b),
//! 0x20 user code (RPL 3 = 0x23), 0x28 TSS. Interrupts from ring 3 switch to
//! `INT_STACK` through TSS.RSP0; a handler only touches memory with one locked
//! instruction, so it saves no registers.

use core::arch::global_asm;
use guest_abi::{system, vector};

/// Entries in the IDT: the 32 exceptions, the timer and the NIC.
const IDT_ENTRIES: usize = 34;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // RDI = boot info address from the monitor; kept until user_entry.
    lea rsp, [rip + {kstack} + {kstack_size}]
    lgdt [rip + GDT_PTR]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rax, [rip + 2f]
    push 0x08
    push rax
    retfq
2:
    // The TSS base is split across the descriptor; patch it in.
    lea rax, [rip + TSS]
    lea rdx, [rip + GDT + 0x28]
    mov word ptr [rdx + 2], ax
    shr rax, 16
    mov byte ptr [rdx + 4], al
    mov byte ptr [rdx + 7], ah
    shr rax, 16
    mov dword ptr [rdx + 8], eax
    lea rax, [rip + {istack} + {istack_size}]
    mov qword ptr [rip + TSS + 4], rax
    mov ax, 0x28
    ltr ax
    // Interrupt gates: selector 0x08, present, DPL 0, type 0xE.
    lea rsi, [rip + HANDLERS]
    lea rdx, [rip + IDT]
    mov ecx, {idt_entries}
3:
    mov rax, qword ptr [rsi]
    mov word ptr [rdx], ax
    mov word ptr [rdx + 2], 0x08
    mov word ptr [rdx + 4], 0x8E00
    shr rax, 16
    mov word ptr [rdx + 6], ax
    shr rax, 16
    mov dword ptr [rdx + 8], eax
    add rsi, 8
    add rdx, 16
    dec ecx
    jnz 3b
    lidt [rip + IDT_PTR]
    // iretq into ring 3 with interrupts enabled.
    // RSP as if user_entry had been called: 16-byte aligned minus the return address.
    push 0x1b
    lea rax, [rip + {ustack} + {ustack_size} - 8]
    push rax
    push 0x202
    push 0x23
    lea rax, [rip + {user_entry}]
    push rax
    iretq

    .section .text.ring0, "ax"
timer_handler:
    lock inc qword ptr [rip + {ticks}]
    iretq
nic_handler:
    lock inc qword ptr [rip + {nic_irqs}]
    iretq

    // Exceptions: make the frame uniform (error code slot, vector), then report.
    .macro EXC_NOERR n
exc_\n:
    push 0
    push \n
    jmp fault_common
    .endm
    .macro EXC_ERR n
exc_\n:
    push \n
    jmp fault_common
    .endm
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

fault_common:
    mov rbx, {sys_base}
    mov rax, qword ptr [rsp + 8]
    mov qword ptr [rbx + {fault_error}], rax
    mov rax, qword ptr [rsp + 16]
    mov qword ptr [rbx + {fault_rip}], rax
    mov rax, cr2
    mov qword ptr [rbx + {fault_cr2}], rax
    mov rax, qword ptr [rsp]
    mov qword ptr [rbx + {fault_vector}], rax
4:
    cli
    hlt
    jmp 4b

    .section .rodata.ring0, "a"
    .balign 8
HANDLERS:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_\n
    .endr
    .quad timer_handler
    .quad nic_handler
IDT_PTR:
    .word {idt_entries} * 16 - 1
    .quad IDT
GDT_PTR:
    .word GDT_END - GDT - 1
    .quad GDT

    .section .data.ring0, "aw"
    .balign 16
GDT:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0x00cff3000000ffff
    .quad 0x00affb000000ffff
    .quad 0x0000890000000067
    .quad 0
GDT_END:
    .balign 16
TSS:
    .fill 104, 1, 0
    .balign 16
IDT:
    .fill {idt_entries} * 16, 1, 0
    "#,
    kstack = sym KERNEL_STACK,
    kstack_size = const KERNEL_STACK_SIZE,
    istack = sym INT_STACK,
    istack_size = const INT_STACK_SIZE,
    ustack = sym crate::USER_STACK,
    ustack_size = const crate::USER_STACK_SIZE,
    user_entry = sym crate::user_entry,
    ticks = sym TICKS,
    nic_irqs = sym NIC_IRQS,
    idt_entries = const IDT_ENTRIES,
    sys_base = const system::BASE,
    fault_error = const system::FAULT_ERROR,
    fault_rip = const system::FAULT_RIP,
    fault_cr2 = const system::FAULT_CR2,
    fault_vector = const system::FAULT_VECTOR,
);

const KERNEL_STACK_SIZE: usize = 4096;
const INT_STACK_SIZE: usize = 4096;

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

static mut KERNEL_STACK: Stack<KERNEL_STACK_SIZE> = Stack([0; KERNEL_STACK_SIZE]);
static mut INT_STACK: Stack<INT_STACK_SIZE> = Stack([0; INT_STACK_SIZE]);

/// Timer ticks since boot, incremented by the ring-0 handler: the guest's clock.
#[no_mangle]
static mut TICKS: u64 = 0;
/// NIC interrupts taken since boot.
#[no_mangle]
static mut NIC_IRQS: u64 = 0;

/// The tick count. Interrupts may land between any two instructions, so read it volatile.
pub fn ticks() -> u64 {
    // SAFETY: TICKS is a naturally aligned u64 that only the timer handler writes,
    // with one locked instruction; an aligned 8-byte load cannot tear.
    unsafe { core::ptr::read_volatile(&raw const TICKS) }
}

/// NIC interrupts taken since boot.
#[allow(dead_code)]
pub fn nic_irqs() -> u64 {
    // SAFETY: as for `ticks`.
    unsafe { core::ptr::read_volatile(&raw const NIC_IRQS) }
}

/// Vector numbers are part of the ring-0 code above; fail the build if the ABI moves them.
const _: () = assert!(vector::TIMER == 32 && vector::NIC == 33 && IDT_ENTRIES == 34);
