//! Prefetch on wake-up: when an I/O completion wakes a connection's task, the memory its poll
//! will read (the task with the connection's future, and the exchange's frame) is requested
//! from the cache hierarchy right then, while monoio goes on through the rest of the batch.
//!
//! Why: at 1,000 connections the kernel's traffic between two events of one connection evicts
//! that connection's lines, and each poll used to stall on them one dependent load at a time
//! (docs/performance.md). A completion batch holds dozens of wake-ups, so a prefetch issued at
//! the wake-up has the rest of the batch to arrive.
//!
//! How: the connection's task is spawned as `PrefetchOnWake<F>`, which polls `F` with a waker
//! of its own. That waker has the same data pointer as the task's own (monoio's task header,
//! the start of the task's allocation) and delegates clone, wake and drop to the task's own
//! vtable, so reference counting and scheduling are monoio's; its wake first prefetches the
//! task and the frame recorded in `PrefetchOnWake::frame`. A frame records itself there when
//! polled (`record_frame`). Nothing per request is allocated, and the task grows by one
//! pointer.

use std::cell::Cell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// Lines of the task prefetched: monoio's header and the connection's future (512 bytes).
const TASK_LINES: usize = 8;
/// Lines of a frame prefetched: the whole block (`frame::BLOCK`, 1,536 bytes).
const FRAME_LINES: usize = 24;

/// The vtable of the tasks this wraps (monoio's, for `PrefetchOnWake<serve_client>`), seen at
/// their first poll. One future type is wrapped, so there is one; a poll under any other
/// vtable passes its waker through unchanged.
static TASK_VTABLE: AtomicPtr<RawWakerVTable> = AtomicPtr::new(ptr::null_mut());
/// Where `PrefetchOnWake::frame` sits from the start of the task, for the same tasks.
static FRAME_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A connection's future with the slot its wake-up reads. `repr(C)`: the slot first, so its
/// offset from the task does not depend on `F`'s layout.
#[repr(C)]
pub struct PrefetchOnWake<F> {
    frame: Cell<*const u8>,
    fut: F,
}

impl<F> PrefetchOnWake<F> {
    pub fn new(fut: F) -> Self {
        Self {
            frame: Cell::new(ptr::null()),
            fut,
        }
    }
}

impl<F: Future> Future for PrefetchOnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned (never moved out of `self`). `frame` is only
        // used through shared access, as a Cell: by `record_frame` during this poll, and by a
        // wake-up between polls (monoio handles completions outside any task's poll).
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        let task = cx.waker();
        let vtable = ptr::from_ref(task.vtable()).cast_mut();
        let at = (ptr::from_ref(&this.frame) as usize).wrapping_sub(task.data() as usize);
        if TASK_VTABLE.load(Relaxed).is_null() {
            FRAME_AT.store(at, Relaxed);
            TASK_VTABLE.store(vtable, Relaxed);
        }
        if TASK_VTABLE.load(Relaxed) != vtable || FRAME_AT.load(Relaxed) != at {
            // Not the layout the wake-up assumes (a second wrapped type, or a runtime whose
            // waker does not point at the task): no prefetch, nothing else changes.
            return fut.poll(cx);
        }
        // SAFETY: same data pointer as the task's own waker, and `VTABLE` delegates every
        // operation to that waker's vtable (checked just above to be `TASK_VTABLE`). Not
        // dropped: like `cx`'s waker, it is borrowed for this poll and owns no reference.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(task.data(), &VTABLE)) });
        fut.poll(&mut Context::from_waker(&waker))
    }
}

/// Records the frame now running for this task (null when none), so that its wake-ups
/// prefetch it. A no-op under any other waker.
#[inline]
pub fn record_frame(waker: &Waker, frame: *const u8) {
    if let Some(slot) = frame_slot(waker) {
        slot.set(frame);
    }
}

