//! Runs cells: for every repetition, every proxy in turn (the order rotates per
//! repetition so no proxy always runs first on a cold or hot machine), each with
//! fresh upstreams and a fresh proxy process so counters start at zero.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{DriverKind, ProxyKind, UpstreamKind};
use crate::driver::{self, LoadResult, LoadSpec};
use crate::peers::{self, ProxyExit, ProxySpec};
use crate::procs;
use crate::scenarios::{Cell, Plan, TlsLoad};
use crate::upstreams::{self, UpstreamCounts, UpstreamSpec};

/// Everything a run needs that does not change between runs.
pub struct Ctx {
    /// The TLS cells' certificate, when the plan has them.
    pub tls: Option<crate::tls::TlsFiles>,
    pub plan: Plan,
    pub proxies: Vec<ProxyKind>,
    pub ringway: PathBuf,
    pub ringway_pgo: PathBuf,
    pub loadgen: PathBuf,
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub wrk: PathBuf,
    pub driver: DriverKind,
    pub upstream: UpstreamKind,
    pub proxy_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    pub tmp: PathBuf,
    pub disturb_cores: f64,
    pub perf_data: Option<PathBuf>,
    pub perf_call_graph: String,
    pub perf_done: bool,
}

impl Ctx {
    fn proxy_bin(&self, k: ProxyKind) -> &Path {
        match k {
            ProxyKind::Ringway => &self.ringway,
            ProxyKind::RingwayPgo => &self.ringway_pgo,
            ProxyKind::Nginx => &self.nginx,
            ProxyKind::Haproxy => &self.haproxy,
            ProxyKind::Floor | ProxyKind::FloorRaw => &self.loadgen,
        }
    }

    fn driver_bin(&self) -> &Path {
        match self.driver {
            DriverKind::Loadgen => &self.loadgen,
            DriverKind::Wrk => &self.wrk,
        }
    }
}

/// The idle-connection cell's figures.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRecord {
    pub opened: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rss_before: u64,
    pub rss_after: u64,
    pub bytes_per_conn: f64,
    pub open_s: f64,
}

/// One proxy, one cell, one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub proxy: ProxyKind,
    pub rep: usize,
    pub attempt: usize,
    pub error: Option<String>,
    pub wall_s: f64,
    pub load: Option<LoadResult>,
    pub idle: Option<IdleRecord>,
    pub proxy_user_s: f64,
    pub proxy_sys_s: f64,
    pub user_us_per_req: Option<f64>,
    pub sys_us_per_req: Option<f64>,
    pub total_us_per_req: Option<f64>,
    pub rss_bytes: u64,
    pub rss_hwm_bytes: u64,
    pub upstream: UpstreamCounts,
    /// Upstream connections seen in the kernel's TCP table at the end of the run.
    pub upstream_conns_kernel: Option<u64>,
    pub warmup_responses: u64,
    pub proxy_exit: ProxyExit,
    /// The proxy's processes whose CPU and memory were counted.
    pub proxy_pids: Vec<u32>,
    /// Upstream connections opened: the upstream servers' count, else the proxy's own.
    pub upstream_opened: Option<u64>,
    /// 1 - opened / upstream requests (warm-up included on both sides).
    pub reuse_ratio: Option<f64>,
    pub core_busy: Vec<f64>,
    pub proxy_busy: f64,
    pub load_busy: f64,
    /// `proxy`, `load`, `both` (>= 90% busy) or `neither` (latency- or rate-bound).
    pub bottleneck: String,
    pub others_cpu_s: f64,
    pub others_top: Vec<(String, f64)>,
    pub kthreads_cpu_s: f64,
    pub disturbed: bool,
    pub perf: bool,
}

impl RunRecord {
    pub(crate) fn failed(proxy: ProxyKind, rep: usize, attempt: usize, e: String) -> RunRecord {
        RunRecord {
            proxy,
            rep,
            attempt,
            error: Some(e),
            wall_s: 0.0,
            load: None,
            idle: None,
            proxy_user_s: 0.0,
            proxy_sys_s: 0.0,
            user_us_per_req: None,
            sys_us_per_req: None,
            total_us_per_req: None,
            rss_bytes: 0,
            rss_hwm_bytes: 0,
            upstream: UpstreamCounts::default(),
            upstream_conns_kernel: None,
            warmup_responses: 0,
            proxy_exit: ProxyExit::default(),
            proxy_pids: Vec::new(),
            upstream_opened: None,
            reuse_ratio: None,
            core_busy: Vec::new(),
            proxy_busy: 0.0,
            load_busy: 0.0,
            bottleneck: "n/a".into(),
            others_cpu_s: 0.0,
            others_top: Vec::new(),
            kthreads_cpu_s: 0.0,
            disturbed: false,
            perf: false,
        }
    }
}

