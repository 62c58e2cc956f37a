//! The proxies under test: config writers for Ringway, nginx and HAProxy, and a
//! running-proxy handle (start, wait until it accepts, stop, read its counters).
//!
//! Each peer is configured the way its own documentation recommends for a
//! keep-alive reverse proxy, so the comparison is against a well-tuned peer:
//! nginx with an upstream `keepalive` pool sized to the concurrency and HTTP/1.1 to
//! the upstream; HAProxy with `http-reuse always`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::ProxyKind;
use crate::procs;

/// What a proxy config depends on.
pub struct ProxySpec<'a> {
    pub kind: ProxyKind,
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub listen: SocketAddr,
    pub upstreams: &'a [SocketAddr],
    pub cpus: &'a [usize],
    /// Client connections the cell opens; pools and limits are sized from it.
    pub conns: usize,
    /// Ringway's `runtime.transparent_huge_pages`.
    pub huge_pages: bool,
    /// Terminate TLS with this certificate.
    pub tls: Option<&'a crate::tls::TlsFiles>,
    /// Cache the upstream's responses in memory (the cache-hit cells).
    pub cache: bool,
    /// Write an access log line per request to a file in `dir` (the access-log cells).
    pub access_log: bool,
}

/// Writes the proxy's config file into `spec.dir` and returns its path (the floor relay takes
/// its few settings as arguments; its "config" is a note of them).
pub fn write_config(spec: &ProxySpec) -> io::Result<PathBuf> {
    let (name, text) = match spec.kind {
        ProxyKind::Ringway | ProxyKind::RingwayPgo => ("ringway.toml", ringway_config(spec)),
        ProxyKind::Nginx => ("nginx.conf", nginx_config(spec)),
        ProxyKind::Haproxy => ("haproxy.cfg", haproxy_config(spec)),
        ProxyKind::Floor | ProxyKind::FloorRaw => ("floor.args", floor_args(spec).join(" ")),
    };
    let path = spec.dir.join(name);
    fs::write(&path, text)?;
    Ok(path)
}

fn ringway_config(s: &ProxySpec) -> String {
    let cpus: Vec<String> = s.cpus.iter().map(|c| c.to_string()).collect();
    let servers: Vec<String> = s.upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "# Written by bench: one worker per proxy CPU, round-robin over the upstreams.\n\
         [runtime]\nworkers = {}\ncpus = [{}]\n{}\n\
         [[listener]]\nbind = \"{}\"\n{}\n\
         [upstream.backend]\nservers = [{}]\nbalance = \"round_robin\"\nmax_idle = {}\n\n\
         {}{}[[route]]\nupstream = \"backend\"\n{}",
        s.cpus.len().max(1),
        cpus.join(", "),
        // Written only when off, so the file stays the one every earlier run used.
        if s.huge_pages {
            ""
        } else {
            "transparent_huge_pages = false\n"
        },
        s.listen,
        s.tls.map_or(String::new(), |t| format!(
            "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
            t.cert, t.key
        )),
        servers.join(", "),
        s.conns.max(1024),
        // No status header: the peers add none either.
        if s.cache {
            "[cache.bench]\nmax_size = \"256MiB\"\nstatus_header = \"\"\n\n"
        } else {
            ""
        },
        // nginx's combined format and 64 KiB buffer, as nginx writes it below.
        if s.access_log {
            format!("[access_log]\npath = {:?}\n\n", s.dir.join("access.log"))
        } else {
            String::new()
        },
        if s.cache { "cache = \"bench\"\n" } else { "" },
    )
}

/// `loadgen relay` (or `raw-relay`) arguments: client connections spread over the upstreams in
/// turn.
fn floor_args(s: &ProxySpec) -> Vec<String> {
    let sub = if s.kind == ProxyKind::FloorRaw {
        "raw-relay"
    } else {
        "relay"
    };
    let mut args = vec![sub.to_string(), "--bind".into(), s.listen.to_string()];
    for u in s.upstreams {
        args.push("--upstream".into());
        args.push(u.to_string());
    }
    let cpus: Vec<String> = s.cpus.iter().map(|c| c.to_string()).collect();
    if !cpus.is_empty() {
        args.push("--cpus".into());
        args.push(cpus.join(","));
    }
    args
}

