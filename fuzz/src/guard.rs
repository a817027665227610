//! A global allocator that remembers the largest single allocation: the fuzz binaries
//! install it to check that no input makes a decoder allocate what a length field
//! merely claims.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Per thread, so tests running side by side (or a panic's backtrace being printed
    // on another thread) do not blur each other's figure. Const-initialised and without
    // a destructor: using it never allocates.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: during thread teardown the slot may be gone; then nothing is measured.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

/// The system allocator, measuring. Install with `#[global_allocator]`.
pub struct Guard;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a thread-local maximum of the sizes.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout obligations pass through unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`; `new_size` obligations pass through unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts a new measurement on this thread.
pub fn reset() {
    LARGEST.with(|l| l.set(0));
}

/// The largest single allocation on this thread since [`reset`] (0 when `Guard` is
/// not installed).
pub fn largest() -> usize {
    LARGEST.with(Cell::get)
}
