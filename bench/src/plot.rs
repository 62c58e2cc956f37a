//! SVG plots with plotters (SVG backend only, so no font libraries are needed):
//! throughput per scenario per proxy, CPU per request, latency percentile curves
//! on the usual log scale (x = 1/(1-p), so 90%, 99%, 99.9% are equally spaced),
//! and the rate sweep.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::cli::{ProxyKind, ScenarioKind};
use crate::report::{Agg, CellSummary, ProxySummary};

type R<T> = Result<T, String>;

fn color(p: ProxyKind) -> RGBColor {
    match p {
        ProxyKind::Ringway => RGBColor(214, 69, 65),
        ProxyKind::RingwayPgo => RGBColor(237, 145, 33),
        ProxyKind::Nginx => RGBColor(46, 139, 87),
        ProxyKind::Haproxy => RGBColor(52, 101, 164),
        ProxyKind::Floor => RGBColor(150, 150, 150),
        ProxyKind::FloorRaw => RGBColor(90, 90, 90),
    }
}

fn e<E: std::fmt::Debug>(x: E) -> String {
    format!("{x:?}")
}

/// Writes every plot the summary allows; returns the file names written.
pub fn all(dir: &Path, summary: &[CellSummary], proxies: &[ProxyKind]) -> R<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|x| format!("{}: {x}", dir.display()))?;
    let mut out = Vec::new();
    let fam = |k: ScenarioKind| -> Vec<&CellSummary> {
        summary
            .iter()
            .filter(|c| c.scenario == k && c.skipped.is_none())
            .collect()
    };
    for (k, file, title) in [
        (
            ScenarioKind::Closed,
            "throughput-closed.svg",
            "Closed loop: throughput (median, min–max)",
        ),
        (
            ScenarioKind::Bodies,
            "throughput-bodies.svg",
            "Response body size: throughput (median, min–max)",
        ),
    ] {
        let cells = fam(k);
        if cells.is_empty() {
            continue;
        }
        let cats: Vec<String> = cells.iter().map(|c| short(c)).collect();
        let series: Vec<(ProxyKind, Vec<Option<Agg>>)> = proxies
            .iter()
            .map(|p| {
                (
                    *p,
                    cells
                        .iter()
                        .map(|c| find(c, *p).and_then(|s| s.rps))
                        .collect(),
                )
            })
            .collect();
        bars(&dir.join(file), title, "req/s", &cats, &series)?;
        out.push(file.to_string());
    }
    let closed = fam(ScenarioKind::Closed);
    if !closed.is_empty() {
        let cats: Vec<String> = closed.iter().map(|c| short(c)).collect();
        for (metric, file, title) in [
            (
                "user",
                "cpu-user-per-request.svg",
                "Proxy user-space CPU per request (µs)",
            ),
            (
                "total",
                "cpu-total-per-request.svg",
                "Proxy total CPU (user + system) per request (µs)",
            ),
        ] {
            let series: Vec<(ProxyKind, Vec<Option<Agg>>)> = proxies
                .iter()
                .map(|p| {
                    let v = closed
                        .iter()
                        .map(|c| {
                            find(c, *p).and_then(|s| {
                                if metric == "user" {
                                    s.user_us_per_req
                                } else {
                                    s.total_us_per_req
                                }
                            })
                        })
                        .collect();
                    (*p, v)
                })
                .collect();
            bars(&dir.join(file), title, "µs per request", &cats, &series)?;
            out.push(file.to_string());
        }
    }
    for c in fam(ScenarioKind::Rate)
        .into_iter()
        .chain(fam(ScenarioKind::Closed))
    {
        let file = format!("latency-{}.svg", c.id);
        let curves: Vec<(ProxyKind, &[(f64, f64)])> = c
            .proxies
            .iter()
            .filter(|p| !p.percentiles.is_empty())
            .map(|p| (p.proxy, p.percentiles.as_slice()))
            .collect();
        if curves.is_empty() {
            continue;
        }
        latency(
            &dir.join(&file),
            &format!("Latency by percentile: {}", c.label),
            &curves,
        )?;
        out.push(file);
    }
    let sweep = fam(ScenarioKind::Sweep);
    if !sweep.is_empty() {
        sweep_plot(&dir.join("sweep-p99.svg"), &sweep, proxies)?;
        out.push("sweep-p99.svg".into());
    }
    Ok(out)
}

fn find(c: &CellSummary, p: ProxyKind) -> Option<&ProxySummary> {
    c.proxies.iter().find(|s| s.proxy == p && s.runs_ok > 0)
}

fn short(c: &CellSummary) -> String {
    match c.id.strip_prefix("closed-c") {
        Some(n) => format!("{n} conns"),
        None => c.id.strip_prefix("body-").unwrap_or(&c.id).to_string(),
    }
}