fn nginx_config(s: &ProxySpec) -> String {
    let d = s.dir.display();
    // worker_cpu_affinity takes one bit mask per worker, rightmost bit = CPU 0.
    let masks: Vec<String> = s.cpus.iter().map(|&c| cpu_mask(c)).collect();
    let mut servers = String::new();
    for a in s.upstreams {
        let _ = writeln!(servers, "        server {a};");
    }
    format!(
        "# Written by bench.\n\
         user root;\n\
         worker_processes {workers};\n\
         worker_cpu_affinity {masks};\n\
         worker_rlimit_nofile 20000;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 19000; }}\n\
         http {{\n\
         \x20   {access_log}\n\
         \x20   client_body_temp_path {d}/body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         {cache_path}\
         \x20   # Clients keep their connections for the whole run, as with the other proxies.\n\
         \x20   keepalive_requests 100000000;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20   upstream backend {{\n\
         {servers}\
         \x20       keepalive {pool};\n\
         \x20       keepalive_requests 100000000;\n\
         \x20       keepalive_timeout 300s;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {listen}{ssl} backlog=4096;\n\
         {certs}\
         \x20       location / {{\n\
         \x20           proxy_pass http://backend;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           # Stream large bodies through memory buffers, never via temp files.\n\
         \x20           proxy_max_temp_file_size 0;\n\
         {cache_use}\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        workers = s.cpus.len().max(1),
        masks = masks.join(" "),
        access_log = if s.access_log {
            format!("access_log {d}/access.log combined buffer=64k;")
        } else {
            "access_log off;".to_string()
        },
        pool = s.conns.max(16),
        // The cache's files are opened through open_file_cache, as nginx advises for hot
        // files: otherwise every hit opens and closes one.
        cache_path = if s.cache {
            format!(
                "    proxy_cache_path {d}/cache levels=1:2 keys_zone=bench:16m max_size=256m inactive=60m use_temp_path=off;\n\
                 \x20   open_file_cache max=1000 inactive=60s;\n"
            )
        } else {
            String::new()
        },
        cache_use = if s.cache {
            "            proxy_cache bench;\n"
        } else {
            ""
        },
        listen = s.listen,
        ssl = if s.tls.is_some() { " ssl" } else { "" },
        // nginx's defaults otherwise: TLS 1.2 and 1.3, session tickets on.
        certs = s.tls.map_or(String::new(), |t| format!(
            "        ssl_certificate {};\n        ssl_certificate_key {};\n",
            t.cert.display(),
            t.key.display()
        )),
    )
}

fn cpu_mask(cpu: usize) -> String {
    let mut m = "0".repeat(cpu + 1);
    m.replace_range(0..1, "1");
    m
}

fn haproxy_config(s: &ProxySpec) -> String {
    let threads = s.cpus.len().max(1);
    let mut cpu_map = String::new();
    for (i, c) in s.cpus.iter().enumerate() {
        let _ = writeln!(cpu_map, "    cpu-map 1/{} {c}", i + 1);
    }
    let mut servers = String::new();
    for (i, a) in s.upstreams.iter().enumerate() {
        let _ = writeln!(servers, "    server s{i} {a}");
    }
    // The open-file hard limit on this class of machine is 20,000; HAProxy reserves
    // about 2 x maxconn sockets, so maxconn is sized to the cell rather than set huge.
    let maxconn = (s.conns + 200).max(2000);
    format!(
        "# Written by bench.\n\
         global\n\
         \x20   nbthread {threads}\n\
         {cpu_map}\
         \x20   maxconn {maxconn}\n\
         \x20   # Warn instead of refusing to start when 2 x maxconn sockets exceed the\n\
         \x20   # open-file hard limit: idle clients hold no server-side socket.\n\
         \x20   no strict-limits\n\
         \x20   pidfile {d}/haproxy.pid\n\
         {log_global}\
         defaults\n\
         \x20   mode http\n\
         \x20   option http-keep-alive\n\
         \x20   http-reuse always\n\
         \x20   maxconn {maxconn}\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 300s\n\
         \x20   timeout server 300s\n\
         \x20   timeout http-keep-alive 300s\n\
         {log_defaults}\
         {cache_section}\
         frontend fe\n\
         \x20   bind {listen}{ssl}\n\
         \x20   default_backend be\n\
         backend be\n\
         \x20   balance roundrobin\n\
         {cache_rules}\
         {servers}",
        d = s.dir.display(),
        listen = s.listen,
        // HAProxy writes no files itself: its log goes to stdout, which the harness sends to
        // a file (HAProxy's documented way to log without syslog).
        log_global = if s.access_log {
            "    log stdout format raw local0\n"
        } else {
            ""
        },
        log_defaults = if s.access_log {
            "    log global\n    option httplog\n"
        } else {
            ""
        },
        // HAProxy's small-object cache, in memory, sized as the others.
        cache_section = if s.cache {
            "cache bench\n    total-max-size 256\n    max-object-size 1048576\n    max-age 3600\n"
        } else {
            ""
        },
        cache_rules = if s.cache {
            "    http-request cache-use bench\n    http-response cache-store bench\n"
        } else {
            ""
        },
        ssl = s.tls.map_or(String::new(), |t| format!(
            " ssl crt {} alpn http/1.1",
            t.combined.display()
        )),
    )
}

