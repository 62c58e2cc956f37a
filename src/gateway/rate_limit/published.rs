//! The process-wide rate-limit state: one table per limited route, shared by every worker as an
//! `Arc` (hence "published"), updated with atomics only. Nothing here takes a lock on the request
//! path; the registry's mutex is touched when a worker builds its `CoreState` (start, reload).
//!
//! How the limit holds across cores: each key (client IP, consumer, header value or the route)
//! hashes to a slot of a fixed-size open-addressed table. A slot holds the key's 64-bit hash, its
//! GCRA theoretical arrival time (TAT) and its in-flight count. A request loads the TAT, decides,
//! and publishes the new TAT with one compare-and-swap, retrying if another core got there
//! first, so every core sees and spends the same budget: 100/s means 100/s for the process.
//!
//! Memory is bounded: the table has `2 * max_keys` slots (a power of two) and a key looks at no
//! more than `PROBE` slots. A slot whose TAT is in the past is idle (its key is back to a full
//! burst, so forgetting it loses nothing) and is reused by the next new key: that is the stale-key
//! eviction, done lazily, with no sweeper. When all probed slots are busy the one closest to
//! idle is taken over (that key gets a fresh bucket: a small leniency, never a false 429); when
//! even those have requests in flight the request is let through and counted (`rate_table_full`).
//!
//! Tables survive a reload when the route's name and limit are unchanged: the registry hands the
//! new `CoreState`s the same `Arc`, so a reload cannot be used to reset a limit.

use super::gcra::{Decision, Gcra};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

/// Slots a key may occupy, starting at its hash.
const PROBE: usize = 8;

#[repr(align(32))]
#[derive(Default)]
struct Slot {
    /// Hash of the key; 0 for a slot never used.
    key: AtomicU64,
    tat: AtomicU64,
    inflight: AtomicU32,
}

/// A shared, lock-free limiter table for one route.
pub struct SharedTable {
    slots: Box<[Slot]>,
    mask: usize,
    pub gcra: Option<Gcra>,
    pub concurrent: Option<u32>,
    hasher: RandomState,
}

/// What a request got from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed: `remaining` requests left now, bucket full again in `reset_ns`; `slot` holds an
    /// in-flight count to give back when the table limits concurrency.
    Allow {
        slot: Option<usize>,
        remaining: u64,
        reset_ns: u64,
    },
    RateLimited {
        retry_after_ns: u64,
    },
    TooManyInFlight,
    /// No slot could be had: let through, counted by the caller.
    TableFull,
}

/// Nanoseconds on one monotonic clock that every worker shares.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Start at 1s so that a TAT of 0 ("never seen") is always in the past.
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1_000_000_000
}

