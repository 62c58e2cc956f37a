//! Load-balancing algorithms behind one small trait. Each worker owns its balancer state, so
//! picking a server takes no lock and no atomic.

mod round_robin;

pub use round_robin::RoundRobin;

use crate::config::Balance;

/// Chooses a server index in `0..count`. `eligible(i)` says whether server `i` may take the
/// request now (health, drain, limits); a balancer must not return an ineligible index.
pub trait Balancer {
    fn pick(&self, count: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

pub fn build(kind: Balance, _weights: &[u32]) -> Box<dyn Balancer> {
    match kind {
        Balance::RoundRobin => Box::new(RoundRobin::new()),
    }
}
