//! Heap frames for the per-request futures (forwarding, local answers), recycled per worker.
//! They are kept off the connection's own future, which an idle keep-alive connection holds
//! for as long as it is open: that future only needs room for the wait for the next request.

use super::spares::Spares;
use std::alloc::Layout;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Blocks kept for reuse: one per exchange of a 1,000-connection burst; past this many, frames
/// are freed at once, and the surplus below it is trimmed over time.
const KEEP: usize = 1024;

/// Every block's layout: room for the largest future put in a frame (the forwarding exchange,
/// 1,320 bytes at this writing; 1,536 is the mimalloc size class above it). One size for all
/// keeps one free list, and `frame` refuses at compile time a future that would not fit.
const BLOCK: Layout = match Layout::from_size_align(1536, 16) {
    Ok(l) => l,
    Err(_) => panic!("frame block layout"),
};
/// A block's cache lines: what is prefetched of it, whole, before a poll runs in it.
pub const BLOCK_LINES: usize = BLOCK.size().div_ceil(64);

/// A worker's free blocks.
#[derive(Default)]
pub struct FramePool {
    free: Spares<NonNull<u8>, KEEP>,
}

impl FramePool {
    /// Moves `fut` into a pooled block. The frame is a future itself: await it.
    pub fn frame<F: Future>(&self, fut: F) -> Frame<'_, F> {
        const {
            assert!(
                std::mem::size_of::<F>() <= BLOCK.size()
                    && std::mem::align_of::<F>() <= BLOCK.align(),
                "a future put in a frame must fit its block: raise BLOCK"
            )
        };
        // The block after this one is prefetched whole: the next exchange starts in it, and
        // its first poll writes and reads all over it.
        let ptr = self
            .free
            .take(|next| crate::hint::prefetch(next.as_ptr(), BLOCK_LINES))
            .unwrap_or_else(allocate)
            .cast::<F>();
        // SAFETY: `ptr` is a block of `BLOCK`'s layout, which `F` fits (checked above), and
        // holds no live value.
        unsafe { ptr.as_ptr().write(fut) };
        Frame { ptr, pool: self }
    }

    fn give(&self, block: NonNull<u8>) {
        if let Some(block) = self.free.give(block) {
            // SAFETY: allocated by `allocate` with `BLOCK`, and no longer used.
            unsafe { std::alloc::dealloc(block.as_ptr(), BLOCK) };
        }
    }

    /// Frees up to `max` blocks that no exchange drew on since the last trim.
    pub fn trim(&self, max: usize) {
        self.free.trim(max, |block| {
            // SAFETY: every pooled block was allocated with `BLOCK` and holds no value.
            unsafe { std::alloc::dealloc(block.as_ptr(), BLOCK) }
        });
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        for block in self.free.drain_all() {
            // SAFETY: every pooled block was allocated with `BLOCK` and holds no value.
            unsafe { std::alloc::dealloc(block.as_ptr(), BLOCK) };
        }
    }
}

fn allocate() -> NonNull<u8> {
    // SAFETY: `BLOCK` has a non-zero size.
    let p = unsafe { std::alloc::alloc(BLOCK) };
    match NonNull::new(p) {
        Some(p) => p,
        None => std::alloc::handle_alloc_error(BLOCK),
    }
}

/// A future living in a pooled block; never moved once written there (so it is pinned), and
/// dropped in place before its block is reused.
pub struct Frame<'p, F: Future> {
    ptr: NonNull<F>,
    pool: &'p FramePool,
}

impl<F: Future> Future for Frame<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the value at `ptr` is initialised until `drop`, and it is never moved: only
        // this pinned access reaches it.
        let fut = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        // While it runs, the task's wake-ups prefetch this block (proxy/prefetch.rs).
        super::prefetch::record_frame(self.ptr.as_ptr().cast::<u8>());
        let out = fut.poll(cx);
        if out.is_ready() {
            super::prefetch::record_frame(std::ptr::null());
        }
        out
    }
}

impl<F: Future> Drop for Frame<'_, F> {
    fn drop(&mut self) {
        // SAFETY: the value was written in `frame` and is dropped exactly once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        self.pool.give(self.ptr.cast::<u8>());
    }
}

/// One of two futures with the same output, awaited at a single suspension point: the future
/// awaiting it keeps room for one of them, not for each at a point of its own.
pub enum OneOf<A, B> {
    First(A),
    Second(B),
}

impl<A, B> Future for OneOf<A, B>
where
    A: Future + Unpin,
    B: Future<Output = A::Output> + Unpin,
{
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.get_mut() {
            OneOf::First(a) => Pin::new(a).poll(cx),
            OneOf::Second(b) => Pin::new(b).poll(cx),
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

    /// Pending once (waking itself), then ready: a suspension point without a timer, whose
    /// entry is cache-line aligned and so too strictly aligned for a block.
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
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
                YieldOnce(false).await;
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
        let block = f.ptr.cast::<u8>();
        drop(f);
        assert_eq!(drops.get(), 1);
        assert_eq!(pool.free.len(), 1);
        // A future of another type reuses the same block.
        let g = pool.frame(async { 1u64 });
        assert_eq!(g.ptr.cast::<u8>(), block);
        assert_eq!(block_on(g), 1);
        assert_eq!(pool.free.len(), 1);
    }
}
