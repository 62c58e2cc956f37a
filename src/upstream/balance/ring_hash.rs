//! Consistent hashing on a ketama-style ring: each server owns 160 points per unit of weight,
//! a key goes to the first point at or after its hash. Removing one of N servers moves only
//! the keys it owned (about 1/N); an ineligible owner passes its keys to the next server on
//! the ring, not to a reshuffle.

use super::{stable_hash, Balancer, ServerState};

const POINTS_PER_WEIGHT: usize = 160;

pub struct RingHash {
    /// (point, server index), sorted by point.
    ring: Vec<(u64, usize)>,
}

impl RingHash {
    pub fn new(servers: &[ServerState]) -> Self {
        let mut ring = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            // Points derive from the address, not the index: reordering or removing other
            // servers leaves this server's points where they were.
            let id = s.addr.to_string();
            for p in 0..POINTS_PER_WEIGHT * s.weight as usize {
                ring.push((stable_hash(format!("{id}-{p}").as_bytes()), i));
            }
        }
        ring.sort_unstable();
        Self { ring }
    }
}

impl Balancer for RingHash {
    fn pick(
        &self,
        _servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        hash: u64,
    ) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|(p, _)| *p < hash);
        let n = self.ring.len();
        (0..n)
            .map(|k| self.ring[(start + k) % n].1)
            .find(|i| eligible(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;

    #[test]
    fn stable_and_minimal_disruption() {
        let s4 = servers(&[1, 1, 1, 1]);
        let ring4 = RingHash::new(&s4);
        let keys: Vec<u64> = (0..10_000)
            .map(|k| stable_hash(format!("user-{k}").as_bytes()))
            .collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|h| ring4.pick(&s4, &|_| true, *h).unwrap())
            .collect();
        // Same key, same server.
        assert_eq!(before[7], ring4.pick(&s4, &|_| true, keys[7]).unwrap());
        // Server 3 becomes ineligible: only its keys move.
        let after: Vec<usize> = keys
            .iter()
            .map(|h| ring4.pick(&s4, &|i| i != 3, *h).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned_by_3 = before.iter().filter(|b| **b == 3).count();
        assert_eq!(moved, owned_by_3);
        assert!((1500..3500).contains(&moved), "moved {moved}");
    }
}
