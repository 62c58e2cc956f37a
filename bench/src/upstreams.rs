//! The two upstream servers every proxy forwards to, round-robin.
//!
//! Default is `loadgen serve`, which reports on exit how many connections and
//! requests it saw: that is how upstream connection reuse is measured for every
//! proxy alike. nginx serving a static file is a fallback for when loadgen is not
//! built; it cannot report those counts.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::UpstreamKind;
use crate::peers;
use crate::procs;

/// Upstream counters when the servers stopped.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UpstreamCounts {
    /// Connections accepted, summed over the servers; None when a server did not say.
    pub connections: Option<u64>,
    pub requests: Option<u64>,
}

struct Server {
    child: Child,
    lines: Option<JoinHandle<Vec<String>>>,
}

pub struct Upstreams {
    pub addrs: Vec<SocketAddr>,
    servers: Vec<Server>,
}

pub struct UpstreamSpec<'a> {
    pub kind: UpstreamKind,
    pub loadgen: &'a Path,
    pub nginx: &'a Path,
    pub dir: &'a Path,
    pub body: usize,
    /// When not 0, the body is sent chunked in pieces of this size.
    pub chunk: usize,
    /// Responses say a shared cache may keep them for an hour.
    pub cacheable: bool,
    pub cpus: &'a [usize],
    pub count: usize,
}

/// The header that lets the proxies cache the cache cells' responses.
pub const CACHEABLE: &str = "Cache-Control: public, max-age=3600";

pub fn start(spec: &UpstreamSpec) -> Result<Upstreams, String> {
    match spec.kind {
        UpstreamKind::Loadgen => start_loadgen(spec),
        UpstreamKind::Nginx => start_nginx(spec),
    }
}

fn start_loadgen(spec: &UpstreamSpec) -> Result<Upstreams, String> {
    let mut ups = Upstreams {
        addrs: Vec::new(),
        servers: Vec::new(),
    };
    let cpus: Vec<String> = spec.cpus.iter().map(|c| c.to_string()).collect();
    for _ in 0..spec.count {
        let mut cmd = Command::new(spec.loadgen);
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--body-size"])
            .arg(spec.body.to_string())
            .arg("--chunk-size")
            .arg(spec.chunk.to_string())
            .args(if spec.cacheable {
                &["--header", CACHEABLE][..]
            } else {
                &[]
            })
            .args(["--threads", "1", "--cpus"])
            .arg(cpus.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = procs::spawn_pinned(&mut cmd, spec.cpus)
            .map_err(|e| format!("starting loadgen serve ({}): {e}", spec.loadgen.display()))?;
        let Some(out) = child.stdout.take() else {
            procs::stop(&mut child, Duration::from_secs(1));
            return Err("loadgen serve: no stdout".into());
        };
        // A reader thread hands over the first line (the address) and keeps the
        // rest, where the exit counters are printed.
        let (tx, rx) = mpsc::channel::<String>();
        let h = std::thread::spawn(move || {
            let mut rest = Vec::new();
            let mut first = true;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if first {
                    let _ = tx.send(line);
                    first = false;
                } else {
                    rest.push(line);
                }
            }
            rest
        });
        let line = rx.recv_timeout(Duration::from_secs(5));
        let addr = line
            .as_deref()
            .ok()
            .and_then(|l| l.trim().strip_prefix("listening on "))
            .and_then(|a| a.trim().parse::<SocketAddr>().ok());
        ups.servers.push(Server {
            child,
            lines: Some(h),
        });
        match addr {
            Some(a) => ups.addrs.push(a),
            None => {
                ups.stop();
                return Err(format!(
                    "loadgen serve did not print `listening on ADDR` (got {:?})",
                    line.ok()
                ));
            }
        }
    }
    Ok(ups)
}

