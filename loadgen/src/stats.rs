//! Per-thread counters and latency histograms (nanoseconds), and how threads' figures merge.
//! Each runtime thread owns its own; nothing here is shared on the request path.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this are clamped; far beyond any sane `--timeout`.
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% relative error, the usual choice of wrk2 and HdrHistogram tools.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

/// Failed requests by cause; the status classes count responses that did arrive.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Errors {
    pub connect: u64,
    pub reset: u64,
    pub timeout: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub parse: u64,
}

impl Errors {
    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.parse += o.parse;
    }

    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.status_4xx + self.status_5xx + self.parse
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Reset,
    Timeout,
    Parse,
}

/// Counters for the measured window only (after warmup).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Requests attempted: responses + connect + reset + timeout + parse failures.
    pub requests: u64,
    pub responses: u64,
    pub bytes_read: u64,
    pub errors: Errors,
    /// Open loop: the latest an idle connection sent after the due time (generator lag, ns).
    pub max_lag_ns: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.responses += o.responses;
        self.bytes_read += o.bytes_read;
        self.errors.add(&o.errors);
        self.max_lag_ns = self.max_lag_ns.max(o.max_lag_ns);
    }
}

/// One thread's figures: the current one-second interval and everything before it.
pub struct ThreadStats {
    pub interval: Histogram<u64>,
    pub total: Histogram<u64>,
    pub interval_counts: Counters,
    pub total_counts: Counters,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadStats {
    pub fn new() -> Self {
        Self {
            interval: new_histogram(),
            total: new_histogram(),
            interval_counts: Counters::default(),
            total_counts: Counters::default(),
        }
    }

    #[inline]
    pub fn sent(&mut self, n: u64) {
        self.interval_counts.requests += n;
    }

    #[inline]
    pub fn response(&mut self, latency_ns: u64, status: u16) {
        self.interval.saturating_record(latency_ns.max(1));
        let c = &mut self.interval_counts;
        c.responses += 1;
        match status {
            400..=499 => c.errors.status_4xx += 1,
            500..=599 => c.errors.status_5xx += 1,
            _ => {}
        }
    }

    #[inline]
    pub fn failed(&mut self, kind: Failure, n: u64) {
        let e = &mut self.interval_counts.errors;
        match kind {
            Failure::Connect => e.connect += n,
            Failure::Reset => e.reset += n,
            Failure::Timeout => e.timeout += n,
            Failure::Parse => e.parse += n,
        }
    }

    #[inline]
    pub fn lag(&mut self, ns: u64) {
        let c = &mut self.interval_counts;
        c.max_lag_ns = c.max_lag_ns.max(ns);
    }

    #[inline]
    pub fn bytes(&mut self, n: u64) {
        self.interval_counts.bytes_read += n;
    }

    /// Closes the current interval: folds it into the totals and hands it out.
    pub fn take_interval(&mut self) -> (Histogram<u64>, Counters) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.total.add(&self.interval);
        self.total_counts.add(&self.interval_counts);
        let h = self.interval.clone();
        self.interval.reset();
        let c = std::mem::take(&mut self.interval_counts);
        (h, c)
    }
}

/// Summary latency figures in microseconds, as the JSON and the table show them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency {
                min: 0.0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                p9999: 0.0,
                max: 0.0,
            };
        }
        let q = |p: f64| us(h.value_at_quantile(p));
        Latency {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: us(h.max()),
        }
    }
}

/// The full distribution as `[percentile, latency_us]` pairs, at the usual HdrHistogram
/// percentile ticks (5 per halving of the tail) plus the maximum.
pub fn percentiles(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            (
                v.percentile(),
                us(h.highest_equivalent(v.value_iterated_to())),
            )
        })
        .collect();
    out.dedup_by(|b, a| a.0 == b.0);
    if out.last().is_none_or(|l| l.0 < 100.0) {
        out.push((100.0, us(h.max())));
    }
    out
}
