//! Targets from `bench/targets.toml`: Ringway's figure as a ratio against the
//! better of nginx and HAProxy measured in the same run (and, where the issue
//! sets one, an absolute ceiling). A missed target makes `bench` exit non-zero.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::ProxyKind;
use crate::report::{Agg, CellSummary, ProxySummary};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    #[serde(rename = "target", default)]
    pub targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    /// `user_us_per_req`, `total_us_per_req`, `rps`, `p99_us`.
    pub metric: String,
    pub cells: Vec<String>,
    /// Ringway / better peer must be at most this (lower-is-better metrics).
    pub max_ratio: Option<f64>,
    /// Ringway / better peer must be at least this (higher-is-better metrics).
    pub min_ratio: Option<f64>,
    /// Ringway's own figure must be at most this (same unit as the metric).
    pub max_abs: Option<f64>,
    /// Only judge cells where the better peer was bound by the proxy CPU, since
    /// a load-bound cell cannot show a throughput difference.
    #[serde(default)]
    pub only_proxy_bound: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub name: String,
    pub cell: String,
    /// Which Ringway build the figure is from (`ringway`, `ringway-pgo`).
    pub build: String,
    pub ringway: Option<f64>,
    pub peer: Option<(String, f64)>,
    pub ratio: Option<f64>,
    pub limit: String,
    /// `met`, `MISSED`, or `n/a (...)` when the cell cannot judge it.
    pub status: String,
}

impl TargetResult {
    pub fn missed(&self) -> bool {
        self.status.starts_with("MISSED")
    }
}

pub fn load(path: &Path) -> Result<TargetsFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f: TargetsFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for t in &f.targets {
        if metric(t, None).is_err() {
            return Err(format!(
                "{}: target `{}`: unknown metric `{}`",
                path.display(),
                t.name,
                t.metric
            ));
        }
    }
    Ok(f)
}

/// Reads a metric from a summary; Err for an unknown metric name.
fn metric(t: &Target, p: Option<&ProxySummary>) -> Result<Option<Agg>, ()> {
    let Some(p) = p else {
        return match t.metric.as_str() {
            "user_us_per_req" | "total_us_per_req" | "rps" | "p99_us" => Ok(None),
            _ => Err(()),
        };
    };
    Ok(match t.metric.as_str() {
        "user_us_per_req" => p.user_us_per_req,
        "total_us_per_req" => p.total_us_per_req,
        "rps" => p.rps,
        "p99_us" => p.p99_us,
        _ => return Err(()),
    })
}

fn higher_is_better(m: &str) -> bool {
    m == "rps"
}

pub fn check(f: &TargetsFile, summary: &[CellSummary]) -> Vec<TargetResult> {
    let mut out = Vec::new();
    for t in &f.targets {
        for cell_id in &t.cells {
            let Some(cell) = summary.iter().find(|c| &c.id == cell_id) else {
                // The cell was not part of this run (filtered out): nothing to judge.
                continue;
            };
            // Each Ringway build in the run is judged on its own; a run with neither
            // still reports the plain build's target as missed.
            let mut builds: Vec<ProxyKind> = cell
                .proxies
                .iter()
                .map(|p| p.proxy)
                .filter(|k| k.is_ringway())
                .collect();
            if builds.is_empty() {
                builds.push(ProxyKind::Ringway);
            }
            for b in builds {
                out.push(judge(t, cell, b));
            }
        }
    }
    out
}

