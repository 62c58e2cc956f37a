//! Response cache: HTTP caching rules (`policy`), one worker's store of entries under a byte
//! budget (`store`), and the lock that lets one of several concurrent misses for a key fetch it
//! while the rest wait (`lock`). Per core, like every other piece of request-path state.

pub mod lock;
pub mod policy;
pub mod store;

pub use lock::{LockGuard, Pending};
pub use policy::{request_use, storable, RequestUse, Storable};
pub use store::{Cache, Entry, Freshness, Lookup};

/// The cache's clock, in seconds: the worker's coarse clock, good to a sweep period.
pub fn now_s() -> u64 {
    crate::deadline::coarse_ms() / 1000
}
