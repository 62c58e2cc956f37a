//! A worker's free list of reusable blocks (request buffers, exchange frames): last in, first
//! out so the block reused is the one still in cache, capped, and trimmed a few at a time to
//! what recent traffic drew on, so a burst's surplus goes back without a free-all stall.
//! `SpareBufs` is the list for byte buffers, which also keeps the capacity it holds in a budget.

use std::cell::{Cell, RefCell};

pub struct Spares<T, const CAP: usize> {
    items: RefCell<Vec<T>>,
    /// The fewest items held since the last trim: that many sat unused the whole period.
    low: Cell<usize>,
}

impl<T, const CAP: usize> Default for Spares<T, CAP> {
    fn default() -> Self {
        Self {
            items: RefCell::new(Vec::new()),
            low: Cell::new(0),
        }
    }
}

impl<T, const CAP: usize> Spares<T, CAP> {
    /// The item given last, if any. `warm` is shown the item the next `take` will return, so
    /// that its memory can be prefetched now: at high concurrency a block last used a whole
    /// round of connections ago has left the caches, and the next request would stall writing
    /// into it.
    #[inline]
    pub fn take(&self, warm: impl FnOnce(&T)) -> Option<T> {
        let mut items = self.items.borrow_mut();
        let item = items.pop();
        if items.len() < self.low.get() {
            self.low.set(items.len());
        }
        if let Some(next) = items.last() {
            warm(next);
        }
        item
    }

    /// Keeps `item` for reuse, or hands it back when the list is full.
    #[inline]
    pub fn give(&self, item: T) -> Option<T> {
        let mut items = self.items.borrow_mut();
        if items.len() < CAP {
            items.push(item);
            None
        } else {
            Some(item)
        }
    }

    /// Releases up to `max` of the items nobody drew since the last call, coldest first.
    pub fn trim(&self, max: usize, mut release: impl FnMut(T)) {
        let mut items = self.items.borrow_mut();
        let n = self.low.get().min(max).min(items.len());
        for item in items.drain(..n) {
            release(item);
        }
        self.low.set(items.len());
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.borrow().len()
    }

    /// Empties the list (the owner frees what needs freeing by hand).
    pub fn drain_all(&mut self) -> std::vec::Drain<'_, T> {
        self.low.set(0);
        self.items.get_mut().drain(..)
    }
}

/// The free list for byte buffers. Unlike frames they differ in size (4 KiB heads to 65 KiB
/// streaming chunks), so the count alone does not bound the memory: the capacity held is kept
/// at most `MAX_BYTES` as well, and every way in or out of the list accounts for it.
pub struct SpareBufs<const CAP: usize, const MAX_BYTES: usize> {
    list: Spares<Vec<u8>, CAP>,
    bytes: Cell<usize>,
}

impl<const CAP: usize, const MAX_BYTES: usize> Default for SpareBufs<CAP, MAX_BYTES> {
    fn default() -> Self {
        Self {
            list: Spares::default(),
            bytes: Cell::new(0),
        }
    }
}

impl<const CAP: usize, const MAX_BYTES: usize> SpareBufs<CAP, MAX_BYTES> {
    /// As `Spares::take`.
    #[inline]
    pub fn take(&self, warm: impl FnOnce(&Vec<u8>)) -> Option<Vec<u8>> {
        let buf = self.list.take(warm)?;
        self.bytes.set(self.bytes.get() - buf.capacity());
        Some(buf)
    }

    /// Keeps `buf` for reuse, or hands it back when the list is full or it would take the
    /// held capacity past the budget.
    #[inline]
    pub fn give(&self, buf: Vec<u8>) -> Option<Vec<u8>> {
        let held = self.bytes.get() + buf.capacity();
        if held > MAX_BYTES {
            return Some(buf);
        }
        let refused = self.list.give(buf);
        if refused.is_none() {
            self.bytes.set(held);
        }
        refused
    }

    /// As `Spares::trim`; the released buffers are freed.
    pub fn trim(&self, max: usize) {
        self.list
            .trim(max, |buf| self.bytes.set(self.bytes.get() - buf.capacity()));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The capacity held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_last_given_and_caps() {
        let s: Spares<u32, 2> = Spares::default();
        assert_eq!(s.give(1), None);
        assert_eq!(s.give(2), None);
        assert_eq!(s.give(3), Some(3), "over the cap the item comes back");
        let mut shown = None;
        assert_eq!(s.take(|next| shown = Some(*next)), Some(2));
        assert_eq!(shown, Some(1), "the next take's item is shown to be warmed");
        assert_eq!(s.take(|_| panic!("nothing is left to warm")), Some(1));
        assert_eq!(s.take(|_| {}), None);
    }

    #[test]
    fn trims_only_what_sat_unused_and_a_few_at_a_time() {
        let s: Spares<u32, 100> = Spares::default();
        for i in 0..10 {
            s.give(i);
        }
        // Nothing was drawn yet in this period's books: the first trim only sets the mark.
        let mut gone = Vec::new();
        s.trim(4, |x| gone.push(x));
        assert!(gone.is_empty());
        // Traffic draws 3 and gives them back: 7 sat unused, at most 4 go, the coldest first.
        let drawn: Vec<_> = (0..3).filter_map(|_| s.take(|_| {})).collect();
        for x in drawn {
            s.give(x);
        }
        s.trim(4, |x| gone.push(x));
        assert_eq!(gone, vec![0, 1, 2, 3]);
        assert_eq!(s.len(), 6);
        // Idle since: the rest of the surplus goes over the next trims.
        s.trim(4, |x| gone.push(x));
        s.trim(4, |x| gone.push(x));
        assert_eq!(s.len(), 0);
    }
}
