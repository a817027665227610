//! The few C symbols that `core` calls and that no libc provides here.
//!
//! Written in assembly because the compiler turns a Rust byte loop for
//! `memset` back into a call to `memset`. `rep` string instructions only ever
//! run in ring 3, where they are native.
use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.libc, "ax"
    .global memset
memset:
    mov r9, rdi
    mov eax, esi
    mov rcx, rdx
    cld
    rep stosb
    mov rax, r9
    ret

    .global memcpy
memcpy:
    mov rax, rdi
    mov rcx, rdx
    cld
    rep movsb
    ret

    .global memmove
memmove:
    mov rax, rdi
    mov rcx, rdx
    cmp rdi, rsi
    jbe 1f
    lea rsi, [rsi + rdx - 1]
    lea rdi, [rdi + rdx - 1]
    std
    rep movsb
    cld
    ret
1:
    cld
    rep movsb
    ret
    "#
);

#[no_mangle]
pub extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees both ranges are readable for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[no_mangle]
pub extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

/// Referenced by release builds of `core` even with panic=abort; never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
