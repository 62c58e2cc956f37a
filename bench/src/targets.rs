//! Targets from `bench/targets.toml`: Ringway's figure as a ratio against the
//! better of nginx and HAProxy measured in the same run (and, where the issue
//! sets one, an absolute ceiling). A missed target makes `bench` exit non-zero.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::ProxyKind;
use crate::report::{Agg, CellSummary, ProxySummary, RepFigures};

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
    pub metric: Metric,
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

/// What a target measures; the file names it in snake case (`user_us_per_req`, ...), and an
/// unknown name is refused when the file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    UserUsPerReq,
    TotalUsPerReq,
    Rps,
    P99Us,
}

impl Metric {
    /// Over the repetitions, as summarised.
    fn of(self, p: &ProxySummary) -> Option<Agg> {
        match self {
            Metric::UserUsPerReq => p.user_us_per_req,
            Metric::TotalUsPerReq => p.total_us_per_req,
            Metric::Rps => p.rps,
            Metric::P99Us => p.p99_us,
        }
    }

    /// In one repetition.
    fn of_rep(self, r: &RepFigures) -> Option<f64> {
        match self {
            Metric::UserUsPerReq => r.user_us_per_req,
            Metric::TotalUsPerReq => r.total_us_per_req,
            Metric::Rps => r.rps,
            Metric::P99Us => r.p99_us,
        }
    }

    /// The better of two figures' holders: higher throughput, lower everything else.
    fn better<T>(self, a: (T, f64), b: (T, f64)) -> (T, f64) {
        if (a.1 > b.1) == (self == Metric::Rps) {
            a
        } else {
            b
        }
    }
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
    /// The same limits applied to each repetition on its own, against the better peer of that
    /// repetition: (met, judged). Shown beside the verdict, which stays on the medians: on a
    /// machine whose speed drifts between repetitions, pairing shows how often a target holds.
    pub reps_met: Option<(usize, usize)>,
}

impl TargetResult {
    pub fn missed(&self) -> bool {
        self.status.starts_with("MISSED")
    }
}

