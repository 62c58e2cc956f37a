//! Summaries (median with min and max over repetitions), the results JSON with
//! every raw figure, and the markdown table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{ProxyKind, ScenarioKind};
use crate::runner::{CellResult, RunRecord};
use crate::targets::TargetResult;

/// Median, min and max of one figure over the successful repetitions.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Agg {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Agg {
    pub fn of(mut v: Vec<f64>) -> Option<Agg> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Agg {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// One proxy in one cell, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ProxySummary {
    pub proxy: ProxyKind,
    pub runs_ok: usize,
    pub runs_failed: usize,
    pub first_error: Option<String>,
    pub rps: Option<Agg>,
    pub p50_us: Option<Agg>,
    pub p90_us: Option<Agg>,
    pub p99_us: Option<Agg>,
    pub p999_us: Option<Agg>,
    pub user_us_per_req: Option<Agg>,
    pub sys_us_per_req: Option<Agg>,
    pub total_us_per_req: Option<Agg>,
    pub rss_mib: Option<Agg>,
    pub upstream_opened: Option<Agg>,
    pub reuse_ratio: Option<Agg>,
    pub errors: Option<Agg>,
    pub proxy_busy: Option<Agg>,
    pub load_busy: Option<Agg>,
    pub core_busy: Vec<Option<Agg>>,
    /// The side at >= 90% busy in most repetitions.
    pub bottleneck: String,
    pub disturbed_runs: usize,
    pub idle_bytes_per_conn: Option<Agg>,
    pub idle_opened: Option<Agg>,
    /// Latency distribution of the median-throughput repetition.
    pub percentiles: Vec<(f64, f64)>,
    /// Each successful repetition's own figures, so targets can also be judged repetition by
    /// repetition against the peers of the same repetition (`targets::judge`).
    #[serde(skip)]
    pub reps: Vec<RepFigures>,
}

/// One successful repetition of one proxy in one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RepFigures {
    pub rep: usize,
    pub rps: Option<f64>,
    pub p99_us: Option<f64>,
    pub user_us_per_req: Option<f64>,
    pub total_us_per_req: Option<f64>,
    /// The proxy's own CPU was the bottleneck in this repetition.
    pub proxy_bound: bool,
}

impl ProxySummary {
    /// Whether the proxy ran in the cell at all: the floor sits some cells out (`run_cell`),
    /// and a proxy that did has no row in the tables.
    fn ran(&self) -> bool {
        self.runs_ok + self.runs_failed > 0
    }
}

fn agg<F: Fn(&RunRecord) -> Option<f64>>(runs: &[&RunRecord], f: F) -> Option<Agg> {
    Agg::of(runs.iter().filter_map(|r| f(r)).collect())
}

