//! A one-shot, single-thread stop signal: the worker's control task fires it and every accept
//! loop waiting on it wakes, so listeners close at once instead of at the next connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct StopSignal {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
}

impl StopSignal {
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    /// A future that completes once `fire` was called.
    pub fn wait(self: &Rc<Self>) -> StopWait {
        let mut waiters = self.waiters.borrow_mut();
        waiters.push(None);
        StopWait {
            signal: self.clone(),
            slot: waiters.len() - 1,
        }
    }
}

pub struct StopWait {
    signal: Rc<StopSignal>,
    slot: usize,
}

impl Future for StopWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        // One slot per waiter: polling again replaces the waker instead of piling up clones.
        let mut waiters = self.signal.waiters.borrow_mut();
        match &mut waiters[self.slot] {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
