//! `loadgen`: command line for the load generator (`loadgen [OPTIONS] URL...`) and its
//! fixed-response origin (`loadgen serve`). Parses and validates, then hands off.

mod client;
mod http;
mod raw_relay;
mod relay;
mod report;
mod runtime;
mod serve;
mod stats;
mod target;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Thread-per-core io_uring HTTP/1.1 load generator with coordinated-omission correction",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fixed-response HTTP/1.1 keep-alive origin.
    Serve(ServeArgs),
    /// Featureless HTTP/1.1 relay (one upstream connection per client, heads forwarded as is):
    /// the floor of proxy CPU per request that `bench` reports next to the proxies.
    Relay(RelayArgs),
    /// The same relay written directly on io_uring, without an async runtime: the user-space
    /// CPU floor of relaying a request, to tell runtime overhead from the work itself.
    RawRelay(RawRelayArgs),
}

#[derive(Args)]
struct RawRelayArgs {
    #[command(flatten)]
    relay: RelayArgs,
    /// io_uring variants to measure what each saves in the kernel, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    kernel: Vec<raw_relay::Knob>,
}

#[derive(Args)]
struct RelayArgs {
    /// Address to listen on; port 0 picks a free one (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
    /// Upstream to relay to (repeatable: client connections take them in turn).
    #[arg(long, required = true)]
    upstream: Vec<std::net::SocketAddr>,
    /// Runtime threads (default: one per --cpus entry, else 1).
    #[arg(long)]
    threads: Option<usize>,
    /// CPUs to pin the threads to.
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<CpuList>,
}

#[derive(Args)]
struct RunArgs {
    /// Target URLs, http:// or https://, each optionally weighted as URL@WEIGHT.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Connections, spread over the threads.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Measured duration (after warmup); default 10s unless -n is given.
    #[arg(short = 'd', long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Exact number of measured requests instead of a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Runtime threads (default: one per --cpus entry, else 1).
    #[arg(long)]
    threads: Option<usize>,
    /// CPUs to pin the threads to, e.g. 1,2 or 2-5 (threads take them in turn).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// Load before the measured window, excluded from all figures.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Requests written back to back per connection before reading responses (closed loop).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// Extra request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request body: a file path if such a file exists, else the literal string.
    #[arg(long, value_name = "FILE|STRING")]
    body: Option<String>,
    /// Per-request timeout.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Skip TLS certificate verification (self-signed test upstreams).
    #[arg(long)]
    insecure: bool,
    /// Open loop: this many requests per second over all connections, latency measured from the
    /// intended send time.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Write every figure and the full percentile distribution as JSON to FILE ('-' = stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram per second, nanoseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: std::net::SocketAddr,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// Send the body chunked (Transfer-Encoding: chunked) in chunks of this many bytes; 0
    /// sends it with Content-Length.
    #[arg(long, default_value_t = 0)]
    chunk_size: usize,
    /// A header line to add to every response, "Name: value" (repeatable), e.g.
    /// "Cache-Control: max-age=3600" for a proxy's cache to keep.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<String>,
    /// Delay before each batch of responses.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    delay: Duration,
    /// Runtime threads (default: one per --cpus entry, else 1).
    #[arg(long)]
    threads: Option<usize>,
    /// CPUs to pin the threads to.
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// Response status code.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Stall all responses once, after this many requests have arrived (with --stall).
    #[arg(long, value_name = "N")]
    stall_after: Option<u64>,
    /// How long the one stall lasts.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    stall: Duration,
    /// Answer every Nth request with a TCP reset (SO_LINGER 0, then close).
    #[arg(long, value_name = "N")]
    reset_every: Option<u64>,
    /// Count requests; on SIGTERM or SIGINT print `served N requests` on stdout and exit.
    #[arg(long)]
    count: bool,
}

/// A response header line as given: a token, a colon, and a value without line breaks.
fn parse_header(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} has no ':'"))?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) || value.contains(['\r', '\n']) {
        return Err(format!("header {s:?} is not \"Name: value\""));
    }
    Ok(format!("{name}: {}", value.trim()))
}

#[derive(Clone, Debug)]
struct CpuList(Vec<usize>);

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad CPU '{x}'"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("bad CPU range '{part}'"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(CpuList(out))
}

/// `10s`, `500ms`, `250us`, `2m`, `1.5s`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("bad duration '{s}'"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "bad duration unit in '{s}' (use ns, us, ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration '{s}'"))
}

