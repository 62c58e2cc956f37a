//! GCRA (the generic cell rate algorithm), pure arithmetic on nanoseconds: one "theoretical
//! arrival time" (TAT) per key is the whole state, which is what lets the shared table keep each
//! key in one atomic word and update it with a single compare-and-swap.

/// Rate parameters in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval: one request every `t` ns on average.
    pub t: u64,
    /// Tolerance: how far ahead of now the TAT may run, `t * (burst - 1)`.
    pub tau: u64,
}

/// The outcome of one request against a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the key's new TAT.
    Allow { tat: u64 },
    /// Refused; retry after this many ns.
    Deny { retry_after: u64 },
}

impl Gcra {
    pub fn new(rate: u64, per_ns: u64, burst: u64) -> Self {
        let t = (per_ns / rate.max(1)).max(1);
        Gcra {
            t,
            tau: t.saturating_mul(burst.max(1) - 1),
        }
    }

    /// Decides one request at `now` for a key whose TAT is `tat` (0 for a key never seen).
    #[inline]
    pub fn decide(&self, tat: u64, now: u64) -> Decision {
        let base = tat.max(now);
        let ahead = base - now;
        if ahead > self.tau {
            Decision::Deny {
                retry_after: ahead - self.tau,
            }
        } else {
            Decision::Allow { tat: base + self.t }
        }
    }

    /// Requests still allowed right now after an allowed request left the TAT at `tat`.
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        let ahead = tat.saturating_sub(now);
        (self.tau + self.t).saturating_sub(ahead) / self.t
    }

    /// Requests allowed at once after a quiet spell.
    pub fn burst(&self) -> u64 {
        self.tau / self.t + 1
    }

    /// A TAT at or before now means the key is back to a full burst: it carries no state and
    /// its slot may be given to another key.
    #[inline]
    pub fn is_idle(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn run(g: &Gcra, tat: &mut u64, now: u64) -> bool {
        match g.decide(*tat, now) {
            Decision::Allow { tat: t } => {
                *tat = t;
                true
            }
            Decision::Deny { .. } => false,
        }
    }

    #[test]
    fn burst_then_rate() {
        // 10/s with a burst of 5: five at once, then one every 100 ms.
        let g = Gcra::new(10, S, 5);
        assert_eq!(g.burst(), 5);
        let mut tat = 0;
        let now = 1_000 * S;
        for i in 0..5 {
            assert!(run(&g, &mut tat, now), "request {i}");
            assert_eq!(g.remaining(tat, now), 4 - i);
        }
        assert!(!run(&g, &mut tat, now));
        match g.decide(tat, now) {
            Decision::Deny { retry_after } => assert_eq!(retry_after, S / 10),
            d => panic!("{d:?}"),
        }
        assert!(!run(&g, &mut tat, now + S / 10 - 1));
        assert!(run(&g, &mut tat, now + S / 10));
        assert!(!run(&g, &mut tat, now + S / 10));
    }

    #[test]
    fn long_run_holds_rate() {
        // Over 10 s of requests every 1 ms, a 50/s limit with burst 10 allows 10 + 50*10.
        let g = Gcra::new(50, S, 10);
        let mut tat = 0;
        let start = 5 * S;
        let allowed = (0..10_000)
            .filter(|i| run(&g, &mut tat, start + i * S / 1000))
            .count();
        assert!((509..=511).contains(&allowed), "{allowed}");
    }

    #[test]
    fn idle_keys_are_free() {
        let g = Gcra::new(1, S, 1);
        let mut tat = 0;
        assert!(run(&g, &mut tat, 10 * S));
        assert!(!Gcra::is_idle(tat, 10 * S));
        assert!(Gcra::is_idle(tat, 11 * S));
    }
}
