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

    pub fn current_ns(&self) -> f64 {
        self.value_ns.get()
    }
}