fn start_nginx(spec: &UpstreamSpec) -> Result<Upstreams, String> {
    if spec.chunk > 0 {
        return Err("an nginx origin serves files with Content-Length, not chunked".into());
    }
    let d = spec.dir.join("upstream-nginx");
    let www = d.join("www");
    fs::create_dir_all(&www).map_err(|e| e.to_string())?;
    fs::write(www.join("body"), vec![b'x'; spec.body]).map_err(|e| e.to_string())?;
    let mut addrs = Vec::new();
    let mut servers = String::new();
    // nginx as the origin adds Last-Modified and ETag of its own; the header says the rest.
    let cacheable = match spec.cacheable {
        true => {
            let (name, value) = CACHEABLE.split_once(": ").unwrap_or_default();
            format!(" add_header {name} \"{value}\";")
        }
        false => String::new(),
    };
    for _ in 0..spec.count {
        let a = peers::free_port().map_err(|e| e.to_string())?;
        addrs.push(a);
        servers.push_str(&format!(
            "    server {{ listen {a} backlog=4096; location / {{ root {}; rewrite ^ /body break;{cacheable} }} }}\n",
            www.display()
        ));
    }
    let conf = format!(
        "user root;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {dd}/nginx.pid;\nerror_log {dd}/error.log warn;\n\
         events {{ worker_connections 19000; }}\nhttp {{\n    access_log off;\n    keepalive_requests 100000000;\n    keepalive_timeout 300s;\n\
         \x20   default_type application/octet-stream;\n    client_body_temp_path {dd}/body;\n    proxy_temp_path {dd}/proxy;\n\
         \x20   fastcgi_temp_path {dd}/fastcgi;\n    uwsgi_temp_path {dd}/uwsgi;\n    scgi_temp_path {dd}/scgi;\n{servers}}}\n",
        dd = d.display()
    );
    let path = d.join("nginx.conf");
    fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(spec.nginx);
    cmd.arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = procs::spawn_pinned(&mut cmd, spec.cpus)
        .map_err(|e| format!("starting nginx upstream: {e}"))?;
    let mut ups = Upstreams {
        addrs: addrs.clone(),
        servers: vec![Server { child, lines: None }],
    };
    let end = Instant::now() + Duration::from_secs(5);
    for a in &addrs {
        while std::net::TcpStream::connect(a).is_err() {
            if Instant::now() > end {
                ups.stop();
                return Err(format!("nginx upstream did not listen on {a}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(ups)
}

impl Upstreams {
    /// PIDs of the upstream processes (their CPU is load-side CPU).
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.child.id()).collect()
    }

    /// Stops every server and sums what each said about connections and requests.
    pub fn stop(&mut self) -> UpstreamCounts {
        let mut counts = UpstreamCounts {
            connections: Some(0),
            requests: Some(0),
        };
        if self.servers.is_empty() {
            return UpstreamCounts::default();
        }
        for s in &mut self.servers {
            // SIGTERM is where `loadgen serve` prints its counters.
            procs::stop(&mut s.child, Duration::from_secs(5));
            let lines = s.lines.take().and_then(|h| h.join().ok());
            let (c, r) = lines
                .as_deref()
                .map(parse_serve_counts)
                .unwrap_or((None, None));
            counts.connections = counts.connections.zip(c).map(|(a, b)| a + b);
            counts.requests = counts.requests.zip(r).map(|(a, b)| a + b);
        }
        self.servers.clear();
        counts
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds `serve: connections=N requests=M`.
pub fn parse_serve_counts(lines: &[String]) -> (Option<u64>, Option<u64>) {
    for l in lines.iter().rev() {
        if let Some(rest) = l.trim().strip_prefix("serve:") {
            let mut c = None;
            let mut r = None;
            for tok in rest.split_whitespace() {
                if let Some(v) = tok.strip_prefix("connections=") {
                    c = v.parse().ok();
                } else if let Some(v) = tok.strip_prefix("requests=") {
                    r = v.parse().ok();
                }
            }
            return (c, r);
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_counts() {
        let l = vec![
            "x".to_string(),
            "serve: connections=12 requests=3400".to_string(),
        ];
        assert_eq!(parse_serve_counts(&l), (Some(12), Some(3400)));
        assert_eq!(parse_serve_counts(&[]), (None, None));
    }
}
