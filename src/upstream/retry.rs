//! Retry budget per route and worker: each request earns a fraction of a retry token, plus a
//! small steady trickle per second; a retry spends one. During an outage retries therefore
//! add at most `budget_percent` of the traffic instead of multiplying it.

use crate::config::RetryPolicy;
use std::cell::Cell;
use std::time::Instant;

pub struct RetryBudget {
    tokens: Cell<f64>,
    last_refill: Cell<Instant>,
    per_request: f64,
    per_second: f64,
    cap: f64,
}

impl RetryBudget {
    pub fn new(p: &RetryPolicy) -> Self {
        let per_second = p.budget_min_per_second as f64;
        let cap = per_second.max(10.0);
        Self {
            tokens: Cell::new(cap),
            last_refill: Cell::new(Instant::now()),
            per_request: p.budget_percent as f64 / 100.0,
            per_second,
            cap,
        }
    }

    #[inline]
    pub fn on_request(&self) {
        self.tokens
            .set((self.tokens.get() + self.per_request).min(self.cap));
    }

    /// Takes one retry token if there is one.
    pub fn try_spend(&self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_refill.get()).as_secs_f64();
        self.last_refill.set(now);
        let t = (self.tokens.get() + elapsed * self.per_second).min(self.cap);
        if t >= 1.0 {
            self.tokens.set(t - 1.0);
            true
        } else {
            self.tokens.set(t);
            false
        }
    }

    pub fn available(&self) -> bool {
        self.tokens.get() >= 1.0 || self.per_second > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_retries_to_a_share_of_requests() {
        let p = RetryPolicy {
            attempts: 3,
            on_connect: true,
            on_reset: true,
            on_timeout: false,
            on_statuses: vec![],
            budget_percent: 20,
            budget_min_per_second: 0,
        };
        let b = RetryBudget::new(&p);
        // Drain the initial allowance.
        while b.try_spend() {}
        let mut granted = 0;
        for _ in 0..1000 {
            b.on_request();
            if b.try_spend() {
                granted += 1;
            }
        }
        assert!((195..=205).contains(&granted), "{granted}");
    }
}
