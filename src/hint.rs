//! Hints for the request path: which branches are rare, and which memory is about to be used.
//! The plain release build has no profile to tell LLVM which arm of a branch is rare, so error
//! and setup arms end up laid out between hot instructions: the request path then spans more
//! code lines than the 32 KiB L1i holds (`bench/hot-code`). At 1,000 connections most of a
//! request's memory has left the caches since it was last used (docs/performance.md), and a
//! prefetch issued early enough turns a stall into a hit.

/// Marks the branch it is called from as rarely taken, so its code is placed out of the hot
/// path. A call to a cold function is LLVM's signal; `inline(never)` keeps the call (and the
/// signal) from being inlined away.
#[cold]
#[inline(never)]
pub fn cold() {}

/// Asks for `lines` cache lines, from the one `at` is in on, into every cache level. Only a
/// hint: it reads nothing into the program and never faults, so any address will do, even a
/// stale one.
#[inline(always)]
pub fn prefetch(at: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..lines {
        // SAFETY: a prefetch is a hint: it reads nothing into the program and never faults.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                at.wrapping_add(i * 64).cast::<i8>(),
                std::arch::x86_64::_MM_HINT_T0,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, lines);
}

/// Prefetches every cache line `value` spans (a value need not start on a line).
#[inline(always)]
pub fn prefetch_value<T>(value: &T) {
    let at = std::ptr::from_ref(value).cast::<u8>();
    prefetch(
        at,
        (at as usize % 64 + std::mem::size_of::<T>()).div_ceil(64),
    );
}
