//! The global allocator: mimalloc, entered through its plain `mi_malloc` for ordinary
//! alignments instead of the `mimalloc` crate's always-aligned entry point.
//!
//! Why: `mimalloc` 0.1.52 sends every allocation through `mi_malloc_aligned`, and mimalloc v3
//! serves an aligned request larger than 1 KiB whose size class is not a power of two by
//! over-allocating (about 450 instructions instead of about 40). Callgrind showed that slow
//! path on every proxied request while the exchange future (about 1.5 KB) was boxed per
//! request; blocks of that size are still allocated in bursts past the spare frames.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Alignment every `mi_malloc` block has (MI_MAX_ALIGN_SIZE on 64-bit targets).
const NATURAL_ALIGN: usize = 16;

pub struct Allocator;

/// Lets mimalloc hand this thread's freed pages back to the system now. It does so on its own
/// only when it is next called, after a delay, so a worker that went quiet (its buffers and
/// connections freed) would otherwise keep them resident for as long as it stays quiet.
/// Called by each worker on its trim tick (every 250 ms); with nothing to purge it is cheap.
pub fn collect_freed() {
    // SAFETY: no arguments to uphold; it works on the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// `mi_malloc` gives a block of `size` bytes this alignment without being asked.
#[inline]
fn natural(align: usize, size: usize) -> bool {
    // Blocks smaller than the alignment are only guaranteed their own size's alignment.
    align <= NATURAL_ALIGN && align <= size
}

unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if natural(layout.align(), layout.size()) {
            libmimalloc_sys::mi_malloc(layout.size()) as *mut u8
        } else {
            aligned_alloc(layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if natural(layout.align(), layout.size()) {
            libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8
        } else {
            aligned_alloc_zeroed(layout)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        libmimalloc_sys::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if natural(layout.align(), new_size) {
            libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            aligned_realloc(ptr, layout, new_size)
        }
    }
}

// The over-aligned (or zero-sized) cases, out of line: every allocation site inlines `alloc`,
// and with these inlined too each site would carry their code between its hot instructions.

#[cold]
#[inline(never)]
unsafe fn aligned_alloc(layout: Layout) -> *mut u8 {
    mimalloc::MiMalloc.alloc(layout)
}

#[cold]
#[inline(never)]
unsafe fn aligned_alloc_zeroed(layout: Layout) -> *mut u8 {
    mimalloc::MiMalloc.alloc_zeroed(layout)
}

#[cold]
#[inline(never)]
unsafe fn aligned_realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    mimalloc::MiMalloc.realloc(ptr, layout, new_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        let a = Allocator;
        for (size, align) in [(1, 1), (8, 8), (24, 8), (1500, 8), (20_000, 16), (100, 128)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(0xab, size);
                let q = a.realloc(p, layout, size * 3);
                assert_eq!(q as usize % align, 0);
                assert_eq!(*q.add(size - 1), 0xab);
                a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
            }
        }
    }
}