fn judge(t: &Target, cell: &CellSummary, build: ProxyKind) -> TargetResult {
    let mut limits = Vec::new();
    if let Some(r) = t.max_ratio {
        limits.push(format!("≤ {r}x"));
    }
    if let Some(r) = t.min_ratio {
        limits.push(format!("≥ {r}x"));
    }
    if let Some(a) = t.max_abs {
        limits.push(format!("≤ {a}"));
    }
    let mut res = TargetResult {
        name: t.name.clone(),
        cell: cell.id.clone(),
        build: build.name().to_string(),
        ringway: None,
        peer: None,
        ratio: None,
        limit: limits.join(", "),
        status: String::new(),
    };
    let get = |k: ProxyKind| {
        cell.proxies
            .iter()
            .find(|p| p.proxy == k)
            .and_then(|p| metric(t, Some(p)).ok().flatten().map(|a| (p, a.median)))
    };
    let Some((_, rw)) = get(build) else {
        res.status = "MISSED (no Ringway figure)".into();
        return res;
    };
    res.ringway = Some(rw);
    let hib = higher_is_better(&t.metric);
    let peer = [ProxyKind::Nginx, ProxyKind::Haproxy]
        .into_iter()
        .filter_map(get)
        .reduce(|a, b| if (a.1 > b.1) == hib { a } else { b });
    let mut missed = Vec::new();
    if let Some(a) = t.max_abs {
        if rw > a {
            missed.push(format!("{rw:.3} > {a}"));
        }
    }
    match peer {
        Some((p, v)) => {
            res.peer = Some((p.proxy.name().to_string(), v));
            if t.only_proxy_bound && p.bottleneck != "proxy" {
                if missed.is_empty() {
                    res.status = format!("n/a ({} bound by {})", p.proxy.name(), p.bottleneck);
                    return res;
                }
            } else if v > 0.0 {
                let ratio = rw / v;
                res.ratio = Some(ratio);
                if let Some(m) = t.max_ratio {
                    if ratio > m {
                        missed.push(format!("ratio {ratio:.2} > {m}"));
                    }
                }
                if let Some(m) = t.min_ratio {
                    if ratio < m {
                        missed.push(format!("ratio {ratio:.2} < {m}"));
                    }
                }
            }
        }
        None if t.max_ratio.is_some() || t.min_ratio.is_some() => {
            missed.push("no peer figure to compare with".into());
        }
        None => {}
    }
    res.status = if missed.is_empty() {
        "met".into()
    } else {
        format!("MISSED ({})", missed.join("; "))
    };
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(proxy: ProxyKind, user_us: f64) -> ProxySummary {
        let a = Agg::of(vec![user_us]);
        ProxySummary {
            proxy,
            runs_ok: 1,
            runs_failed: 0,
            first_error: None,
            rps: None,
            p50_us: None,
            p90_us: None,
            p99_us: None,
            p999_us: None,
            user_us_per_req: a,
            sys_us_per_req: None,
            total_us_per_req: None,
            rss_mib: None,
            upstream_opened: None,
            reuse_ratio: None,
            errors: None,
            proxy_busy: None,
            load_busy: None,
            core_busy: Vec::new(),
            bottleneck: "proxy".into(),
            disturbed_runs: 0,
            idle_bytes_per_conn: None,
            idle_opened: None,
            percentiles: Vec::new(),
        }
    }

    fn cell(proxies: Vec<ProxySummary>) -> CellSummary {
        CellSummary {
            id: "closed-c50".into(),
            scenario: crate::cli::ScenarioKind::Closed,
            label: "closed loop, 50 conns".into(),
            skipped: None,
            proxies,
        }
    }

    fn user_target() -> TargetsFile {
        TargetsFile {
            targets: vec![Target {
                name: "user".into(),
                metric: "user_us_per_req".into(),
                cells: vec!["closed-c50".into()],
                max_ratio: Some(0.5),
                min_ratio: None,
                max_abs: Some(1.0),
                only_proxy_bound: false,
            }],
        }
    }

    #[test]
    fn each_ringway_build_is_judged_on_its_own_figure() {
        let c = cell(vec![
            summary(ProxyKind::Ringway, 1.2),
            summary(ProxyKind::RingwayPgo, 0.8),
            summary(ProxyKind::Nginx, 3.0),
            summary(ProxyKind::Haproxy, 4.0),
            summary(ProxyKind::Floor, 0.1),
        ]);
        let r = check(&user_target(), &[c]);
        let got: Vec<(&str, Option<f64>, bool)> = r
            .iter()
            .map(|t| (t.build.as_str(), t.ringway, t.missed()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ringway", Some(1.2), true),
                ("ringway-pgo", Some(0.8), false)
            ]
        );
        // The peer is the better of nginx and HAProxy, never the floor or the other build.
        assert!(r.iter().all(|t| t.peer == Some(("nginx".into(), 3.0))));
    }

    #[test]
    fn a_cell_without_ringway_misses_the_plain_build() {
        let r = check(
            &user_target(),
            &[cell(vec![summary(ProxyKind::Nginx, 3.0)])],
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].build, "ringway");
        assert!(r[0].missed(), "{:?}", r[0]);
    }

    #[test]
    fn shipped_targets_parse() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("targets.toml");
        let f = load(&p).unwrap();
        assert!(f.targets.len() >= 4);
    }
}
