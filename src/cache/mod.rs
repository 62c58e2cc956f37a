//! Response cache: HTTP caching rules (`policy`), one worker's store of entries under a byte
//! budget (`store`), and the lock that lets one of several concurrent misses for a key fetch it
//! while the rest wait (`lock`). Per core, like every other piece of request-path state.

pub mod lock;
pub mod policy;
pub mod store;

pub use lock::{LockGuard, Pending};
pub use policy::{request_use, storable, RequestUse, Storable};
pub use store::{Cache, Entry, Freshness, Lookup};

/// Writes a request's cache key: the route's name, then `scheme://host/target` with the host
/// lower-cased. One place, for the lookup and for a purge to agree.
pub fn write_key(out: &mut Vec<u8>, route: &str, scheme: &str, host: &str, target: &str) {
    out.clear();
    out.extend_from_slice(route.as_bytes());
    out.push(b' ');
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"://");
    out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
    out.extend_from_slice(target.as_bytes());
}

/// A zone of `max` bytes with every other setting off, for unit tests.
#[cfg(test)]
pub fn test_zone(max: u64) -> crate::config::CacheZone {
    crate::config::CacheZone {
        name: "t".into(),
        max_size: max,
        max_size_per_worker: max,
        max_entry_size: max,
        valid: Vec::new(),
        valid_any: None,
        use_stale: std::time::Duration::ZERO,
        revalidate: true,
        status_header: None,
        lock_timeout: std::time::Duration::ZERO,
        bypass: Vec::new(),
    }
}

/// The cache's clock, in seconds: the worker's coarse clock, good to a sweep period.
pub fn now_s() -> u64 {
    crate::deadline::coarse_ms() / 1000
}