/// A proxy process this harness started.
pub struct RunningProxy {
    pub child: Child,
    pub stderr_path: PathBuf,
}

/// Starts the proxy and waits until its port accepts connections.
pub fn start(spec: &ProxySpec, deadline: Duration) -> Result<RunningProxy, String> {
    let cfg =
        write_config(spec).map_err(|e| format!("writing {} config: {e}", spec.kind.name()))?;
    let mut cmd = Command::new(spec.bin);
    match spec.kind {
        ProxyKind::Ringway | ProxyKind::RingwayPgo => {
            cmd.arg("--config").arg(&cfg);
        }
        ProxyKind::Nginx => {
            cmd.arg("-c").arg(&cfg).arg("-g").arg("daemon off;");
            // nginx refuses to start if its temp path parents are missing.
            let _ = fs::create_dir_all(spec.dir);
        }
        ProxyKind::Haproxy => {
            cmd.arg("-f").arg(&cfg).arg("-db");
        }
        ProxyKind::Floor | ProxyKind::FloorRaw => {
            cmd.args(floor_args(spec));
        }
    }
    let stderr_path = spec.dir.join(format!("{}.stderr", spec.kind.name()));
    let errf = fs::File::create(&stderr_path).map_err(|e| format!("stderr file: {e}"))?;
    let outf = errf.try_clone().map_err(|e| format!("stderr file: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(outf).stderr(errf);
    let mut child = procs::spawn_pinned(&mut cmd, spec.cpus).map_err(|e| {
        format!(
            "starting {} ({}): {e}",
            spec.kind.name(),
            spec.bin.display()
        )
    })?;
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let log = fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!(
                "{} exited at start ({st}): {}",
                spec.kind.name(),
                tail(&log, 600)
            ));
        }
        // Ready means one request answered end to end, not just a port that accepts.
        let probe = match spec.tls {
            Some(files) => crate::tls::one(spec.listen, files),
            None => crate::idle::one(spec.listen).map(drop),
        };
        let last = match probe {
            Ok(()) => break,
            Err(e) => e,
        };
        if Instant::now() > end {
            procs::stop(&mut child, Duration::from_secs(2));
            return Err(format!(
                "{} did not answer a request on {} in time: {last}",
                spec.kind.name(),
                spec.listen
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(RunningProxy { child, stderr_path })
}

/// What a proxy said about itself when it stopped.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ProxyExit {
    pub exit_code: Option<i32>,
    /// Upstream connections opened and reused, summed over workers (Ringway only).
    pub upstream_opened: Option<u64>,
    pub upstream_reused: Option<u64>,
    pub stderr_tail: String,
}

impl RunningProxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) -> ProxyExit {
        let st = procs::stop(&mut self.child, Duration::from_secs(10));
        let log = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let (opened, reused) = parse_ringway_counters(&log);
        ProxyExit {
            exit_code: st.and_then(|s| s.code()),
            upstream_opened: opened,
            upstream_reused: reused,
            stderr_tail: tail(&log, 400),
        }
    }
}

/// Sums `worker N: upstream connections opened=N reused=M` lines.
pub fn parse_ringway_counters(log: &str) -> (Option<u64>, Option<u64>) {
    let mut opened = None;
    let mut reused = None;
    for line in log.lines() {
        if !line.contains("upstream connections") {
            continue;
        }
        for tok in line.split_whitespace() {
            if let Some(v) = tok
                .strip_prefix("opened=")
                .and_then(|v| v.parse::<u64>().ok())
            {
                *opened.get_or_insert(0) += v;
            }
            if let Some(v) = tok
                .strip_prefix("reused=")
                .and_then(|v| v.parse::<u64>().ok())
            {
                *reused.get_or_insert(0) += v;
            }
        }
    }
    (opened, reused)
}

pub fn tail(s: &str, n: usize) -> String {
    let t = s.trim();
    let start = t.len().saturating_sub(n);
    let mut i = start;
    while !t.is_char_boundary(i) {
        i += 1;
    }
    t[i..].to_string()
}