impl SharedTable {
    pub fn new(max_keys: usize, gcra: Option<Gcra>, concurrent: Option<u32>) -> Self {
        let n = (max_keys * 2).next_power_of_two().max(PROBE * 2);
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            gcra,
            concurrent,
            hasher: RandomState::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key).max(1)
    }

    /// The slot for `h`, claiming one if the key is new; None when the table cannot place it.
    fn slot(&self, h: u64, now: u64) -> Option<usize> {
        let start = h as usize & self.mask;
        for i in 0..PROBE {
            let idx = (start + i) & self.mask;
            if self.slots[idx].key.load(Ordering::Acquire) == h {
                return Some(idx);
            }
        }
        let mut closest: Option<(usize, u64, u64)> = None;
        for i in 0..PROBE {
            let idx = (start + i) & self.mask;
            let s = &self.slots[idx];
            let k = s.key.load(Ordering::Acquire);
            let idle = s.inflight.load(Ordering::Acquire) == 0;
            let tat = s.tat.load(Ordering::Acquire);
            if k == 0 || (idle && Gcra::is_idle(tat, now)) {
                match s
                    .key
                    .compare_exchange(k, h, Ordering::AcqRel, Ordering::Acquire)
                {
                    // An idle TAT reads as "full burst" for the new key too: no reset needed.
                    Ok(_) => return Some(idx),
                    Err(now_k) if now_k == h => return Some(idx),
                    Err(_) => continue,
                }
            }
            if idle && closest.is_none_or(|(_, t, _)| tat < t) {
                closest = Some((idx, tat, k));
            }
        }
        let (idx, _, k) = closest?;
        let s = &self.slots[idx];
        match s
            .key
            .compare_exchange(k, h, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                s.tat.store(0, Ordering::Release);
                Some(idx)
            }
            Err(now_k) if now_k == h => Some(idx),
            Err(_) => None,
        }
    }

    /// Decides one request for the key hashed to `h`.
    pub fn acquire(&self, h: u64) -> Outcome {
        let now = now_ns();
        let Some(idx) = self.slot(h, now) else {
            return Outcome::TableFull;
        };
        let s = &self.slots[idx];
        let mut remaining = u64::MAX;
        let mut reset_ns = 0;
        if let Some(g) = &self.gcra {
            let mut tat = s.tat.load(Ordering::Acquire);
            loop {
                match g.decide(tat, now) {
                    Decision::Deny { retry_after } => {
                        return Outcome::RateLimited {
                            retry_after_ns: retry_after,
                        }
                    }
                    Decision::Allow { tat: new } => {
                        match s.tat.compare_exchange_weak(
                            tat,
                            new,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                remaining = g.remaining(new, now);
                                reset_ns = new - now;
                                break;
                            }
                            Err(seen) => tat = seen,
                        }
                    }
                }
            }
        }
        let mut slot = None;
        if let Some(max) = self.concurrent {
            let before = s.inflight.fetch_add(1, Ordering::AcqRel);
            if before >= max {
                s.inflight.fetch_sub(1, Ordering::AcqRel);
                // The rate budget was spent on a request that will not run: give it back.
                if let Some(g) = &self.gcra {
                    let _ = s
                        .tat
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                            Some(t.saturating_sub(g.t))
                        });
                }
                return Outcome::TooManyInFlight;
            }
            slot = Some(idx);
        }
        Outcome::Allow {
            slot,
            remaining,
            reset_ns,
        }
    }

    /// Gives back the in-flight count taken by an allowed request.
    pub fn release(&self, slot: usize) {
        let _ = self.slots[slot]
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

type Registry = Mutex<Vec<(String, Weak<SharedTable>)>>;

/// The table for `identity` (route name and limit): the existing one while any worker still
/// holds it, else a new one from `make`. Called at `CoreState` build, never per request.
pub fn table_for(identity: &str, make: impl FnOnce() -> SharedTable) -> Arc<SharedTable> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let reg = REGISTRY.get_or_init(|| Mutex::new(Vec::new()));
    let mut reg = match reg.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    reg.retain(|(_, w)| w.strong_count() > 0);
    if let Some(t) = reg
        .iter()
        .find(|(id, _)| id == identity)
        .and_then(|(_, w)| w.upgrade())
    {
        return t;
    }
    let t = Arc::new(make());
    reg.push((identity.to_string(), Arc::downgrade(&t)));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_across_threads() {
        // 4 threads hammer one key of a 100/s, burst 10 table for a short time: the total
        // allowed stays at what one bucket allows, not 4x.
        let t = Arc::new(SharedTable::new(
            16,
            Some(Gcra::new(100, 1_000_000_000, 10)),
            None,
        ));
        let h = t.hash(b"client");
        let start = now_ns();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    while now_ns() - start < 200_000_000 {
                        if matches!(t.acquire(h), Outcome::Allow { .. }) {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let elapsed = (now_ns() - start) as f64 / 1e9;
        let expected = 10.0 + 100.0 * elapsed;
        assert!(
            (total as f64) <= expected + 2.0 && (total as f64) >= 10.0 + 100.0 * 0.2 - 2.0,
            "allowed {total}, expected about {expected:.0}"
        );
    }

    #[test]
    fn bounded_keys_and_eviction() {
        let t = SharedTable::new(4, Some(Gcra::new(1, 1_000_000_000, 1)), None);
        assert_eq!(t.capacity(), 16);
        // Far more keys than slots: every new key still gets a decision, none panics.
        let mut allowed = 0;
        for i in 0..1000u32 {
            let h = t.hash(&i.to_le_bytes());
            if matches!(t.acquire(h), Outcome::Allow { .. }) {
                allowed += 1;
            }
        }
        assert!(allowed >= 16, "{allowed}");
    }

    #[test]
    fn concurrency_limit() {
        let t = SharedTable::new(4, None, Some(2));
        let h = t.hash(b"k");
        let a = t.acquire(h);
        let b = t.acquire(h);
        assert!(matches!(a, Outcome::Allow { slot: Some(_), .. }));
        assert!(matches!(b, Outcome::Allow { .. }));
        assert_eq!(t.acquire(h), Outcome::TooManyInFlight);
        if let Outcome::Allow { slot: Some(s), .. } = a {
            t.release(s);
        }
        assert!(matches!(t.acquire(h), Outcome::Allow { .. }));
    }

    #[test]
    fn registry_reuses_live_tables() {
        let a = table_for("r#1", || SharedTable::new(4, None, Some(1)));
        let b = table_for("r#1", || SharedTable::new(4, None, Some(1)));
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let c = table_for("r#2", || SharedTable::new(4, None, Some(1)));
        assert_eq!(c.capacity(), 16);
    }
}
