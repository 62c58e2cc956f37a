//! Presenting a run: the progress line, the human table, the JSON document the bench harness
//! reads, and the HdrHistogram interval log.

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use serde::Serialize;

use crate::client::{Interval, RunResult};
use crate::stats::{percentiles, Errors, Latency};

/// Below this share of the target rate an open-loop run says plainly that it fell short.
pub const RATE_SHORTFALL: f64 = 0.95;
/// Generator lag worth a note: beyond monoio's 1 ms timer resolution plus scheduling noise.
const LAG_NOTE_US: f64 = 5_000.0;

/// Settings echoed into the report.
pub struct RunInfo {
    pub urls: Vec<String>,
    pub connections: usize,
    pub threads: usize,
    pub target_rps: Option<f64>,
}

#[derive(Serialize)]
pub struct JsonReport {
    pub mode: &'static str,
    pub url: Vec<String>,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub responses: u64,
    pub rps: f64,
    pub target_rps: Option<f64>,
    pub bytes_read: u64,
    pub errors: Errors,
    pub latency_us: Latency,
    pub percentiles: Vec<(f64, f64)>,
    /// Open loop only: the latest this generator sent a request on an idle connection, after
    /// its due time (its own lag, not counted as latency). Large values mean it was starved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_max_us: Option<f64>,
}

impl JsonReport {
    pub fn new(info: &RunInfo, r: &RunResult) -> Self {
        let secs = r.duration.as_secs_f64();
        JsonReport {
            mode: if info.target_rps.is_some() {
                "open"
            } else {
                "closed"
            },
            url: info.urls.clone(),
            connections: info.connections,
            threads: info.threads,
            duration_s: secs,
            requests: r.counts.requests,
            responses: r.counts.responses,
            rps: if secs > 0.0 {
                r.counts.responses as f64 / secs
            } else {
                0.0
            },
            target_rps: info.target_rps,
            bytes_read: r.counts.bytes_read,
            errors: r.counts.errors,
            latency_us: Latency::of(&r.hist),
            percentiles: percentiles(&r.hist),
            send_lag_max_us: info.target_rps.map(|_| r.counts.max_lag_ns as f64 / 1000.0),
        }
    }

    /// The plain warning an open-loop run owes its reader when the target rate was not met.
    pub fn shortfall(&self) -> Option<String> {
        let target = self.target_rps?;
        (self.rps < target * RATE_SHORTFALL).then(|| {
            format!(
                "WARNING: target rate not met: achieved {:.1} req/s of {:.1} req/s target ({:.1}%); \
                 latencies include the queueing this caused",
                self.rps,
                target,
                100.0 * self.rps / target
            )
        })
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.1}us")
    }
}

fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The human summary on stdout.
pub fn table(j: &JsonReport, out: &mut impl Write) -> io::Result<()> {
    let mode = match j.target_rps {
        Some(t) => format!("open loop at {t:.1} req/s (latency from intended send time)"),
        None => "closed loop".to_string(),
    };
    writeln!(out, "loadgen: {mode}")?;
    writeln!(out, "  url          {}", j.url.join(" "))?;
    writeln!(
        out,
        "  connections  {} on {} thread(s), {:.2}s measured",
        j.connections, j.threads, j.duration_s
    )?;
    writeln!(
        out,
        "  requests     {} sent, {} answered, {} bytes read",
        fmt_count(j.requests),
        fmt_count(j.responses),
        fmt_count(j.bytes_read)
    )?;
    match j.target_rps {
        Some(t) => writeln!(
            out,
            "  throughput   {:.1} req/s (target {t:.1}, {:.1}%)",
            j.rps,
            100.0 * j.rps / t
        )?,
        None => writeln!(out, "  throughput   {:.1} req/s", j.rps)?,
    }
    let l = &j.latency_us;
    writeln!(
        out,
        "  latency      {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "min", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    )?;
    writeln!(
        out,
        "               {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        fmt_us(l.min),
        fmt_us(l.mean),
        fmt_us(l.p50),
        fmt_us(l.p90),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.p9999),
        fmt_us(l.max)
    )?;
    let e = &j.errors;
    writeln!(
        out,
        "  errors       connect {} reset {} timeout {} parse {} status 4xx {} 5xx {}",
        e.connect, e.reset, e.timeout, e.parse, e.status_4xx, e.status_5xx
    )?;
    if let Some(lag) = j.send_lag_max_us.filter(|&l| l >= LAG_NOTE_US) {
        writeln!(
            out,
            "  note         sends on idle connections ran up to {} behind schedule (this \
             generator was short of CPU); that lag is not counted as latency",
            fmt_us(lag)
        )?;
    }
    if let Some(w) = j.shortfall() {
        writeln!(out, "{w}")?;
    }
    Ok(())
}

/// One line per second on stderr while the run goes.
pub fn progress_line(iv: &Interval, warmup: Duration) -> String {
    let secs = iv.length.as_secs_f64().max(1e-9);
    let end = (iv.start + iv.length).as_secs_f64();
    if iv.start + iv.length <= warmup {
        return format!("[{end:5.1}s] warmup");
    }
    let c = &iv.counts;
    let (p50, p99) = if iv.hist.is_empty() {
        (0.0, 0.0)
    } else {
        (
            iv.hist.value_at_quantile(0.5) as f64 / 1000.0,
            iv.hist.value_at_quantile(0.99) as f64 / 1000.0,
        )
    };
    format!(
        "[{end:5.1}s] {:>10.0} req/s  p50 {:>9}  p99 {:>9}  errors {}",
        c.responses as f64 / secs,
        fmt_us(p50),
        fmt_us(p99),
        c.errors.total()
    )
}

/// Writes the per-second histograms of the measured window as an HdrHistogram interval log
/// (V2 compressed, values in nanoseconds), readable by HistogramLogProcessor and friends.
pub fn hdr_log(r: &RunResult, out: &mut impl Write) -> io::Result<()> {
    let mut ser = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("loadgen latency intervals, values in nanoseconds")
        .with_start_time(r.started)
        .with_base_time(r.started)
        // Max column in milliseconds, as jHiccup and wrk2-style logs show it.
        .with_max_value_divisor(1_000_000.0);
    let mut w = builder.begin_log_with(out, &mut ser)?;
    for iv in &r.intervals {
        if iv.start + iv.length <= r.warmup || iv.hist.is_empty() {
            continue;
        }
        w.write_histogram(&iv.hist, iv.start, iv.length, None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1234567), "1,234,567");
    }
}