pub fn load(path: &Path) -> Result<TargetsFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The limits `value` (Ringway's) breaks, given the better peer's figure when there is one.
fn breaches(t: &Target, value: f64, peer: Option<f64>) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(a) = t.max_abs {
        if value > a {
            missed.push(format!("{value:.3} > {a}"));
        }
    }
    if let Some(v) = peer.filter(|v| *v > 0.0) {
        let ratio = value / v;
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
    missed
}

/// Judges every repetition in which the build and at least one peer succeeded, each against
/// the better peer of that same repetition (and, for a target that asks it, only where that
/// peer was bound by its own CPU).
fn judge_reps(t: &Target, cell: &CellSummary, build: ProxyKind) -> Option<(usize, usize)> {
    let of = |k: ProxyKind| cell.proxies.iter().find(|p| p.proxy == k);
    let (mut met, mut judged) = (0, 0);
    for r in &of(build)?.reps {
        let Some(value) = t.metric.of_rep(r) else {
            continue;
        };
        let peer = [ProxyKind::Nginx, ProxyKind::Haproxy]
            .into_iter()
            .filter_map(|k| of(k)?.reps.iter().find(|p| p.rep == r.rep))
            .filter_map(|p| Some((p.proxy_bound, t.metric.of_rep(p)?)))
            .reduce(|a, b| t.metric.better(a, b));
        let peer = match peer {
            Some((bound, _)) if t.only_proxy_bound && !bound => continue,
            None if t.max_ratio.is_some() || t.min_ratio.is_some() => continue,
            p => p.map(|p| p.1),
        };
        judged += 1;
        if breaches(t, value, peer).is_empty() {
            met += 1;
        }
    }
    (judged > 0).then_some((met, judged))
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
        reps_met: None,
    };
    let get = |k: ProxyKind| {
        cell.proxies
            .iter()
            .find(|p| p.proxy == k)
            .and_then(|p| t.metric.of(p).map(|a| (p, a.median)))
    };
    let Some((_, rw)) = get(build) else {
        res.status = "MISSED (no Ringway figure)".into();
        return res;
    };
    res.ringway = Some(rw);
    let peer = [ProxyKind::Nginx, ProxyKind::Haproxy]
        .into_iter()
        .filter_map(get)
        .reduce(|a, b| t.metric.better(a, b));
    let missed = match peer {
        Some((p, v)) => {
            res.peer = Some((p.proxy.name().to_string(), v));
            if t.only_proxy_bound && p.bottleneck != "proxy" {
                let missed = breaches(t, rw, None);
                if missed.is_empty() {
                    res.status = format!("n/a ({} bound by {})", p.proxy.name(), p.bottleneck);
                    return res;
                }
                missed
            } else {
                if v > 0.0 {
                    res.ratio = Some(rw / v);
                }
                res.reps_met = judge_reps(t, cell, build);
                breaches(t, rw, Some(v))
            }
        }
        None if t.max_ratio.is_some() || t.min_ratio.is_some() => {
            let mut missed = breaches(t, rw, None);
            missed.push("no peer figure to compare with".into());
            missed
        }
        None => {
            res.reps_met = judge_reps(t, cell, build);
            breaches(t, rw, None)
        }
    };
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
        with_reps(proxy, &[user_us])
    }

    /// A summary whose repetitions 0, 1, ... had these user-CPU figures.
    fn with_reps(proxy: ProxyKind, user_us: &[f64]) -> ProxySummary {
        let a = Agg::of(user_us.to_vec());
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
            reps: user_us
                .iter()
                .enumerate()
                .map(|(rep, &u)| RepFigures {
                    rep,
                    user_us_per_req: Some(u),
                    ..RepFigures::default()
                })
                .collect(),
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
                metric: Metric::UserUsPerReq,
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
    fn repetitions_are_judged_against_the_peers_of_the_same_repetition() {
        // A machine that slowed down over the run: the medians (0.9 against 2.0) meet the
        // ceiling, but only the first two repetitions do on their own, and the last one also
        // breaks the ratio against its own peer (1.2 / 2.2 > 0.5).
        let c = cell(vec![
            with_reps(ProxyKind::Ringway, &[0.6, 0.9, 1.1, 1.2]),
            with_reps(ProxyKind::Nginx, &[1.4, 1.8, 2.2, 2.2]),
            // A peer that failed in repetition 1 is absent from it; nginx is the better one
            // wherever both ran.
            ProxySummary {
                reps: with_reps(ProxyKind::Haproxy, &[3.0, 9.9, 3.0, 3.0])
                    .reps
                    .into_iter()
                    .filter(|r| r.rep != 1)
                    .collect(),
                ..with_reps(ProxyKind::Haproxy, &[3.0, 3.0, 3.0])
            },
        ]);
        let r = check(&user_target(), &[c]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, "met", "{:?}", r[0]);
        assert_eq!(r[0].reps_met, Some((2, 4)));

        // Against a stronger peer in repetition 0 only, that repetition misses the ratio too.
        let c = cell(vec![
            with_reps(ProxyKind::Ringway, &[0.6, 0.9]),
            with_reps(ProxyKind::Nginx, &[1.0, 1.9]),
        ]);
        assert_eq!(check(&user_target(), &[c])[0].reps_met, Some((1, 2)));
    }

    #[test]
    fn throughput_repetitions_count_only_where_the_peer_was_proxy_bound() {
        // Each repetition's req/s, and whether the proxy's own CPU bound it.
        let rps = |proxy, figures: &[(f64, bool)]| ProxySummary {
            rps: Agg::of(figures.iter().map(|f| f.0).collect()),
            bottleneck: "proxy".into(),
            reps: figures
                .iter()
                .enumerate()
                .map(|(rep, &(v, proxy_bound))| RepFigures {
                    rep,
                    rps: Some(v),
                    proxy_bound,
                    ..RepFigures::default()
                })
                .collect(),
            ..summary(proxy, 0.0)
        };
        // In repetition 1 nginx, the better peer, was held back by the load side: that one
        // says nothing. Of the other two, Ringway outran nginx in repetition 0 only.
        let c = cell(vec![
            rps(
                ProxyKind::Ringway,
                &[(100.0, true), (50.0, true), (70.0, true)],
            ),
            rps(
                ProxyKind::Nginx,
                &[(80.0, true), (90.0, false), (75.0, true)],
            ),
            rps(
                ProxyKind::Haproxy,
                &[(60.0, true), (60.0, true), (60.0, true)],
            ),
        ]);
        let f = TargetsFile {
            targets: vec![Target {
                name: "throughput".into(),
                metric: Metric::Rps,
                cells: vec!["closed-c50".into()],
                max_ratio: None,
                min_ratio: Some(1.0),
                max_abs: None,
                only_proxy_bound: true,
            }],
        };
        let r = check(&f, &[c]);
        assert_eq!(r[0].reps_met, Some((1, 2)), "{:?}", r[0]);
    }

    #[test]
    fn an_unknown_metric_is_refused_with_the_file() {
        let path = std::env::temp_dir().join(format!("targets-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[target]]\nname = \"x\"\nmetric = \"speed\"\ncells = [\"closed-c50\"]\n",
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("speed") && e.contains("user_us_per_req"), "{e}");
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
