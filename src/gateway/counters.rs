//! Per-route, per-core filter counters: plain `Cell`s on the worker, published on the
//! worker's tick for the admin endpoint (`telemetry`), so counting costs no atomic.

use std::cell::Cell;

/// Why a filter answered instead of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No credential at all (401).
    AuthMissing,
    /// A credential that is wrong, expired or tampered with (401).
    AuthInvalid,
    /// A valid credential that this route does not admit (403).
    Forbidden,
    /// Over the request rate (429).
    RateLimited,
    /// Over the concurrent-request limit (429).
    TooManyInFlight,
    /// A CORS preflight from an origin that is not allowed (403).
    CorsDenied,
    /// A client address the route's `ip_allow` / `ip_deny` rules do not admit (403).
    IpDenied,
}

pub const REJECT_KINDS: [Reject; 7] = [
    Reject::AuthMissing,
    Reject::AuthInvalid,
    Reject::Forbidden,
    Reject::RateLimited,
    Reject::TooManyInFlight,
    Reject::CorsDenied,
    Reject::IpDenied,
];

impl Reject {
    pub fn name(self) -> &'static str {
        match self {
            Reject::AuthMissing => "auth_missing",
            Reject::AuthInvalid => "auth_invalid",
            Reject::Forbidden => "forbidden",
            Reject::RateLimited => "rate_limited",
            Reject::TooManyInFlight => "too_many_in_flight",
            Reject::CorsDenied => "cors_denied",
            Reject::IpDenied => "ip_denied",
        }
    }
}

#[derive(Default, Debug)]
pub struct FilterCounters {
    /// Requests that passed every filter of the route.
    pub allowed: Cell<u64>,
    rejected: [Cell<u64>; REJECT_KINDS.len()],
    /// CORS preflights answered locally.
    pub preflights: Cell<u64>,
    /// Keys the shared rate-limit table could not place (the request was let through).
    pub rate_table_full: Cell<u64>,
    /// Aggregated responses sent, and parts that failed or timed out.
    pub aggregated: Cell<u64>,
    pub part_errors: Cell<u64>,
    pub part_timeouts: Cell<u64>,
}

pub use crate::telemetry::bump;

impl FilterCounters {
    pub fn reject(&self, why: Reject) {
        bump(&self.rejected[why as usize]);
    }

    pub fn rejected(&self, why: Reject) -> u64 {
        self.rejected[why as usize].get()
    }

    /// (name, value) pairs for a metrics scrape.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![("allowed", self.allowed.get())];
        for r in REJECT_KINDS {
            v.push((r.name(), self.rejected(r)));
        }
        v.extend([
            ("cors_preflight", self.preflights.get()),
            ("rate_table_full", self.rate_table_full.get()),
            ("aggregated", self.aggregated.get()),
            ("aggregate_part_errors", self.part_errors.get()),
            ("aggregate_part_timeouts", self.part_timeouts.get()),
        ]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let c = FilterCounters::default();
        c.reject(Reject::RateLimited);
        c.reject(Reject::RateLimited);
        bump(&c.allowed);
        assert_eq!(c.rejected(Reject::RateLimited), 2);
        assert_eq!(c.rejected(Reject::AuthMissing), 0);
        let s = c.snapshot();
        assert!(s.contains(&("rate_limited", 2)) && s.contains(&("allowed", 1)));
    }
}
