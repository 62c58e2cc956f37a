//! `bench`: Ringway against nginx and HAProxy on the same cores.
//!
//! Starts two upstream servers, then for every cell and repetition each proxy in
//! turn (fresh processes per run), drives load at it from the other CPU, records
//! what the kernel counts for every process and core, and writes a JSON file with
//! every raw figure, a markdown table and SVG plots. Exits 1 when a target in
//! `bench/targets.toml` is missed, 2 when a run could not be carried out.

mod cli;
mod driver;
mod idle;
mod peers;
mod plot;
mod procs;
mod report;
mod runner;
mod scenarios;
mod targets;
mod tls;
mod upstreams;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;

use cli::{Args, DriverKind, ProxyKind, ScenarioKind};
use report::Meta;
use runner::{CellResult, Ctx};
use scenarios::{Cell, Plan};

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: the nearest ancestor of the current directory whose
/// Cargo.toml declares a workspace, else the one this binary was built from.
fn repo_root() -> PathBuf {
    if let Ok(mut d) = std::env::current_dir() {
        loop {
            let t = std::fs::read_to_string(d.join("Cargo.toml")).unwrap_or_default();
            if t.contains("[workspace]") {
                return d;
            }
            if !d.pop() {
                break;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the PGO build is read from; `bench/pgo-build` writes the default.
fn ringway_pgo_path(args: &Args, root: &Path) -> PathBuf {
    args.ringway_pgo
        .clone()
        .unwrap_or_else(|| root.join("target/pgo/ringway"))
}

fn run(args: Args) -> Result<ExitCode, String> {
    let started = Instant::now();
    let root = repo_root();
    let nofile = procs::raise_nofile();
    let plan = Plan::from_args(&args);
    if args.proxies.is_empty() {
        return Err("no proxies selected".into());
    }
    let pgo = ringway_pgo_path(&args, &root);
    if args.proxies.contains(&ProxyKind::RingwayPgo) && !pgo.exists() {
        return Err(format!(
            "ringway-pgo: {} does not exist; build it with bench/pgo-build",
            pgo.display()
        ));
    }
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for c in args.proxy_cpus.iter().chain(&args.load_cpus) {
        if *c >= ncpu {
            return Err(format!(
                "CPU {c} does not exist here ({ncpu} CPUs); see --proxy-cpus/--load-cpus"
            ));
        }
    }
    let tmp = std::env::temp_dir().join(format!("ringway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut notes: Vec<String> = Vec::new();
    if plan.idle_conns + 500 > nofile as usize {
        notes.push(format!(
            "open-file limit is {nofile}: the idle cell's {} connections may not all open",
            plan.idle_conns
        ));
    }
    let tls = if plan.has(ScenarioKind::Tls) {
        Some(tls::write(&tmp)?)
    } else {
        None
    };
    let mut ctx = Ctx {
        tls,
        plan: plan.clone(),
        proxies: args.proxies.clone(),
        ringway: args
            .ringway
            .clone()
            .unwrap_or_else(|| root.join("target/release/ringway")),
        ringway_pgo: pgo,
        loadgen: args
            .loadgen
            .clone()
            .unwrap_or_else(|| root.join("target/release/loadgen")),
        nginx: args.nginx.clone(),
        haproxy: args.haproxy.clone(),
        wrk: args.wrk.clone(),
        driver: args.driver,
        upstream: args.upstream,
        proxy_cpus: args.proxy_cpus.clone(),
        load_cpus: args.load_cpus.clone(),
        tmp: tmp.clone(),
        disturb_cores: args.disturb_cores,
        perf_data: args.perf_data.clone(),
        perf_call_graph: args.perf_call_graph.clone(),
        perf_done: false,
    };
    if args.proxy_cpus.iter().any(|c| args.load_cpus.contains(c)) {
        notes.push(
            "proxy and load CPUs overlap: the bottleneck column cannot separate the sides".into(),
        );
    }

    let mut results: Vec<CellResult> = Vec::new();
    let fixed = scenarios::fixed_cells(&plan);
    let (before_sweep, after_sweep): (Vec<Cell>, Vec<Cell>) = fixed
        .into_iter()
        .partition(|c| matches!(c.scenario, ScenarioKind::Closed | ScenarioKind::Rate));
    for cell in &before_sweep {
        eprintln!("== {} ({})", cell.id, cell.label);
        results.push(runner::run_cell(&mut ctx, cell));
    }
    if plan.has(ScenarioKind::Sweep) {
        sweep(&mut ctx, &mut results, &mut notes);
    }
    for cell in &after_sweep {
        eprintln!("== {} ({})", cell.id, cell.label);
        results.push(runner::run_cell(&mut ctx, cell));
    }
    let _ = std::fs::remove_dir_all(&tmp);

    let summary = report::summarise_all(&results, &args.proxies);
    collect_notes(&results, &ctx, &mut notes);

    let target_results = if plan.quick || args.no_targets {
        Vec::new()
    } else {
        let path = args
            .targets
            .clone()
            .unwrap_or_else(|| root.join("bench/targets.toml"));
        let f = targets::load(&path)?;
        targets::check(&f, &summary)
    };

    // Output files.
    let default_out = args.out.is_none();
    let out_dir = args.out.clone().unwrap_or_else(|| {
        if plan.quick {
            root.join("bench/results/tmp")
        } else {
            root.join("bench/results")
        }
    });
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let meta = meta(&args, started.elapsed().as_secs_f64(), nofile);
    let base = format!("{}-{}-{}", meta.date, meta.host, meta.git_commit);
    // `--quick` without `--out` writes to a scratch folder: the latest run replaces the last.
    let stem = if plan.quick && default_out {
        base
    } else {
        free_stem(&out_dir, &base)
    };
    let plot_dir = out_dir.join(&stem);
    let plots = match plot::all(&plot_dir, &summary, &args.proxies) {
        Ok(p) => p,
        Err(e) => {
            notes.push(format!("plots failed: {e}"));
            Vec::new()
        }
    };
    let rel: Vec<String> = plots.iter().map(|p| format!("{stem}/{p}")).collect();
    let md = report::markdown(&meta, &summary, &target_results, &notes, &rel);
    let json = serde_json::to_string_pretty(&report::Results {
        meta: &meta,
        plan: &plan,
        notes: &notes,
        summary: &summary,
        targets: &target_results,
        cells: &results,
    })
    .map_err(|e| e.to_string())?;
    let json_path = out_dir.join(format!("{stem}.json"));
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let md_path = out_dir.join(format!("{stem}.md"));
    std::fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    if default_out && !plan.quick && !args.no_readme {
        let rel_readme: Vec<String> = plots
            .iter()
            .map(|p| format!("results/{stem}/{p}"))
            .collect();
        let md_readme = report::markdown(&meta, &summary, &target_results, &notes, &rel_readme);
        if let Err(e) = update_readme(&root.join("bench/README.md"), &md_readme) {
            eprintln!("bench: README not updated: {e}");
        }
    }

    println!("{md}");
    eprintln!(
        "bench: wrote {}, {} and {} plots in {} ({:.0} s)",
        json_path.display(),
        md_path.display(),
        plots.len(),
        plot_dir.display(),
        started.elapsed().as_secs_f64()
    );

    let failed: Vec<String> = results
        .iter()
        .flat_map(|c| {
            c.runs.iter().filter_map(move |r| {
                r.error
                    .as_ref()
                    .map(|e| format!("{} {}: {e}", c.cell.id, r.proxy.name()))
            })
        })
        .collect();
    let missed: Vec<&targets::TargetResult> =
        target_results.iter().filter(|t| t.missed()).collect();
    for m in &missed {
        eprintln!(
            "bench: MISSED target `{}` in {}: {}",
            m.name, m.cell, m.status
        );
    }
    if !failed.is_empty() {
        for f in failed.iter().take(10) {
            eprintln!("bench: run failed: {f}");
        }
        if failed.len() > 10 {
            eprintln!("bench: ... and {} more failed runs", failed.len() - 10);
        }
        return Ok(ExitCode::from(2));
    }
    if !missed.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Constant-rate steps, rising until the first proxy cannot keep up (achieved
/// rate under 95% of offered, or more than 0.1% errors).
fn sweep(ctx: &mut Ctx, results: &mut Vec<CellResult>, notes: &mut Vec<String>) {
    if ctx.driver == DriverKind::Wrk {
        notes.push("rate sweep skipped: the wrk driver has no constant-rate mode".into());
        return;
    }
    let rates = scenarios::sweep_rates(&ctx.plan);
    let mut stopped = false;
    for r in &rates {
        let cell = Cell::rate(*r, ctx.plan.rate_conns, ScenarioKind::Sweep);
        eprintln!("== {} ({})", cell.id, cell.label);
        let res = runner::run_cell(ctx, &cell);
        let mut behind = Vec::new();
        for p in &ctx.proxies {
            let s = report::summarise(&res, *p);
            let rps = s.rps.map(|a| a.median).unwrap_or(0.0);
            let err = s.errors.map(|a| a.median).unwrap_or(0.0);
            let reqs = rps * ctx.plan.duration_s;
            if s.runs_ok == 0 || rps < 0.95 * *r as f64 || err > 0.001 * reqs.max(1.0) {
                behind.push(p.name());
            }
        }
        results.push(res);
        if !behind.is_empty() {
            notes.push(format!(
                "rate sweep stopped at {r} req/s: {} could not keep up",
                behind.join(", ")
            ));
            stopped = true;
            break;
        }
    }
    if !stopped && !rates.is_empty() && !ctx.plan.quick {
        notes.push(format!(
            "rate sweep reached its highest rate ({} req/s) with every proxy keeping up; raise --sweep-max",
            rates[rates.len() - 1]
        ));
    }
}

fn collect_notes(results: &[CellResult], ctx: &Ctx, notes: &mut Vec<String>) {
    let load_runs: Vec<&runner::RunRecord> = results
        .iter()
        .flat_map(|c| c.runs.iter())
        .filter(|r| r.error.is_none() && r.load.is_some())
        .collect();
    if !load_runs.is_empty() && load_runs.iter().all(|r| r.upstream.connections.is_none()) {
        notes.push(match ctx.upstream {
            cli::UpstreamKind::Loadgen => "`loadgen serve` printed no `serve: connections=N requests=M` line on exit, so upstream connections opened are counted from the kernel's TCP table at the end of each run (connections to that run's upstream ports, TIME_WAIT included) and the reuse ratio against the requests the load generator completed (warm-up included)".into(),
            cli::UpstreamKind::Nginx => "the nginx upstream cannot count connections: upstream connections opened are counted from the kernel's TCP table at the end of each run".into(),
        });
    }
    let disturbed: usize = results
        .iter()
        .flat_map(|c| &c.runs)
        .filter(|r| r.disturbed)
        .count();
    let all: usize = results.iter().map(|c| c.runs.len()).sum();
    let others: f64 = results
        .iter()
        .flat_map(|c| &c.runs)
        .map(|r| r.others_cpu_s)
        .sum();
    notes.push(format!(
        "processes outside the run used {others:.1} CPU-seconds in all; {disturbed} of {all} kept runs were disturbed (over {:.2} cores) after {} redo(s) allowed per run",
        ctx.disturb_cores, ctx.plan.max_redo
    ));
    if ctx.driver == DriverKind::Wrk {
        notes.push("driver wrk: latency is not corrected for coordinated omission and constant-rate cells are skipped".into());
    }
    if ctx.perf_data.is_some() {
        notes.push("Ringway ran under `perf record` in its first run; that run's CPU figures include perf's overhead".into());
    }
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "not found".into())
}

fn meta(args: &Args, wall_s: f64, nofile: u64) -> Meta {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let root = repo_root();
    let ringway = args
        .ringway
        .clone()
        .unwrap_or_else(|| root.join("target/release/ringway"));
    let loadgen = args
        .loadgen
        .clone()
        .unwrap_or_else(|| root.join("target/release/loadgen"));
    let mut versions = vec![
        (
            "ringway".to_string(),
            first_line(&ringway.to_string_lossy(), &["--version"]),
        ),
        (
            "nginx".to_string(),
            first_line(&args.nginx.to_string_lossy(), &["-v"]),
        ),
        (
            "haproxy".to_string(),
            first_line(&args.haproxy.to_string_lossy(), &["-v"]),
        ),
    ];
    if args.proxies.contains(&ProxyKind::RingwayPgo) {
        let pgo = ringway_pgo_path(args, &root);
        versions.push((
            "ringway-pgo".to_string(),
            first_line(&pgo.to_string_lossy(), &["--version"]),
        ));
    }
    match args.driver {
        DriverKind::Loadgen => versions.push((
            "loadgen".into(),
            first_line(&loadgen.to_string_lossy(), &["--version"]),
        )),
        DriverKind::Wrk => versions.push((
            "wrk".into(),
            first_line(&args.wrk.to_string_lossy(), &["--version"]),
        )),
    }
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let host = read("/proc/sys/kernel/hostname");
    Meta {
        date: today(),
        host: if host.is_empty() {
            "host".into()
        } else {
            host.replace(['/', ' '], "_")
        },
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu_model,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        git_commit: git,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        proxy_cpus: args.proxy_cpus.clone(),
        load_cpus: args.load_cpus.clone(),
        driver: format!("{:?}", args.driver).to_lowercase(),
        upstream: format!("{:?}", args.upstream).to_lowercase(),
        versions,
        nofile_limit: nofile,
        wall_s,
    }
}

/// `base`, or `base-2`, `base-3`, ... when a run with that name is already in `dir`: two runs of
/// one commit on one day must not overwrite each other's results.
fn free_stem(dir: &Path, base: &str) -> String {
    let taken = |s: &str| {
        ["md", "json"]
            .iter()
            .any(|ext| dir.join(format!("{s}.{ext}")).exists())
            || dir.join(s).exists()
    };
    let mut stem = base.to_string();
    let mut n = 2;
    while taken(&stem) {
        stem = format!("{base}-{n}");
        n += 1;
    }
    stem
}

/// Today's date (UTC) as YYYY-MM-DD, from days since the epoch.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil(secs / 86_400)
}

fn civil(days: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

const BEGIN: &str = "<!-- results:begin -->";
const END: &str = "<!-- results:end -->";

/// Replaces the README's results section (between the markers) with `md`.
fn update_readme(path: &Path, md: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        return Err("markers not found".into());
    };
    if b < a {
        return Err("markers out of order".into());
    }
    let new = format!("{}{BEGIN}\n{md}\n{}", &text[..a], &text[b..]);
    std::fs::write(path, new).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil(0), "1970-01-01");
        assert_eq!(civil(19_723), "2024-01-01");
        assert_eq!(civil(11_016), "2000-02-29");
    }

    #[test]
    fn a_second_run_gets_a_name_of_its_own() {
        let dir = std::env::temp_dir().join(format!("bench-stem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = "2026-11-30-vm-abc1234";
        assert_eq!(free_stem(&dir, base), base);
        std::fs::write(dir.join(format!("{base}.md")), "first run").unwrap();
        assert_eq!(free_stem(&dir, base), format!("{base}-2"));
        std::fs::create_dir_all(dir.join(format!("{base}-2"))).unwrap();
        assert_eq!(free_stem(&dir, base), format!("{base}-3"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn readme_section_replaced() {
        let p = std::env::temp_dir().join(format!("bench-readme-{}.md", std::process::id()));
        std::fs::write(&p, format!("# x\n{BEGIN}\nold\n{END}\ntail\n")).unwrap();
        update_readme(&p, "new table").unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(t, format!("# x\n{BEGIN}\nnew table\n{END}\ntail\n"));
    }

    #[test]
    fn proxies_have_names() {
        assert_eq!(ProxyKind::Haproxy.name(), "haproxy");
        use clap::ValueEnum;
        let pgo = ProxyKind::from_str("ringway-pgo", false).unwrap();
        assert_eq!(pgo.name(), "ringway-pgo");
        assert!(pgo.is_ringway() && !ProxyKind::Floor.is_ringway());
    }
}
