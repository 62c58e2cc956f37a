//! Prefetch on wake-up: when an I/O completion wakes a connection's task, the memory its poll
//! will read is requested from the cache hierarchy right then, while monoio goes on through
//! the rest of the batch: the task with the connection's future, the exchange's frame, the
//! bytes the completed read brought, and both sockets' shared descriptors.
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
//! task and whatever the task noted in its `Slots` while it last ran (`record_frame`,
//! `reading_into`, `client_socket`, `upstream_socket`). The slots sit in the cache line of
//! monoio's task header, which a wake-up reads anyway. Nothing per request is allocated, and
//! the task grows by four pointers.

use crate::hint::prefetch;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// Lines of the task prefetched: monoio's header and the connection's future (512 bytes).
const TASK_LINES: usize = 8;
/// Lines of a read's target prefetched: where the kernel copied what it received, which the
/// poll parses first (a request or response head; 128 bytes hold a short one).
const READ_LINES: usize = 2;

/// The vtable of the tasks this wraps (monoio's, for `PrefetchOnWake<serve_client>`), seen at
/// their first poll. One future type is wrapped, so there is one; a poll under any other
/// vtable passes its waker through unchanged.
static TASK_VTABLE: AtomicPtr<RawWakerVTable> = AtomicPtr::new(ptr::null_mut());
/// Where `PrefetchOnWake::slots` sits from the start of the task, for the same tasks.
static SLOTS_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A connection's future with the slots its wake-up reads. `repr(C)`: the slots first, so
/// their offset from the task does not depend on `F`'s layout.
#[repr(C)]
pub struct PrefetchOnWake<F> {
    slots: Slots,
    fut: F,
}

/// What a wake-up prefetches besides the task; null when nothing is noted. A slot may outlive
/// what it names (a frame back in the pool, a read that ended, a socket closed): a prefetch
/// never faults, so at worst it is wasted, which is cheaper than a store to clear it.
#[repr(C)]
struct Slots {
    /// The frame now running.
    frame: Cell<*const u8>,
    /// Where the last read submitted puts its bytes.
    read: Cell<*const u8>,
    /// The client socket's shared descriptor (see `shared_fd`).
    client: Cell<*const u8>,
    /// The shared descriptor of the upstream connection in use.
    upstream: Cell<*const u8>,
}

impl<F> PrefetchOnWake<F> {
    pub fn new(fut: F) -> Self {
        Self {
            slots: Slots {
                frame: Cell::new(ptr::null()),
                read: Cell::new(ptr::null()),
                client: Cell::new(ptr::null()),
                upstream: Cell::new(ptr::null()),
            },
            fut,
        }
    }
}

thread_local! {
    /// The slots of the wrapped task being polled on this thread, or null: where the notes
    /// below go, without a waker to be handed down to them.
    static POLLING: Cell<*const Slots> = const { Cell::new(ptr::null()) };
}

impl<F: Future> Future for PrefetchOnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned (never moved out of `self`). `slots` is only
        // used through shared access, as Cells: by the notes during this poll (through
        // `POLLING`), and by a wake-up between polls (monoio handles completions outside any
        // task's poll).
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        let task = cx.waker();
        let vtable = ptr::from_ref(task.vtable()).cast_mut();
        let at = (ptr::from_ref(&this.slots) as usize).wrapping_sub(task.data() as usize);
        if TASK_VTABLE.load(Relaxed).is_null() {
            SLOTS_AT.store(at, Relaxed);
            TASK_VTABLE.store(vtable, Relaxed);
        }
        if TASK_VTABLE.load(Relaxed) != vtable || SLOTS_AT.load(Relaxed) != at {
            // Not the layout the wake-up assumes (a second wrapped type, or a runtime whose
            // waker does not point at the task): no prefetch, nothing else changes.
            return fut.poll(cx);
        }
        // SAFETY: same data pointer as the task's own waker, and `VTABLE` delegates every
        // operation to that waker's vtable (checked just above to be `TASK_VTABLE`). Not
        // dropped: like `cx`'s waker, it is borrowed for this poll and owns no reference.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(task.data(), &VTABLE)) });
        let _polling = Polling::enter(&this.slots);
        fut.poll(&mut Context::from_waker(&waker))
    }
}

