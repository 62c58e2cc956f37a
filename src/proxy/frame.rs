//! Heap frames for the per-request exchange future, recycled per worker. The exchange is kept
//! off the connection's own future (an idle keep-alive connection should not carry it), which
//! used to cost a `Box` allocation and free per request; a worker reuses the same few blocks.

use super::spares::Spares;
use std::alloc::Layout;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Blocks kept for reuse: one per exchange of a 1,000-connection burst (1.6 KB each); past
/// this many, frames are freed at once, and the surplus below it is trimmed over time.
const KEEP: usize = 1024;

/// A worker's free blocks, all of one layout (the first one asked for; the exchange future's).
#[derive(Default)]
pub struct FramePool {
    free: Spares<NonNull<u8>, KEEP>,
    layout: std::cell::Cell<Option<Layout>>,
}

impl FramePool {
    /// Moves `fut` into a pooled block. The frame is a future itself: await it.
    pub fn frame<F: Future>(&self, fut: F) -> Frame<'_, F> {
        let layout = Layout::new::<F>();
        let pooled = match self.layout.get() {
            None => {
                self.layout.set(Some(layout));
                true
            }
            Some(l) => l == layout,
        };
        let block = if pooled { self.free.take() } else { None };
        let ptr = match block {
            Some(p) => p.cast::<F>(),
            None => allocate::<F>(),
        };
        // SAFETY: `ptr` is valid for writes of an `F` (a block of `F`'s layout, or a dangling
        // aligned pointer when `F` is zero-sized) and holds no live value.
        unsafe { ptr.as_ptr().write(fut) };
        Frame {
            ptr,
            pool: self,
            pooled,
        }
    }

    fn give(&self, block: NonNull<u8>, layout: Layout) {
        if let Some(block) = self.free.give(block) {
            // SAFETY: allocated by `allocate` with this layout, and no longer used.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }

    /// Frees up to `max` blocks that no exchange drew on since the last trim.
    pub fn trim(&self, max: usize) {
        if let Some(layout) = self.layout.get() {
            self.free.trim(max, |block| {
                // SAFETY: every pooled block was allocated with `layout` and holds no value.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) }
            });
        }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        if let Some(layout) = self.layout.get() {
            for block in self.free.drain_all() {
                // SAFETY: every pooled block was allocated with `layout` and holds no value.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

fn allocate<F>() -> NonNull<F> {
    let layout = Layout::new::<F>();
    if layout.size() == 0 {
        return NonNull::dangling();
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    match NonNull::new(p.cast::<F>()) {
        Some(p) => p,
        None => std::alloc::handle_alloc_error(layout),
    }
}

/// A future living in a pooled block; never moved once written there (so it is pinned), and
/// dropped in place before its block is reused.
pub struct Frame<'p, F: Future> {
    ptr: NonNull<F>,
    pool: &'p FramePool,
    /// The block has the pool's layout and goes back to it; otherwise it is freed.
    pooled: bool,
}

impl<F: Future> Future for Frame<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the value at `ptr` is initialised until `drop`, and it is never moved: only
        // this pinned access reaches it.
        let fut = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        fut.poll(cx)
    }
}

impl<F: Future> Drop for Frame<'_, F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the value was written in `frame` and is dropped exactly once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() == 0 {
            return;
        }
        let block = self.ptr.cast::<u8>();
        if self.pooled {
            self.pool.give(block, layout);
        } else {
            // SAFETY: allocated by `allocate::<F>` with this layout; the value is gone.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Counts drops, to show every value is dropped exactly once.
    struct Tracked(Rc<std::cell::Cell<usize>>, [u8; 300]);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(f)
    }

    #[test]
    fn blocks_are_reused_and_values_dropped_once() {
        let pool = FramePool::default();
        let drops = Rc::new(std::cell::Cell::new(0));
        let mut seen = Vec::new();
        for i in 0..5u8 {
            let t = Tracked(drops.clone(), [i; 300]);
            let f = pool.frame(async move {
                monoio::time::sleep(std::time::Duration::ZERO).await;
                t.1[299]
            });
            seen.push(f.ptr.cast::<u8>());
            assert_eq!(block_on(f), i);
        }
        assert_eq!(drops.get(), 5);
        // One block served every request.
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(pool.free.len(), 1);
    }

    #[test]
    fn an_abandoned_frame_drops_its_future_and_returns_the_block() {
        let pool = FramePool::default();
        let drops = Rc::new(std::cell::Cell::new(0));
        let t = Tracked(drops.clone(), [7; 300]);
        let f = pool.frame(async move {
            std::future::pending::<()>().await;
            drop(t);
        });
        drop(f);
        assert_eq!(drops.get(), 1);
        assert_eq!(pool.free.len(), 1);
        // A future of another layout is not pooled: allocated and freed on its own.
        let g = pool.frame(async { 1u64 });
        assert!(!g.pooled);
        assert_eq!(block_on(g), 1);
        assert_eq!(pool.free.len(), 1);
    }
}