/// All runs of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    pub cell: Cell,
    pub skipped: Option<String>,
    pub runs: Vec<RunRecord>,
}

/// Runs every repetition of a cell, proxies interleaved.
pub fn run_cell(ctx: &mut Ctx, cell: &Cell) -> CellResult {
    if cell.rate.is_some() && ctx.driver == DriverKind::Wrk {
        return CellResult {
            cell: cell.clone(),
            skipped: Some("the wrk driver has no constant-rate mode; use --driver loadgen".into()),
            runs: Vec::new(),
        };
    }
    let mut runs = Vec::new();
    let n = ctx.proxies.len();
    for rep in 0..ctx.plan.reps {
        for i in 0..n {
            let proxy = ctx.proxies[(i + rep) % n];
            // The floor relays open an upstream connection per client and hold no state of a
            // proxy's: their memory per idle connection says nothing (and reads as zero). They
            // frame responses by Content-Length only, so a chunked body is beyond them.
            // Nor do they speak TLS.
            // Nor do they cache, or log.
            if (cell.idle || cell.chunk > 0 || cell.tls.is_some() || cell.cache || cell.access_log)
                && proxy.is_floor()
            {
                continue;
            }
            // Only Ringway has the switch; the peers' figure is the plain idle cell's.
            if !cell.huge_pages && !proxy.is_ringway() {
                continue;
            }
            let mut attempt = 0;
            loop {
                let r = run_once(ctx, cell, proxy, rep, attempt);
                // The idle cell measures memory, which other processes' CPU does not skew.
                let redo = r.disturbed && !cell.idle && attempt < ctx.plan.max_redo;
                eprintln!("  {}", summary_line(cell, &r));
                if redo {
                    eprintln!(
                        "    disturbed: {:.2} cores used by other processes ({}); redoing",
                        r.others_cpu_s / r.wall_s.max(1e-9),
                        r.others_top
                            .iter()
                            .map(|(n, s)| format!("{n} {s:.2}s"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    attempt += 1;
                    continue;
                }
                runs.push(r);
                break;
            }
        }
    }
    CellResult {
        cell: cell.clone(),
        skipped: None,
        runs,
    }
}

fn summary_line(cell: &Cell, r: &RunRecord) -> String {
    if let Some(e) = &r.error {
        return format!(
            "{:<8} {:<14} rep {} ERROR {e}",
            r.proxy.name(),
            cell.id,
            r.rep
        );
    }
    if let Some(i) = &r.idle {
        return format!(
            "{:<8} {:<14} rep {} {} conns open ({} errors), {:.0} B/conn, RSS {:.1} MiB",
            r.proxy.name(),
            cell.id,
            r.rep,
            i.opened,
            i.errors,
            i.bytes_per_conn,
            r.rss_bytes as f64 / 1048576.0
        );
    }
    let l = r.load.as_ref();
    format!(
        "{:<8} {:<14} rep {} {:>9.0} req/s p99 {:>8.0}us cpu/req {:.2}+{:.2}us cores {} bound={} errors={}{}",
        r.proxy.name(),
        cell.id,
        r.rep,
        l.map(|l| l.rps).unwrap_or(0.0),
        l.and_then(|l| l.latency_us.p99).unwrap_or(f64::NAN),
        r.user_us_per_req.unwrap_or(f64::NAN),
        r.sys_us_per_req.unwrap_or(f64::NAN),
        r.core_busy.iter().map(|b| format!("{:.0}%", b * 100.0)).collect::<Vec<_>>().join("/"),
        r.bottleneck,
        l.map(|l| l.total_errors()).unwrap_or(0),
        if r.disturbed { " DISTURBED" } else { "" }
    )
}

fn run_once(ctx: &mut Ctx, cell: &Cell, proxy: ProxyKind, rep: usize, attempt: usize) -> RunRecord {
    let dir = ctx
        .tmp
        .join(format!("{}-{}-{rep}-{attempt}", cell.id, proxy.name()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return RunRecord::failed(proxy, rep, attempt, format!("temp dir: {e}"));
    }
    let mut ups = match upstreams::start(&UpstreamSpec {
        kind: ctx.upstream,
        loadgen: &ctx.loadgen,
        nginx: &ctx.nginx,
        dir: &dir,
        body: cell.body,
        chunk: cell.chunk,
        cacheable: cell.cache,
        cpus: &ctx.load_cpus,
        count: 2,
    }) {
        Ok(u) => u,
        Err(e) => return RunRecord::failed(proxy, rep, attempt, format!("upstreams: {e}")),
    };
    let listen = match peers::free_port() {
        Ok(a) => a,
        Err(e) => return RunRecord::failed(proxy, rep, attempt, format!("port: {e}")),
    };
    let addrs = ups.addrs.clone();
    let spec = ProxySpec {
        kind: proxy,
        bin: ctx.proxy_bin(proxy),
        dir: &dir,
        listen,
        upstreams: &addrs,
        cpus: &ctx.proxy_cpus,
        conns: cell.conns,
        huge_pages: cell.huge_pages,
        tls: cell.tls.and(ctx.tls.as_ref()),
        cache: cell.cache,
        access_log: cell.access_log,
    };
    let running = match peers::start(&spec, Duration::from_secs(10)) {
        Ok(p) => p,
        Err(e) => {
            ups.stop();
            return RunRecord::failed(proxy, rep, attempt, e);
        }
    };
    let mut rec = RunRecord::failed(proxy, rep, attempt, String::new());
    rec.error = None;
    let scheme = if cell.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{listen}/");
    let close = cell.tls == Some(TlsLoad::Handshake);
    let json = dir.join("load.json");

    // Warm-up: fills the proxies' upstream pools and the caches; not measured.
    if !cell.idle && ctx.plan.warmup_s > 0.0 {
        let w = LoadSpec {
            kind: ctx.driver,
            bin: ctx.driver_bin(),
            url: &url,
            conns: cell.conns,
            duration: ctx.plan.warmup(),
            rate: cell.rate,
            cpus: &ctx.load_cpus,
            json_path: &json,
            close,
        };
        match driver::run(&w) {
            Ok(l) => rec.warmup_responses = l.responses,
            Err(e) => rec.error = Some(format!("warm-up: {e}")),
        }
    }

    let all0 = procs::all_procs();
    let tree = procs::tree(running.pid(), &all0);
    rec.proxy_pids = tree.clone();
    let cpu0 = procs::cpu_ticks(&tree);
    let cores0 = procs::core_ticks();
    let t0 = Instant::now();
    let mut perf = start_perf(ctx, proxy, running.pid(), cell);
    rec.perf = perf.is_some();

    let mut idle_streams = None;
    if rec.error.is_none() {
        if cell.idle {
            let (rss_before, _) = procs::rss(&tree);
            let t = Instant::now();
            let conns = crate::idle::open(listen, cell.conns, 4, &ctx.load_cpus);
            let open_s = t.elapsed().as_secs_f64();
            // Let the proxy finish what it does after a response (pool check-in,
            // buffer release) before its memory is read.
            std::thread::sleep(Duration::from_millis(300));
            let (rss_after, _) = procs::rss(&tree);
            let opened = conns.streams.len();
            rec.idle = Some(IdleRecord {
                opened,
                errors: conns.errors,
                first_error: conns.first_error.clone(),
                rss_before,
                rss_after,
                bytes_per_conn: if opened > 0 {
                    rss_after.saturating_sub(rss_before) as f64 / opened as f64
                } else {
                    0.0
                },
                open_s,
            });
            idle_streams = Some(conns.streams);
        } else {
            let spec = LoadSpec {
                kind: ctx.driver,
                bin: ctx.driver_bin(),
                url: &url,
                conns: cell.conns,
                duration: ctx.plan.duration(),
                rate: cell.rate,
                cpus: &ctx.load_cpus,
                json_path: &json,
                close,
            };
            match driver::run(&spec) {
                Ok(l) => rec.load = Some(l),
                Err(e) => rec.error = Some(e),
            }
        }
    }

    if let Some(p) = perf.as_mut() {
        procs::signal(p.id(), libc::SIGINT);
        let _ = p.wait();
        ctx.perf_done = true;
    }
    rec.wall_s = t0.elapsed().as_secs_f64();
    let cpu1 = procs::cpu_ticks(&tree);
    let cores1 = procs::core_ticks();
    let all1 = procs::all_procs();
    let (rss, hwm) = procs::rss(&tree);
    rec.rss_bytes = rss;
    rec.rss_hwm_bytes = hwm;
    drop(idle_streams);

    let tck = procs::clk_tck();
    rec.proxy_user_s = cpu1.0.saturating_sub(cpu0.0) as f64 / tck;
    rec.proxy_sys_s = cpu1.1.saturating_sub(cpu0.1) as f64 / tck;
    if let Some(l) = &rec.load {
        if l.responses > 0 {
            let n = l.responses as f64;
            rec.user_us_per_req = Some(rec.proxy_user_s * 1e6 / n);
            rec.sys_us_per_req = Some(rec.proxy_sys_s * 1e6 / n);
            rec.total_us_per_req = Some((rec.proxy_user_s + rec.proxy_sys_s) * 1e6 / n);
        }
    }
    rec.core_busy = procs::busy_share(&cores0, &cores1);
    let mean = |cpus: &[usize]| {
        let v: Vec<f64> = cpus
            .iter()
            .filter_map(|c| rec.core_busy.get(*c).copied())
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    rec.proxy_busy = mean(&ctx.proxy_cpus);
    rec.load_busy = mean(&ctx.load_cpus);
    rec.bottleneck = match (rec.proxy_busy >= 0.9, rec.load_busy >= 0.9) {
        (true, true) => "both",
        (true, false) => "proxy",
        (false, true) => "load",
        (false, false) => "neither",
    }
    .into();

    // Our processes: the proxy tree, the upstreams, this harness and what it ran
    // (the driver has exited by now and so is not in the table).
    let mut ours = tree.clone();
    for pid in ups.pids() {
        ours.extend(procs::tree(pid, &all1));
    }
    ours.extend(procs::tree(std::process::id(), &all1));
    let o = procs::others(&all0, &all1, &ours);
    rec.others_cpu_s = o.user_procs_s;
    rec.others_top = o.top;
    rec.kthreads_cpu_s = o.kthreads_s;
    rec.disturbed = rec.wall_s > 0.0 && o.user_procs_s / rec.wall_s > ctx.disturb_cores;

    let up_ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    rec.upstream_conns_kernel = Some(procs::tcp_conns_to(&up_ports) as u64);
    rec.proxy_exit = running.stop();
    rec.upstream = ups.stop();
    // Preference: the upstream servers' own count, then the kernel's TCP table,
    // then the proxy's own report.
    rec.upstream_opened = rec
        .upstream
        .connections
        .or(rec.upstream_conns_kernel)
        .or(rec.proxy_exit.upstream_opened);
    // Requests the upstreams served: the readiness probe, the warm-up and the run.
    let served = rec.upstream.requests.unwrap_or_else(|| {
        1 + rec.warmup_responses
            + rec.load.as_ref().map(|l| l.responses).unwrap_or(0)
            + rec.idle.as_ref().map(|i| i.opened as u64).unwrap_or(0)
    });
    rec.reuse_ratio = rec
        .upstream_opened
        .filter(|_| served > 0)
        .map(|o| 1.0 - o as f64 / served as f64);
    if rec.error.is_none() && rec.load.is_none() && rec.idle.is_none() {
        rec.error = Some("no result".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    rec
}

/// `perf record` attached to Ringway for the measured part of its first run.
fn start_perf(ctx: &Ctx, proxy: ProxyKind, pid: u32, cell: &Cell) -> Option<Child> {
    let out = ctx.perf_data.as_ref()?;
    if ctx.perf_done || proxy != ProxyKind::Ringway || cell.idle {
        return None;
    }
    let child = Command::new("perf")
        .args(["record", "-F", "999", "--call-graph"])
        .arg(&ctx.perf_call_graph)
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    match child {
        Ok(c) => {
            // perf needs a moment to attach before the load starts.
            std::thread::sleep(Duration::from_millis(300));
            Some(c)
        }
        Err(e) => {
            eprintln!("perf record: {e}");
            None
        }
    }
}
