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
        // A server with no sample yet is priced at the mean of the measured ones: priced at
        // zero it would take every concurrent request until its first answer, priced high it
        // would never be measured.
        let now = std::time::Instant::now();
        let (sum, n) = servers
            .iter()
            .filter(|s| s.latency.sampled())
            .fold((0.0, 0u32), |(sum, n), s| {
                (sum + s.latency.current_ns_at(now), n + 1)
            });
        let unmeasured = if n == 0 { 1.0 } else { sum / n as f64 };
        two_choices(&self.rng, servers, eligible, |s| {
            let latency = if s.latency.sampled() {
                s.latency.current_ns_at(now)
            } else {
                unmeasured
            };
            latency.max(1.0) * (s.in_flight.get() as f64 + 1.0) / s.effective_weight().max(1) as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;
    use std::time::Duration;

    #[test]
    fn unmeasured_server_is_priced_at_the_mean() {
        let s = servers(&[1, 1, 1]);
        s[0].latency.observe(Duration::from_millis(10));
        s[1].latency.observe(Duration::from_millis(10));
        // The new server already has requests in flight: priced at zero it would still win.
        s[2].in_flight.set(3);
        let p = P2cEwma::new();
        let mut n = [0; 3];
        for _ in 0..300 {
            n[p.pick(&s, &|_| true, 0).unwrap()] += 1;
        }
        assert_eq!(n[2], 0, "{n:?}");
    }

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