/// A free loopback port (bound and released; the proxy binds it right after).
pub fn free_port() -> io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(cpu_mask(0), "1");
        assert_eq!(cpu_mask(2), "100");
    }

    #[test]
    fn counters() {
        let log = "x\nworker 0: upstream connections opened=3 reused=97\nworker 1: upstream connections opened=2 reused=8\n";
        assert_eq!(parse_ringway_counters(log), (Some(5), Some(105)));
        assert_eq!(parse_ringway_counters("nothing"), (None, None));
    }

    #[test]
    fn configs_mention_everything() {
        let ups: Vec<SocketAddr> = vec![
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        ];
        let dir = std::env::temp_dir().join(format!("bench-peers-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = crate::tls::write(&dir).unwrap();
        for kind in [
            ProxyKind::Ringway,
            ProxyKind::RingwayPgo,
            ProxyKind::Nginx,
            ProxyKind::Haproxy,
            ProxyKind::Floor,
            ProxyKind::FloorRaw,
        ] {
            let spec = ProxySpec {
                kind,
                bin: Path::new("x"),
                dir: &dir,
                listen: "127.0.0.1:8000".parse().unwrap(),
                upstreams: &ups,
                cpus: &[0],
                conns: 200,
                huge_pages: true,
                tls: None,
                cache: false,
                access_log: false,
            };
            let text = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => ringway_config(&spec),
                ProxyKind::Nginx => nginx_config(&spec),
                ProxyKind::Haproxy => haproxy_config(&spec),
                ProxyKind::Floor | ProxyKind::FloorRaw => floor_args(&spec).join(" "),
            };
            assert!(text.contains("127.0.0.1:9002"), "{text}");
            assert!(text.contains("127.0.0.1:8000"), "{text}");
            // Only the huge-pages-off idle cell writes the key, as `false`.
            if kind.is_ringway() {
                assert!(!text.contains("transparent_huge_pages"), "{text}");
                let off = ringway_config(&ProxySpec {
                    huge_pages: false,
                    ..spec
                });
                assert!(off.contains("transparent_huge_pages = false\n"), "{off}");
            }
            // With a certificate, each peer terminates TLS with it.
            let tls = ProxySpec {
                tls: Some(&files),
                ..spec
            };
            let wanted: Vec<String> = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => vec![format!(
                    "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
                    files.cert, files.key
                )],
                ProxyKind::Nginx => vec![
                    "listen 127.0.0.1:8000 ssl ".into(),
                    format!("ssl_certificate {};", files.cert.display()),
                    format!("ssl_certificate_key {};", files.key.display()),
                ],
                ProxyKind::Haproxy => vec![format!(
                    "bind 127.0.0.1:8000 ssl crt {} alpn http/1.1\n",
                    files.combined.display()
                )],
                ProxyKind::Floor | ProxyKind::FloorRaw => Vec::new(),
            };
            let with_tls = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => ringway_config(&tls),
                ProxyKind::Nginx => nginx_config(&tls),
                ProxyKind::Haproxy => haproxy_config(&tls),
                ProxyKind::Floor | ProxyKind::FloorRaw => String::new(),
            };
            for w in &wanted {
                assert!(with_tls.contains(w.as_str()), "{w:?} not in\n{with_tls}");
                assert!(!text.contains(w.as_str()), "{w:?} without TLS");
            }
            // With a cache, each peer caches in memory.
            let cached = ProxySpec {
                cache: true,
                ..spec
            };
            let wanted: &[&str] = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => {
                    &["[cache.bench]\n", "cache = \"bench\"\n"]
                }
                ProxyKind::Nginx => &["keys_zone=bench:", "proxy_cache bench;"],
                ProxyKind::Haproxy => &["cache bench\n", "cache-use bench", "cache-store bench"],
                ProxyKind::Floor | ProxyKind::FloorRaw => &[],
            };
            let with_cache = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => ringway_config(&cached),
                ProxyKind::Nginx => nginx_config(&cached),
                ProxyKind::Haproxy => haproxy_config(&cached),
                ProxyKind::Floor | ProxyKind::FloorRaw => String::new(),
            };
            for w in wanted {
                assert!(with_cache.contains(w), "{w:?} not in\n{with_cache}");
                assert!(!text.contains(w), "{w:?} without a cache");
            }
            // With the access log, each peer writes a line per request.
            let logged = ProxySpec {
                access_log: true,
                ..spec
            };
            let wanted: &[&str] = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => &["[access_log]\npath = "],
                ProxyKind::Nginx => &["combined buffer=64k;"],
                ProxyKind::Haproxy => &["log stdout format raw", "option httplog"],
                ProxyKind::Floor | ProxyKind::FloorRaw => &[],
            };
            let with_log = match kind {
                ProxyKind::Ringway | ProxyKind::RingwayPgo => ringway_config(&logged),
                ProxyKind::Nginx => nginx_config(&logged),
                ProxyKind::Haproxy => haproxy_config(&logged),
                ProxyKind::Floor | ProxyKind::FloorRaw => String::new(),
            };
            for w in wanted {
                assert!(with_log.contains(w), "{w:?} not in\n{with_log}");
                assert!(!text.contains(w), "{w:?} without a log");
            }
            // Each floor runs its own relay.
            match kind {
                ProxyKind::Floor => assert!(text.starts_with("relay "), "{text}"),
                ProxyKind::FloorRaw => assert!(text.starts_with("raw-relay "), "{text}"),
                _ => {}
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
