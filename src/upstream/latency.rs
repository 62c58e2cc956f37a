//! Peak-EWMA of response latency per server (per core): a slower sample is taken at once, a
//! faster one decays in with a 10 s time constant, so a server that turns slow is avoided
//! immediately and trusted again gradually.

use std::cell::Cell;
use std::time::{Duration, Instant};

const TAU_NS: f64 = 10e9;

pub struct PeakEwma {
    value_ns: Cell<f64>,
    stamp: Cell<Option<Instant>>,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            value_ns: Cell::new(0.0),
            stamp: Cell::new(None),
        }
    }
}

impl PeakEwma {
    pub fn observe(&self, rtt: Duration) {
        let now = Instant::now();
        let rtt = rtt.as_nanos() as f64;
        let prev = self.value_ns.get();
        let next = match self.stamp.get() {
            Some(t) if rtt < prev => {
                let elapsed = now.duration_since(t).as_nanos() as f64;
                let w = (-elapsed / TAU_NS).exp();
                prev * w + rtt * (1.0 - w)
            }
            _ => rtt,
        };
        self.value_ns.set(next);
        self.stamp.set(Some(now));
    }

    /// A failure counts as a very slow answer, so the server is avoided for a while.
    pub fn penalize(&self, penalty: Duration) {
        self.value_ns
            .set(self.value_ns.get().max(penalty.as_nanos() as f64));
        self.stamp.set(Some(Instant::now()));
    }

    /// Whether any latency was observed yet.
    pub fn sampled(&self) -> bool {
        self.stamp.get().is_some()
    }

    pub fn current_ns(&self) -> f64 {
        self.current_ns_at(Instant::now())
    }

    /// The estimate at `now`, decayed by the time since the last sample or penalty: a server
    /// that gets no traffic (because it looked slow or failed) is tried again eventually
    /// instead of being starved for good by its last bad figure. A pick passes one `now` for
    /// all servers, so it reads the clock once.
    pub fn current_ns_at(&self, now: Instant) -> f64 {
        match self.stamp.get() {
            Some(t) => {
                let elapsed = now.saturating_duration_since(t).as_nanos() as f64;
                self.value_ns.get() * (-elapsed / TAU_NS).exp()
            }
            None => self.value_ns.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_decays_while_the_server_gets_no_samples() {
        let e = PeakEwma::default();
        e.penalize(Duration::from_secs(10));
        assert!(e.current_ns() > 9.9e9);
        // Thirty seconds (three time constants) without a sample.
        e.stamp
            .set(Instant::now().checked_sub(Duration::from_secs(30)));
        let v = e.current_ns();
        assert!(v < 10e9 * (-2.9f64).exp() && v > 0.0, "{v}");
    }
}