/// `POLLING` for the length of one poll: restored when dropped, so that not even an unwinding
/// poll leaves it pointing at a task that may be gone.
struct Polling(*const Slots);

impl Polling {
    #[inline]
    fn enter(slots: &Slots) -> Self {
        Self(POLLING.replace(ptr::from_ref(slots)))
    }
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        POLLING.set(self.0);
    }
}

/// Applies `note` to the slots of the wrapped task being polled; nothing outside one.
#[inline]
fn note(note: impl FnOnce(&Slots)) {
    let slots = POLLING.get();
    if !slots.is_null() {
        // SAFETY: set by `PrefetchOnWake::poll` to its own slots for the length of the poll
        // this call is made in, and reset after it; the task is alive and pinned meanwhile.
        note(unsafe { &*slots });
    }
}

/// Records the frame now running (null when none), so that the task's wake-ups prefetch it.
#[inline]
pub fn record_frame(frame: *const u8) {
    note(|s| s.frame.set(frame));
}

/// Notes where the read about to be submitted puts its bytes: the kernel copies them in
/// during the batch, long enough before the poll at 1,000 connections for them to have left
/// the core's caches.
#[inline]
pub fn reading_into(target: *const u8) {
    note(|s| s.read.set(target));
}

/// Notes the client socket, whose shared descriptor every operation on it counts up and down.
#[inline]
pub fn client_socket(stream: &TcpStream) {
    note(|s| s.client.set(shared_fd(stream)));
}

/// Notes the upstream connection an exchange has just checked out, as `client_socket`.
#[inline]
pub fn upstream_socket(stream: &TcpStream) {
    note(|s| s.upstream.set(shared_fd(stream)));
}

