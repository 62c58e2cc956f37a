//! Process-wide memory settings, applied once at start before any worker runs: whether the heap
//! may be backed by transparent huge pages.
//!
//! mimalloc asks for huge pages (`MADV_HUGEPAGE`) on its arenas, and Linux then maps 2 MiB at a
//! time. Measured on the 2-core bench VM: that saves 0.1 µs of user CPU per request at 200
//! connections and about 0.6 µs at 1,000 (fewer TLB misses on per-connection state), but an idle
//! keep-alive connection then costs about 1.5 KB of RSS instead of 0.7 KB: its live heap is the
//! same 0.7 KB, and the rest is 2 MiB pages that mimalloc's arenas fill only in part. An edge
//! holding many idle connections may prefer the memory: `runtime.transparent_huge_pages = false`.

/// Turns transparent huge pages off for the whole process unless `transparent_huge_pages`. Pages
/// already mapped stay as they are; this runs before the workers start, when there are few.
pub fn apply(transparent_huge_pages: bool) {
    if transparent_huge_pages {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches only this process's
    // memory-management flags.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "ringway: runtime.transparent_huge_pages = false: cannot turn them off ({}); \
             continuing with the system's setting",
            std::io::Error::last_os_error()
        );
    }
}