/// The task's frame slot, when `waker` is a prefetching one.
#[inline]
fn frame_slot(waker: &Waker) -> Option<&Cell<*const u8>> {
    if !ptr::eq(waker.vtable(), &VTABLE) {
        return None;
    }
    // SAFETY: a waker with `VTABLE` is only made for a task whose `PrefetchOnWake::frame` is
    // `FRAME_AT` bytes past `data()` (checked in `poll`), and it keeps the task alive. The
    // slot is a Cell, written and read only on the task's thread: monoio, built without its
    // `sync` feature as here, refuses to wake a task from another thread.
    Some(unsafe {
        &*waker
            .data()
            .cast::<u8>()
            .add(FRAME_AT.load(Relaxed))
            .cast::<Cell<*const u8>>()
    })
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The task's own waker for `data`, borrowed.
///
/// SAFETY (callers): `data` comes from a waker made in `PrefetchOnWake::poll`, so
/// `TASK_VTABLE` is its task's vtable.
unsafe fn task_waker(data: *const ()) -> ManuallyDrop<Waker> {
    ManuallyDrop::new(Waker::from_raw(RawWaker::new(
        data,
        &*TASK_VTABLE.load(Relaxed),
    )))
}

unsafe fn clone(data: *const ()) -> RawWaker {
    // The task's clone takes the reference; the copy keeps it, under this vtable.
    let cloned = ManuallyDrop::new((*task_waker(data)).clone());
    RawWaker::new(cloned.data(), &VTABLE)
}

unsafe fn wake(data: *const ()) {
    prefetch_task(data);
    ManuallyDrop::into_inner(task_waker(data)).wake()
}

unsafe fn wake_by_ref(data: *const ()) {
    prefetch_task(data);
    task_waker(data).wake_by_ref()
}

unsafe fn drop_waker(data: *const ()) {
    drop(ManuallyDrop::into_inner(task_waker(data)))
}

/// SAFETY (callers): as `task_waker`; the task is alive (the waker holds a reference).
unsafe fn prefetch_task(data: *const ()) {
    let task = data.cast::<u8>();
    prefetch(task, TASK_LINES);
    let frame = (*task.add(FRAME_AT.load(Relaxed)).cast::<Cell<*const u8>>()).get();
    if !frame.is_null() {
        // A frame recorded by an exchange that has since ended is a pooled block or freed
        // memory: a prefetch never faults, so at worst it is wasted.
        prefetch(frame, FRAME_LINES);
    }
}

#[inline(always)]
fn prefetch(at: *const u8, lines: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What the wrapped future saw at its last poll.
    #[derive(Default)]
    struct Seen {
        prefetching: Cell<bool>,
        recorded: Cell<bool>,
        kept: RefCell<Option<Waker>>,
    }

    /// Pending until `ready` is set, keeping a clone of its waker as monoio's operations do,
    /// and recording a frame as `Frame::poll` does.
    struct Waits {
        ready: Rc<Cell<bool>>,
        seen: Rc<Seen>,
    }

    impl Future for Waits {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let frame = ptr::from_ref(&self.seen).cast::<u8>();
            record_frame(cx.waker(), frame);
            self.seen
                .prefetching
                .set(ptr::eq(cx.waker().vtable(), &VTABLE));
            self.seen
                .recorded
                .set(frame_slot(cx.waker()).is_some_and(|s| s.get() == frame));
            if self.ready.get() {
                return Poll::Ready(7);
            }
            *self.seen.kept.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Runs `f` as a task: `block_on`'s own future is polled again at once when it wakes
    /// itself, before any spawned task.
    fn run_as_task<F: Future + 'static>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async { monoio::spawn(f).await })
    }

    #[test]
    fn a_wrapped_task_is_woken_through_the_prefetching_waker() {
        run_as_task(async {
            let ready = Rc::new(Cell::new(false));
            let seen = Rc::new(Seen::default());
            let waits = monoio::spawn(PrefetchOnWake::new(Waits {
                ready: ready.clone(),
                seen: seen.clone(),
            }));
            // Tasks run in spawn order: this one after `waits` has been polled once.
            let (r, s) = (ready.clone(), seen.clone());
            monoio::spawn(async move {
                assert!(s.prefetching.get(), "polled without the prefetching waker");
                assert!(
                    s.recorded.get(),
                    "the frame was not recorded in the task's slot"
                );
                let waker = s.kept.borrow_mut().take().expect("the task kept its waker");
                // Clones and drops go to the task's own reference count, and a wake through
                // a clone reaches the task.
                drop(waker.clone());
                r.set(true);
                waker.wake();
            })
            .await;
            // Bounded: a wake that did not reach the task fails here instead of hanging.
            let out = monoio::time::timeout(std::time::Duration::from_secs(10), waits).await;
            assert_eq!(out.ok(), Some(7), "the wake did not reach the task");
        });
    }

    #[test]
    fn outside_a_wrapped_task_the_waker_is_left_alone() {
        run_as_task(async {
            let seen = Rc::new(Seen::default());
            let waits = Waits {
                ready: Rc::new(Cell::new(true)),
                seen: seen.clone(),
            };
            assert_eq!(waits.await, 7);
            assert!(!seen.prefetching.get());
            assert!(!seen.recorded.get());
        });
    }
}