/// Where a socket's shared descriptor lives: monoio's `SharedFd`, an `Rc` each operation
/// clones and drops, one heap line per socket that would otherwise stall the poll twice.
/// monoio 0.2.4's `TcpStream` is that `Rc` followed by cached addresses; the first word is the
/// pointer (`the_first_word_of_a_stream_is_its_shared_descriptor` checks it, the size below
/// notices a different monoio). Only ever used as a prefetch address, so were it wrong the
/// prefetch would be wasted, not harmful.
#[inline]
fn shared_fd(stream: &TcpStream) -> *const u8 {
    const {
        assert!(
            std::mem::size_of::<TcpStream>() == 80,
            "monoio's TcpStream changed: check `shared_fd`"
        )
    };
    // SAFETY: a read of the stream's first, pointer-sized and aligned word (an initialised
    // field in monoio 0.2.4, see above).
    unsafe { ptr::read(ptr::from_ref(stream).cast::<*const u8>()) }
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

/// The slots of the task at `data`.
///
/// SAFETY (callers): `data` comes from a prefetching waker, so its task's slots are
/// `SLOTS_AT` bytes into it (checked in `poll`), and the task is alive for `'a` (the waker
/// holds a reference). They are Cells, written and read only on the task's thread: monoio,
/// built without its `sync` feature as here, refuses to wake a task from another thread.
unsafe fn task_slots<'a>(data: *const ()) -> &'a Slots {
    &*data
        .cast::<u8>()
        .add(SLOTS_AT.load(Relaxed))
        .cast::<Slots>()
}

/// SAFETY (callers): as `task_waker` and `task_slots`.
unsafe fn prefetch_task(data: *const ()) {
    prefetch(data.cast::<u8>(), TASK_LINES);
    let slots = task_slots(data);
    let frame = slots.frame.get();
    if !frame.is_null() {
        prefetch(frame, super::frame::BLOCK_LINES);
    }
    let read = slots.read.get();
    if !read.is_null() {
        prefetch(read, READ_LINES);
    }
    for fd in [slots.client.get(), slots.upstream.get()] {
        if !fd.is_null() {
            prefetch(fd, 1);
        }
    }
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
        /// The client and upstream descriptors in the slots, when the future had sockets.
        sockets: Cell<Option<(*const u8, *const u8)>>,
        kept: RefCell<Option<Waker>>,
    }

    /// The slots a wake-up through `waker` reads, when it is a prefetching one.
    fn slots_of(waker: &Waker) -> Option<&Slots> {
        // SAFETY: a prefetching waker's, borrowed for as long as `waker` is.
        ptr::eq(waker.vtable(), &VTABLE).then(|| unsafe { task_slots(waker.data()) })
    }

    /// Pending until `ready` is set, keeping a clone of its waker as monoio's operations do,
    /// and noting a frame and a read target as `Frame::poll` and `ConnBuf::fill` do, and its
    /// sockets (client, upstream) as `serve_client` and the exchange do.
    ///
    /// The only future type these tests wrap: the statics are claimed by the first wrapped
    /// type to be polled (`TASK_VTABLE`), and the tests run in any order.
    struct Waits {
        ready: Rc<Cell<bool>>,
        seen: Rc<Seen>,
        sockets: Option<(TcpStream, TcpStream)>,
    }

    impl Future for Waits {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let frame = ptr::from_ref(&self.seen).cast::<u8>();
            let target = ptr::from_ref(&self.ready).cast::<u8>();
            record_frame(frame);
            reading_into(target);
            if let Some((client, upstream)) = &self.sockets {
                client_socket(client);
                upstream_socket(upstream);
                self.seen
                    .sockets
                    .set(slots_of(cx.waker()).map(|s| (s.client.get(), s.upstream.get())));
            }
            self.seen
                .prefetching
                .set(ptr::eq(cx.waker().vtable(), &VTABLE));
            self.seen.recorded.set(
                slots_of(cx.waker())
                    .is_some_and(|s| s.frame.get() == frame && s.read.get() == target),
            );
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
                sockets: None,
            }));
            // Tasks run in spawn order: this one after `waits` has been polled once.
            let (r, s) = (ready.clone(), seen.clone());
            monoio::spawn(async move {
                assert!(s.prefetching.get(), "polled without the prefetching waker");
                assert!(
                    s.recorded.get(),
                    "the frame and read target were not noted in the task's slots"
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
            assert!(
                POLLING.get().is_null(),
                "a wrapped poll left its slots as the thread's notes target"
            );
        });
    }

    #[test]
    fn outside_a_wrapped_task_the_waker_is_left_alone() {
        run_as_task(async {
            let seen = Rc::new(Seen::default());
            let waits = Waits {
                ready: Rc::new(Cell::new(true)),
                seen: seen.clone(),
                sockets: None,
            };
            assert_eq!(waits.await, 7);
            assert!(!seen.prefetching.get());
            assert!(!seen.recorded.get());
            assert!(POLLING.get().is_null());
        });
    }

    #[test]
    fn a_wrapped_task_notes_its_sockets_shared_descriptors() {
        run_as_task(async {
            let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = TcpStream::connect_addr(l.local_addr().unwrap())
                .await
                .unwrap();
            let (upstream, _) = l.accept().await.unwrap();
            let (want_client, want_upstream) = (shared_fd(&client), shared_fd(&upstream));
            assert_ne!(want_client, want_upstream);
            let seen = Rc::new(Seen::default());
            let waits = PrefetchOnWake::new(Waits {
                ready: Rc::new(Cell::new(true)),
                seen: seen.clone(),
                sockets: Some((client, upstream)),
            });
            assert_eq!(monoio::spawn(waits).await, 7);
            assert!(
                seen.prefetching.get(),
                "polled without the prefetching waker"
            );
            assert_eq!(seen.sockets.get(), Some((want_client, want_upstream)));
        });
    }

    #[test]
    fn the_first_word_of_a_stream_is_its_shared_descriptor() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            use monoio::io::AsyncReadRent;
            let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut c = TcpStream::connect_addr(l.local_addr().unwrap())
                .await
                .unwrap();
            let rc = shared_fd(&c).cast::<usize>();
            assert!(
                !rc.is_null() && rc.is_aligned() && rc as usize > 4096,
                "not a heap pointer: {rc:?}"
            );
            // An Rc's block starts with its strong and weak counts (std's `RcBox` is
            // `repr(C)`). SAFETY: a live Rc block, as the asserts show; read only.
            let counts = || unsafe { (*rc, *rc.add(1)) };
            assert_eq!(counts(), (1, 1), "the stream alone holds it");
            // An operation holds a clone of the descriptor while it exists.
            let read = c.read(vec![0u8; 16]);
            assert_eq!(counts(), (2, 1), "a read holds a second reference");
            drop(read);
            assert_eq!(counts(), (1, 1));
        });
    }
}
