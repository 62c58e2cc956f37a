//! Request collapsing (nginx's `proxy_cache_lock`): while one miss for a key is on its way to
//! the upstream, later misses for it on the same worker wait for its answer (up to the zone's
//! `lock_timeout`) instead of all going upstream at once.

use super::Cache;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A fetch in progress for one key.
#[derive(Default)]
pub struct Pending {
    done: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Pending {
    /// Resolves once the fetch has ended, stored or not.
    pub fn done(&self) -> impl Future<Output = ()> + '_ {
        Done(self)
    }

    fn finish(&self) {
        self.done.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

struct Done<'a>(&'a Pending);

impl Future for Done<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.0.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Held by the request that fetches a key; released when its response is stored, or when the
/// exchange ends however it ends (the drop), so waiters never outwait a failed fetch.
pub struct LockGuard {
    cache: Rc<RefCell<Cache>>,
    key: Box<[u8]>,
    pending: Rc<Pending>,
    released: Cell<bool>,
}

impl LockGuard {
    pub fn release(&self) {
        if self.released.replace(true) {
            return;
        }
        if let Ok(mut c) = self.cache.try_borrow_mut() {
            if c.pending
                .get(&self.key)
                .is_some_and(|p| Rc::ptr_eq(p, &self.pending))
            {
                c.pending.remove(&self.key);
            }
        }
        self.pending.finish();
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Either the fetch already under way for `key`, to wait for, or the lock to fetch it.
pub enum Collapse {
    Wait(Rc<Pending>),
    Fetch(LockGuard),
}

pub fn collapse(cache: &Rc<RefCell<Cache>>, c: &mut Cache, key: &[u8]) -> Collapse {
    // A finished fetch whose guard could not take itself out of the map (the cache was
    // borrowed when it let go) is no fetch to wait for: this request takes its place.
    if let Some(p) = c.pending.get(key).filter(|p| !p.done.get()) {
        return Collapse::Wait(p.clone());
    }
    let pending = Rc::new(Pending::default());
    c.pending.insert(key.into(), pending.clone());
    Collapse::Fetch(LockGuard {
        cache: cache.clone(),
        key: key.into(),
        pending,
        released: Cell::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(cache: &Rc<RefCell<Cache>>) -> Collapse {
        collapse(cache, &mut cache.borrow_mut(), b"k")
    }

    #[test]
    fn one_fetch_at_a_time_and_the_next_after_it() {
        let cache = Rc::new(RefCell::new(Cache::new(crate::cache::test_zone(1 << 20))));
        let Collapse::Fetch(guard) = fetch(&cache) else {
            panic!("the first miss fetches");
        };
        let Collapse::Wait(pending) = fetch(&cache) else {
            panic!("the second waits");
        };
        assert!(!pending.done.get());
        drop(guard);
        assert!(pending.done.get(), "the drop lets the waiter go");
        assert!(matches!(fetch(&cache), Collapse::Fetch(_)));
    }

    /// A guard let go while the cache is borrowed cannot take its key out of the map; the
    /// key must not stay locked for good.
    #[test]
    fn a_fetch_released_under_a_borrow_does_not_lock_its_key_for_good() {
        let cache = Rc::new(RefCell::new(Cache::new(crate::cache::test_zone(1 << 20))));
        let Collapse::Fetch(guard) = fetch(&cache) else {
            panic!("the first miss fetches");
        };
        {
            let _held = cache.borrow_mut();
            guard.release();
        }
        assert!(matches!(fetch(&cache), Collapse::Fetch(_)));
    }
}