/// Grouped bars with a min–max whisker on each.
fn bars(
    path: &Path,
    title: &str,
    ylabel: &str,
    cats: &[String],
    series: &[(ProxyKind, Vec<Option<Agg>>)],
) -> R<()> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|a| a.max))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = cats.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(ylabel)
        .y_label_formatter(&|v| human(*v))
        .draw()
        .map_err(e)?;
    let k = series.len().max(1) as f64;
    let w = 0.8 / k;
    for (si, (p, vals)) in series.iter().enumerate() {
        let c = color(*p);
        let x0 = |i: usize| i as f64 + 0.1 + si as f64 * w;
        chart
            .draw_series(vals.iter().enumerate().filter_map(|(i, a)| {
                a.map(|a| {
                    Rectangle::new(
                        [(x0(i) + 0.01, 0.0), (x0(i) + w - 0.01, a.median)],
                        c.filled(),
                    )
                })
            }))
            .map_err(e)?
            .label(p.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart
            .draw_series(vals.iter().enumerate().filter_map(|(i, a)| {
                a.filter(|a| a.n > 1).map(|a| {
                    let xm = x0(i) + w / 2.0;
                    PathElement::new(vec![(xm, a.min), (xm, a.max)], BLACK.stroke_width(2))
                })
            }))
            .map_err(e)?;
    }
    label_categories(&root, &chart, cats)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn label_categories<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    cats: &[String],
) -> R<()> {
    for (i, c) in cats.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let style = ("sans-serif", 15).into_font().color(&BLACK).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        root.draw(&Text::new(c.clone(), (px, py + 8), style))
            .map_err(e)?;
    }
    Ok(())
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// x position of a percentile on the 1/(1-p) log scale.
fn px(p: f64) -> Option<f64> {
    if (0.0..100.0).contains(&p) {
        Some((1.0 / (1.0 - p / 100.0)).log10())
    } else {
        None
    }
}

fn latency(path: &Path, title: &str, curves: &[(ProxyKind, &[(f64, f64)])]) -> R<()> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let pts: Vec<(f64, f64)> = curves
        .iter()
        .flat_map(|(_, c)| c.iter().filter_map(|(p, v)| px(*p).map(|x| (x, *v))))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    if pts.is_empty() {
        return Ok(());
    }
    let xmax = pts
        .iter()
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        .ceil()
        .min(6.0);
    let ymin = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) * 0.8;
    let ymax = pts.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.3;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() > 1e-6 {
                return String::new();
            }
            let p = 100.0 * (1.0 - 10f64.powf(-x.round()));
            let s = format!("{p:.4}");
            format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
        })
        .x_desc("percentile")
        .y_desc("latency µs (log)")
        .y_label_formatter(&|v| human(*v))
        .draw()
        .map_err(e)?;
    for (p, c) in curves {
        let col = color(*p);
        let line: Vec<(f64, f64)> = c
            .iter()
            .filter_map(|(p, v)| px(*p).map(|x| (x, *v)))
            .filter(|(x, v)| *v > 0.0 && *x <= xmax)
            .collect();
        chart
            .draw_series(LineSeries::new(line, col.stroke_width(2)))
            .map_err(e)?
            .label(p.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn sweep_plot(path: &Path, cells: &[&CellSummary], proxies: &[ProxyKind]) -> R<()> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let rate_of = |c: &CellSummary| {
        c.id.strip_prefix("sweep-r")
            .and_then(|r| r.parse::<f64>().ok())
    };
    let mut pts: Vec<(ProxyKind, Vec<(f64, f64)>)> = Vec::new();
    for p in proxies {
        let v: Vec<(f64, f64)> = cells
            .iter()
            .filter_map(|c| Some((rate_of(c)?, find(c, *p)?.p99_us?.median)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        pts.push((*p, v));
    }
    let all: Vec<(f64, f64)> = pts.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let xmin = all.iter().map(|p| p.0).fold(f64::MAX, f64::min);
    let xmax = all.iter().map(|p| p.0).fold(0.0, f64::max);
    let (xmin, xmax) = if xmax > xmin {
        (xmin, xmax)
    } else {
        (xmin * 0.9, xmin * 1.1)
    };
    let ymin = all.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) * 0.8;
    let ymax = all.iter().map(|p| p.1).fold(1.0, f64::max) * 1.3;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Rate sweep: p99 latency against offered rate",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin..xmax, (ymin..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("offered req/s")
        .y_desc("p99 µs (log)")
        .x_label_formatter(&|v| human(*v))
        .y_label_formatter(&|v| human(*v))
        .draw()
        .map_err(e)?;
    for (p, v) in pts {
        let col = color(p);
        chart
            .draw_series(LineSeries::new(v.clone(), col.stroke_width(2)))
            .map_err(e)?
            .label(p.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        chart
            .draw_series(v.into_iter().map(|pt| Circle::new(pt, 4, col.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert_eq!(px(0.0), Some(0.0));
        assert!((px(99.0).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(px(100.0), None);
    }
}
