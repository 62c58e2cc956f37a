//! Branch hints for the request path. The plain release build has no profile to tell LLVM which
//! arm of a branch is rare, so error and setup arms end up laid out between hot instructions:
//! the request path then spans more code lines than the 32 KiB L1i holds (`bench/hot-code`).

/// Marks the branch it is called from as rarely taken, so its code is placed out of the hot
/// path. A call to a cold function is LLVM's signal; `inline(never)` keeps the call (and the
/// signal) from being inlined away.
#[cold]
#[inline(never)]
pub fn cold() {}
