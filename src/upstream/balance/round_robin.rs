//! Plain round-robin over the eligible servers, with a per-core cursor.

use super::Balancer;
use std::cell::Cell;

pub struct RoundRobin {
    next: Cell<usize>,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self { next: Cell::new(0) }
    }
}

impl Default for RoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, count: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = self.next.get();
        for k in 0..count {
            let i = (start + k) % count;
            if eligible(i) {
                self.next.set(i + 1);
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_and_skips() {
        let rr = RoundRobin::new();
        let all = |_: usize| true;
        let seq: Vec<_> = (0..6).map(|_| rr.pick(3, &all).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        let not1 = |i: usize| i != 1;
        let seq: Vec<_> = (0..4).map(|_| rr.pick(3, &not1).unwrap()).collect();
        assert_eq!(seq, [0, 2, 0, 2]);
        assert_eq!(rr.pick(3, &|_| false), None);
    }
}
