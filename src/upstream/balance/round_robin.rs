//! Plain round-robin over the eligible servers, with a per-core cursor.

use super::{Balancer, ServerState};
use std::cell::Cell;

#[derive(Default)]
pub struct RoundRobin {
    next: Cell<usize>,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        _hash: u64,
    ) -> Option<usize> {
        let count = servers.len();
        // Wrapped by compare, not `%`: a division per candidate was most of a pick's cost.
        // The cursor may also be past the end after a reload shrank the server list.
        let mut i = self.next.get();
        for _ in 0..count {
            if i >= count {
                i = 0;
            }
            if eligible(i) {
                self.next.set(i + 1);
                return Some(i);
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;

    #[test]
    fn cycles_and_skips() {
        let s = servers(&[1, 1, 1]);
        let rr = RoundRobin::new();
        let seq: Vec<_> = (0..6).map(|_| rr.pick(&s, &|_| true, 0).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        let seq: Vec<_> = (0..4)
            .map(|_| rr.pick(&s, &|i| i != 1, 0).unwrap())
            .collect();
        assert_eq!(seq, [0, 2, 0, 2]);
        assert_eq!(rr.pick(&s, &|_| false, 0), None);
    }
}