pub fn summarise(cr: &CellResult, proxy: ProxyKind) -> ProxySummary {
    let all: Vec<&RunRecord> = cr.runs.iter().filter(|r| r.proxy == proxy).collect();
    let ok: Vec<&RunRecord> = all.iter().copied().filter(|r| r.error.is_none()).collect();
    let ncores = ok.iter().map(|r| r.core_busy.len()).max().unwrap_or(0);
    let mut votes: Vec<(String, usize)> = Vec::new();
    for r in &ok {
        match votes.iter_mut().find(|(b, _)| *b == r.bottleneck) {
            Some(v) => v.1 += 1,
            None => votes.push((r.bottleneck.clone(), 1)),
        }
    }
    votes.sort_by_key(|v| std::cmp::Reverse(v.1));
    let rps = agg(&ok, |r| r.load.as_ref().map(|l| l.rps));
    let median_run = rps.and_then(|a| {
        ok.iter().filter_map(|r| r.load.as_ref()).min_by(|x, y| {
            (x.rps - a.median)
                .abs()
                .total_cmp(&(y.rps - a.median).abs())
        })
    });
    ProxySummary {
        proxy,
        runs_ok: ok.len(),
        runs_failed: all.len() - ok.len(),
        first_error: all.iter().find_map(|r| r.error.clone()),
        rps,
        p50_us: agg(&ok, |r| r.load.as_ref().and_then(|l| l.latency_us.p50)),
        p90_us: agg(&ok, |r| r.load.as_ref().and_then(|l| l.latency_us.p90)),
        p99_us: agg(&ok, |r| r.load.as_ref().and_then(|l| l.latency_us.p99)),
        p999_us: agg(&ok, |r| r.load.as_ref().and_then(|l| l.latency_us.p999)),
        user_us_per_req: agg(&ok, |r| r.user_us_per_req),
        sys_us_per_req: agg(&ok, |r| r.sys_us_per_req),
        total_us_per_req: agg(&ok, |r| r.total_us_per_req),
        rss_mib: agg(&ok, |r| Some(r.rss_bytes as f64 / 1048576.0)),
        upstream_opened: agg(&ok, |r| r.upstream_opened.map(|v| v as f64)),
        reuse_ratio: agg(&ok, |r| r.reuse_ratio),
        errors: agg(&ok, |r| {
            r.load
                .as_ref()
                .map(|l| l.total_errors() as f64)
                .or(r.idle.as_ref().map(|i| i.errors as f64))
        }),
        proxy_busy: agg(&ok, |r| Some(r.proxy_busy)),
        load_busy: agg(&ok, |r| Some(r.load_busy)),
        core_busy: (0..ncores)
            .map(|c| agg(&ok, |r| r.core_busy.get(c).copied()))
            .collect(),
        bottleneck: votes
            .first()
            .map(|v| v.0.clone())
            .unwrap_or_else(|| "n/a".into()),
        disturbed_runs: ok.iter().filter(|r| r.disturbed).count(),
        idle_bytes_per_conn: agg(&ok, |r| r.idle.as_ref().map(|i| i.bytes_per_conn)),
        idle_opened: agg(&ok, |r| r.idle.as_ref().map(|i| i.opened as f64)),
        percentiles: median_run
            .map(|l| l.percentiles.clone())
            .unwrap_or_default(),
        reps: ok
            .iter()
            .map(|r| RepFigures {
                rep: r.rep,
                rps: r.load.as_ref().map(|l| l.rps),
                p99_us: r.load.as_ref().and_then(|l| l.latency_us.p99),
                user_us_per_req: r.user_us_per_req,
                total_us_per_req: r.total_us_per_req,
                proxy_bound: r.bottleneck == "proxy",
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    pub id: String,
    pub scenario: ScenarioKind,
    pub label: String,
    pub skipped: Option<String>,
    pub proxies: Vec<ProxySummary>,
}

pub fn summarise_all(cells: &[CellResult], proxies: &[ProxyKind]) -> Vec<CellSummary> {
    cells
        .iter()
        .map(|c| CellSummary {
            id: c.cell.id.clone(),
            scenario: c.cell.scenario,
            label: c.cell.label.clone(),
            skipped: c.skipped.clone(),
            proxies: if c.skipped.is_some() {
                Vec::new()
            } else {
                proxies.iter().map(|p| summarise(c, *p)).collect()
            },
        })
        .collect()
}

/// Facts about the machine and the run, for the reader of the results.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub date: String,
    pub host: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub git_commit: String,
    pub command: String,
    pub proxy_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    pub driver: String,
    pub upstream: String,
    pub versions: Vec<(String, String)>,
    pub nofile_limit: u64,
    pub wall_s: f64,
}

#[derive(Serialize)]
pub struct Results<'a> {
    pub meta: &'a Meta,
    pub plan: &'a crate::scenarios::Plan,
    pub notes: &'a [String],
    pub summary: &'a [CellSummary],
    pub targets: &'a [TargetResult],
    pub cells: &'a [CellResult],
}

fn fmt_agg(a: Option<Agg>, prec: usize) -> String {
    match a {
        None => "–".into(),
        Some(a) if a.n <= 1 || (a.max - a.min).abs() < 1e-12 => format!("{:.*}", prec, a.median),
        Some(a) => format!(
            "{:.*} [{:.*}–{:.*}]",
            prec, a.median, prec, a.min, prec, a.max
        ),
    }
}

fn fmt_kilo(a: Option<Agg>) -> String {
    match a {
        None => "–".into(),
        Some(a) if a.n <= 1 => format!("{:.1}k", a.median / 1e3),
        Some(a) => format!(
            "{:.1}k [{:.1}–{:.1}]",
            a.median / 1e3,
            a.min / 1e3,
            a.max / 1e3
        ),
    }
}

fn fmt_med(a: Option<Agg>, prec: usize) -> String {
    a.map(|a| format!("{:.*}", prec, a.median))
        .unwrap_or_else(|| "–".into())
}

fn load_table(out: &mut String, cells: &[&CellSummary], first_col: &str) {
    let _ = writeln!(
        out,
        "| {first_col} | proxy | req/s (median [min–max]) | p50 µs | p99 µs | p99.9 µs | user µs/req | sys µs/req | total µs/req | RSS MiB | upstream conns (reuse) | errors | busy CPU proxy / load | bound by |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in cells {
        for p in c.proxies.iter().filter(|p| p.ran()) {
            if p.runs_ok == 0 {
                let _ = writeln!(
                    out,
                    "| {} | {} | failed: {} | | | | | | | | | | | |",
                    c.label,
                    p.proxy.name(),
                    p.first_error
                        .as_deref()
                        .unwrap_or("no runs")
                        .replace('|', "/")
                        .replace('\n', " ")
                );
                continue;
            }
            let ups = match (p.upstream_opened, p.reuse_ratio) {
                (Some(o), Some(r)) => format!("{:.0} ({:.2}%)", o.median, r.median * 100.0),
                (Some(o), None) => format!("{:.0}", o.median),
                _ => "n/a".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% / {:.0}% | {}{} |",
                c.label,
                p.proxy.name(),
                fmt_kilo(p.rps),
                fmt_med(p.p50_us, 0),
                fmt_agg(p.p99_us, 0),
                fmt_med(p.p999_us, 0),
                fmt_agg(p.user_us_per_req, 2),
                fmt_agg(p.sys_us_per_req, 2),
                fmt_agg(p.total_us_per_req, 2),
                fmt_med(p.rss_mib, 1),
                ups,
                fmt_med(p.errors, 0),
                p.proxy_busy.map(|a| a.median * 100.0).unwrap_or(0.0),
                p.load_busy.map(|a| a.median * 100.0).unwrap_or(0.0),
                p.bottleneck,
                if p.disturbed_runs > 0 {
                    format!(" ({} disturbed)", p.disturbed_runs)
                } else {
                    String::new()
                }
            );
        }
    }
    out.push('\n');
}

/// The markdown report: one table per scenario family, then targets and notes.
pub fn markdown(
    meta: &Meta,
    summary: &[CellSummary],
    targets: &[TargetResult],
    notes: &[String],
    plots: &[String],
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### Results {} on {}\n", meta.date, meta.host);
    let _ = writeln!(
        o,
        "{} ({} cores), Linux {}; proxy on CPU {:?}, load generator and upstreams on CPU {:?}; driver {}, upstream {}; commit {}. `{}`\n",
        meta.cpu_model, meta.cores, meta.kernel, meta.proxy_cpus, meta.load_cpus, meta.driver, meta.upstream, meta.git_commit, meta.command
    );
    let _ = writeln!(
        o,
        "CPU per request is the proxy's utime/stime over the measured window divided by responses. \"bound by\" names the side whose CPUs were >= 90% busy: a cell bound by `load` says nothing about the proxy's throughput, only its CPU per request.\n"
    );
    let fam = |k: ScenarioKind| {
        summary
            .iter()
            .filter(|c| c.scenario == k)
            .collect::<Vec<_>>()
    };
    for (k, title, col) in [
        (
            ScenarioKind::Closed,
            "Closed loop, maximum throughput",
            "cell",
        ),
        (
            ScenarioKind::Rate,
            "Constant rate (latency corrected for coordinated omission)",
            "cell",
        ),
        (
            ScenarioKind::Sweep,
            "Rate sweep (up to the first proxy that cannot keep up)",
            "cell",
        ),
        (ScenarioKind::Bodies, "Response body size", "cell"),
        (
            ScenarioKind::Tls,
            "TLS termination (clients over HTTPS, upstreams plain HTTP; the floor relays cannot terminate TLS)",
            "cell",
        ),
        (
            ScenarioKind::Cache,
            "Response cache hits (every answer from the proxy's in-memory cache; the floor relays have none)",
            "cell",
        ),
        (
            ScenarioKind::Log,
            "Access log on (a line per request to a file: Ringway's and nginx's combined format, HAProxy's httplog to its stdout file)",
            "cell",
        ),
    ] {
        let cells = fam(k);
        if cells.is_empty() {
            continue;
        }
        let _ = writeln!(o, "#### {title}\n");
        let (skipped, run): (Vec<&CellSummary>, Vec<&CellSummary>) =
            cells.into_iter().partition(|c| c.skipped.is_some());
        for c in skipped {
            let _ = writeln!(
                o,
                "- {}: skipped — {}",
                c.label,
                c.skipped.as_deref().unwrap_or("")
            );
        }
        if !run.is_empty() {
            load_table(&mut o, &run, col);
        } else {
            o.push('\n');
        }
    }
    let idle = fam(ScenarioKind::Idle);
    if !idle.is_empty() {
        let _ = writeln!(o, "#### Idle keep-alive connections: proxy memory\n");
        let _ = writeln!(o, "| cell | proxy | conns held | errors | RSS after MiB | bytes per connection (median [min–max]) |");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for c in idle {
            for p in c.proxies.iter().filter(|p| p.ran()) {
                if p.runs_ok == 0 {
                    let _ = writeln!(
                        o,
                        "| {} | {} | failed: {} | | | |",
                        c.label,
                        p.proxy.name(),
                        p.first_error
                            .as_deref()
                            .unwrap_or("no runs")
                            .replace('|', "/")
                    );
                    continue;
                }
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} |",
                    c.label,
                    p.proxy.name(),
                    fmt_med(p.idle_opened, 0),
                    fmt_med(p.errors, 0),
                    fmt_med(p.rss_mib, 1),
                    fmt_agg(p.idle_bytes_per_conn, 0)
                );
            }
        }
        o.push('\n');
    }
    if !targets.is_empty() {
        let _ = writeln!(
            o,
            "#### Targets (Ringway against the better peer in the same run)\n"
        );
        let _ = writeln!(
            o,
            "The result judges the medians over the repetitions. \"Repetitions met\" applies the \
             same limits to each repetition against the better peer of that repetition.\n"
        );
        let _ = writeln!(
            o,
            "| target | cell | build | Ringway | better peer | ratio | limit | result | repetitions met |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        for t in targets {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                t.cell,
                t.build,
                t.ringway
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "–".into()),
                t.peer
                    .as_ref()
                    .map(|(n, v)| format!("{n} {v:.3}"))
                    .unwrap_or_else(|| "–".into()),
                t.ratio
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "–".into()),
                t.limit,
                t.status,
                t.reps_met
                    .map(|(met, n)| format!("{met} of {n}"))
                    .unwrap_or_else(|| "–".into())
            );
        }
        o.push('\n');
    }
    if !plots.is_empty() {
        let _ = writeln!(o, "#### Plots\n");
        for p in plots {
            let _ = writeln!(o, "![{p}]({p})\n");
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(o, "#### Notes\n");
        for n in notes {
            let _ = writeln!(o, "- {n}");
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_repetition_keeps_its_own_figures_and_a_failed_attempt_none() {
        let run = |rep, attempt, user: Option<f64>, bottleneck: &str| {
            let mut r = RunRecord::failed(ProxyKind::Ringway, rep, attempt, "refused".into());
            if let Some(u) = user {
                r.error = None;
                r.user_us_per_req = Some(u);
                r.total_us_per_req = Some(u + 10.0);
                r.bottleneck = bottleneck.into();
            }
            r
        };
        let cr = CellResult {
            cell: crate::scenarios::Cell::closed(50, 0, ScenarioKind::Closed),
            skipped: None,
            runs: vec![
                run(0, 0, None, ""),
                run(0, 1, Some(0.5), "proxy"),
                run(1, 0, Some(0.7), "load"),
            ],
        };
        let s = summarise(&cr, ProxyKind::Ringway);
        let got: Vec<_> = s
            .reps
            .iter()
            .map(|r| (r.rep, r.user_us_per_req, r.total_us_per_req, r.proxy_bound))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some(0.5), Some(10.5), true),
                (1, Some(0.7), Some(10.7), false)
            ]
        );
    }

    #[test]
    fn the_targets_table_shows_how_many_repetitions_met_each() {
        let meta = Meta {
            date: "d".into(),
            host: "h".into(),
            kernel: "k".into(),
            cpu_model: "c".into(),
            cores: 2,
            git_commit: "g".into(),
            command: "bench".into(),
            proxy_cpus: vec![0],
            load_cpus: vec![1],
            driver: "loadgen".into(),
            upstream: "loadgen".into(),
            versions: Vec::new(),
            nofile_limit: 0,
            wall_s: 0.0,
        };
        let t = |reps_met| TargetResult {
            name: "total".into(),
            cell: "closed-c200".into(),
            build: "ringway".into(),
            ringway: Some(10.4),
            peer: Some(("nginx".into(), 13.5)),
            ratio: Some(0.77),
            limit: "≤ 0.8x".into(),
            status: "met".into(),
            reps_met,
        };
        let md = markdown(&meta, &[], &[t(Some((4, 7))), t(None)], &[], &[]);
        assert!(md.contains("| result | repetitions met |"), "{md}");
        assert!(md.contains("| ≤ 0.8x | met | 4 of 7 |"), "{md}");
        assert!(md.contains("| ≤ 0.8x | met | – |"), "{md}");
    }

    #[test]
    fn median_min_max() {
        let a = Agg::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((a.median, a.min, a.max, a.n), (2.0, 1.0, 3.0, 3));
        let b = Agg::of(vec![4.0, 1.0]).unwrap();
        assert_eq!(b.median, 2.5);
        assert!(Agg::of(vec![f64::NAN]).is_none());
    }
}
