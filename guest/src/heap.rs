//! The heap: everything between the end of the image and the end of RAM.
use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

extern "C" {
    static __image_end: u8;
}

/// Hands RAM above the image to the allocator; returns its size in bytes.
pub fn init(mem_size: u64) -> usize {
    let start = (&raw const __image_end) as usize;
    let start = (start + 4095) & !4095;
    let size = (mem_size as usize).saturating_sub(start);
    // SAFETY: [start, mem_size) is RAM that nothing else uses: the image and its .bss end
    // at __image_end, and the monitor's boot structures all lie below the image. Called once.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
    size
}
