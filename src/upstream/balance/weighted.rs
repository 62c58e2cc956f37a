//! Smooth weighted round-robin, nginx's algorithm: every pick adds each eligible server's
//! weight to its running score, takes the highest, and subtracts the total from the winner.
//! Heavier servers are picked more often but never in long bursts.

use super::{Balancer, ServerState};
use std::cell::Cell;

pub struct WeightedRoundRobin {
    current: Vec<Cell<i64>>,
}

impl WeightedRoundRobin {
    pub fn new(servers: &[ServerState]) -> Self {
        Self {
            current: servers.iter().map(|_| Cell::new(0)).collect(),
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        _hash: u64,
    ) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, s) in servers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = s.effective_weight() as i64;
            let c = self.current[i].get() + w;
            self.current[i].set(c);
            total += w;
            if best.is_none_or(|b| c > self.current[b].get()) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b].set(self.current[b].get() - total);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;

    #[test]
    fn nginx_sequence() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
        let s = servers(&[5, 1, 1]);
        let w = WeightedRoundRobin::new(&s);
        let seq: Vec<_> = (0..7).map(|_| w.pick(&s, &|_| true, 0).unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights() {
        let s = servers(&[1, 2, 3]);
        let w = WeightedRoundRobin::new(&s);
        let mut n = [0; 3];
        for _ in 0..600 {
            n[w.pick(&s, &|_| true, 0).unwrap()] += 1;
        }
        assert_eq!(n, [100, 200, 300]);
    }
}
