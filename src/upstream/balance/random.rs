//! Uniform random choice among eligible servers, and the small per-core generator that random
//! and power-of-two-choices share (xorshift: no syscall, no lock, good enough for spreading).

use super::{Balancer, ServerState};
use std::cell::Cell;

pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9)
            ^ (&seed_marker as *const _ as u64);
        Self(Cell::new(super::mix(seed) | 1))
    }

    #[inline]
    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x
    }

    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub fn below(&self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

fn seed_marker() {}

#[derive(Default)]
pub struct Random {
    rng: Rng,
}

impl Random {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A random eligible index: a few random probes, then a scan from a random start, so a mostly
/// healthy set costs one probe and a mostly broken one still finds the survivor.
pub fn random_eligible(rng: &Rng, count: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    if count == 0 {
        return None;
    }
    for _ in 0..3 {
        let i = rng.below(count);
        if eligible(i) {
            return Some(i);
        }
    }
    let start = rng.below(count);
    (0..count)
        .map(|k| (start + k) % count)
        .find(|i| eligible(*i))
}

impl Balancer for Random {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        _hash: u64,
    ) -> Option<usize> {
        random_eligible(&self.rng, servers.len(), eligible)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;

    #[test]
    fn spreads_and_respects_eligibility() {
        let s = servers(&[1, 1, 1, 1]);
        let r = Random::new();
        let mut n = [0; 4];
        for _ in 0..4000 {
            n[r.pick(&s, &|i| i != 3, 0).unwrap()] += 1;
        }
        assert_eq!(n[3], 0);
        for c in &n[..3] {
            assert!((1000..1700).contains(c), "{n:?}");
        }
    }
}