fn threads_for(threads: Option<usize>, cpus: &Option<CpuList>) -> usize {
    threads
        .or(cpus.as_ref().map(|c| c.0.len()))
        .unwrap_or(1)
        .max(1)
}

/// Many connections need many descriptors: lift the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn relay_cmd(raw: Option<raw_relay::Knobs>, a: RelayArgs) -> Result<(), String> {
    let threads = threads_for(a.threads, &a.cpus);
    relay::relay(raw, a.bind, a.upstream, threads, a.cpus.map(|c| c.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    let res = match cli.cmd {
        Some(Cmd::Serve(a)) => serve::serve(serve::ServeConfig {
            bind: a.bind,
            body_size: a.body_size,
            chunk_size: a.chunk_size,
            headers: a.headers,
            delay: a.delay,
            threads: threads_for(a.threads, &a.cpus),
            cpus: a.cpus.map(|c| c.0),
            status: a.status,
            stall_after: a.stall_after,
            stall: a.stall,
            reset_every: a.reset_every,
            count: a.count,
        }),
        Some(Cmd::Relay(a)) => relay_cmd(None, a),
        Some(Cmd::RawRelay(a)) => relay_cmd(Some(raw_relay::Knobs::from(&a.kernel[..])), a.relay),
        None => run(cli.run),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: RunArgs) -> Result<(), String> {
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number".into());
        }
    }
    if a.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if a.rate.is_some() && a.pipeline > 1 {
        eprintln!(
            "note: --pipeline is ignored in open loop (one request in flight per connection)"
        );
    }
    let threads = threads_for(a.threads, &a.cpus).min(a.connections);
    let urls = a
        .urls
        .iter()
        .map(|u| target::Url::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let headers = a
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| format!("bad header '{h}' (want 'Name: value')"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &a.body {
        None => Vec::new(),
        Some(b) if std::path::Path::new(b).is_file() => {
            std::fs::read(b).map_err(|e| format!("reading body file {b}: {e}"))?
        }
        Some(b) => b.clone().into_bytes(),
    };
    let method = a.method.to_ascii_uppercase();
    let origins = target::build_origins(
        &urls,
        &target::RequestSpec {
            method: &method,
            headers: &headers,
            body: &body,
        },
    )?;
    let tls = if origins.iter().any(|o| o.tls) {
        // Validate SNI names now: the threads assume they parse.
        for o in origins.iter().filter(|o| o.tls) {
            client::server_name(&o.host)?;
        }
        Some(client::tls_config(a.insecure)?)
    } else {
        None
    };
    let duration = match (a.duration, a.requests) {
        (d, None) => Some(d.unwrap_or(Duration::from_secs(10))),
        (_, Some(_)) => None,
    };
    let cfg: &'static client::RunConfig = Box::leak(Box::new(client::RunConfig {
        origins,
        connections: a.connections,
        threads,
        cpus: a.cpus.map(|c| c.0),
        pipeline: a.pipeline,
        rate: a.rate,
        duration,
        requests: a.requests,
        warmup: a.warmup,
        timeout: a.timeout,
        tls,
    }));

    let quiet = a.quiet;
    let warmup = a.warmup;
    let result = client::run(cfg, |iv| {
        // The last interval is usually a sliver after the end; it would only print noise.
        if !quiet && iv.length >= Duration::from_millis(200) {
            eprintln!("{}", report::progress_line(iv, warmup));
        }
    });
    let info = report::RunInfo {
        urls: a.urls.clone(),
        connections: a.connections,
        threads,
        target_rps: a.rate,
    };
    let doc = report::JsonReport::new(&info, &result);
    let json_to_stdout = a.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let mut out = std::io::stdout().lock();
    if json_to_stdout {
        // Keep stdout parseable; the warning still reaches a human on stderr.
        if let Some(w) = doc.shortfall() {
            eprintln!("{w}");
        }
    } else {
        report::table(&doc, &mut out).map_err(|e| format!("writing report: {e}"))?;
    }
    let _ = out.flush();
    drop(out);
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("JSON: {e}"))?;
        if json_to_stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(|e| format!("writing JSON: {e}"))?;
        } else {
            std::fs::write(path, text + "\n")
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
    }
    if let Some(path) = &a.hdr_log {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?,
        );
        report::hdr_log(&result, &mut f)
            .and_then(|()| f.flush())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cpu_lists() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_cpus("1,3-5").map(|c| c.0), Ok(vec![1, 3, 4, 5]));
        assert!(parse_cpus("5-3").is_err());
    }
}
