//! Power of two choices: sample two eligible servers at random and take the less loaded.
//! `P2c` compares in-flight requests; `P2cEwma` compares peak-EWMA latency times
//! (in-flight + 1), Linkerd's and Finagle's cost, so a slow server sheds load even while its
//! queue is short. Both read only this worker's counters.

use super::random::{random_eligible, Rng};
use super::{Balancer, ServerState};

fn two_choices(
    rng: &Rng,
    servers: &[ServerState],
    eligible: &dyn Fn(usize) -> bool,
    cost: impl Fn(&ServerState) -> f64,
) -> Option<usize> {
    let a = random_eligible(rng, servers.len(), eligible)?;
    let b = random_eligible(rng, servers.len(), &|i| i != a && eligible(i));
    let Some(b) = b else { return Some(a) };
    let (ca, cb) = (cost(&servers[a]), cost(&servers[b]));
    Some(if cb < ca { b } else { a })
}

#[derive(Default)]
pub struct P2c {
    rng: Rng,
}

impl P2c {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for P2c {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        _hash: u64,
    ) -> Option<usize> {
        two_choices(&self.rng, servers, eligible, |s| {
            s.in_flight.get() as f64 / s.effective_weight().max(1) as f64
        })
    }
}

#[derive(Default)]
pub struct P2cEwma {
    rng: Rng,
}

impl P2cEwma {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for P2cEwma {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        _hash: u64,
    ) -> Option<usize> {
        two_choices(&self.rng, servers, eligible, |s| {
            // A server with no sample yet costs like a fast one, so it gets measured.
            let latency = s.latency.current_ns().max(1.0);
            latency * (s.in_flight.get() as f64 + 1.0) / s.effective_weight().max(1) as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;
    use std::time::Duration;

    #[test]
    fn p2c_avoids_loaded_server() {
        let s = servers(&[1, 1]);
        s[0].in_flight.set(10);
        let p = P2c::new();
        for _ in 0..50 {
            assert_eq!(p.pick(&s, &|_| true, 0), Some(1));
        }
    }

    #[test]
    fn ewma_avoids_slow_server() {
        let s = servers(&[1, 1, 1]);
        for _ in 0..5 {
            s[0].latency.observe(Duration::from_millis(200));
            s[1].latency.observe(Duration::from_millis(2));
            s[2].latency.observe(Duration::from_millis(2));
        }
        let p = P2cEwma::new();
        let mut n = [0; 3];
        for _ in 0..300 {
            n[p.pick(&s, &|_| true, 0).unwrap()] += 1;
        }
        // The slow server only wins when both samples land on it, which p2c never does.
        assert_eq!(n[0], 0, "{n:?}");
    }
}
