//! Configuration: reads a TOML file (or the built-in default), validates it and turns it into
//! the immutable `Config` model. Every error names the file, the key and the reason.

mod access_log;
mod cache;
mod default;
mod gateway;
mod model;
mod raw;
mod template;
mod tls;
mod units;

pub use access_log::{LogEscape, LogTarget, LogVar};
pub use default::DEFAULT_CONFIG;
pub use model::*;
pub use units::{parse_duration, parse_size};

use crate::gateway::ip_access::{Cidr, IpRules};
use raw::*;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// A config that cannot be used, as `FILE: key.path: reason`.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    parse(&text, &file)
}

/// The built-in default config.
pub fn builtin() -> Config {
    // The default is a constant checked by a unit test, so failing here is a build defect.
    parse(DEFAULT_CONFIG, "<built-in>").expect("built-in config is valid")
}

/// Parses and validates config text; `file` only names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::new(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // toml's message carries a source excerpt over several lines; the first line is the reason.
        let msg = inner.message().trim().replace('\n', "; ");
        let line = inner
            .span()
            .map(|s| format!(" (line {})", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        ConfigError {
            file: file.to_string(),
            key: if key == "." { String::new() } else { key },
            reason: format!("{msg}{line}"),
        }
    })?;
    Validator { file }.config(raw, file)
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        v: Option<&String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|r| self.err(key, r)),
        }
    }

    fn size(&self, key: &str, v: Option<&Size>, default: u64) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(Size::Bytes(n)) if *n >= 0 => Ok(*n as u64),
            Some(Size::Bytes(n)) => Err(self.err(key, format!("size {n} is negative"))),
            Some(Size::Text(s)) => parse_size(s).map_err(|r| self.err(key, r)),
        }
    }

    fn count(
        &self,
        key: &str,
        v: Option<i64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if n >= min as i64 && (n as u64) <= max => Ok(n as u64),
            Some(n) => Err(self.err(key, format!("{n} is out of range ({min}..={max})"))),
        }
    }

    fn addr(&self, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a);
        }
        // Names are resolved once here, at load time, never on a worker thread.
        let mut addrs = s.to_socket_addrs().map_err(|e| {
            self.err(
                key,
                format!("invalid address {s:?}: {e} (expected HOST:PORT)"),
            )
        })?;
        addrs
            .next()
            .ok_or_else(|| self.err(key, format!("address {s:?} resolved to nothing")))
    }

    /// An address no listener so far binds (port 0 may repeat: each gets its own port).
    fn unused_addr(
        &self,
        key: &str,
        s: &str,
        listeners: &[Listener],
    ) -> Result<SocketAddr, ConfigError> {
        let addr = self.addr(key, s)?;
        match listeners
            .iter()
            .find(|l| l.bind == addr && addr.port() != 0)
        {
            Some(l) => Err(self.err(
                key,
                format!("{addr} is already used by listener {:?}", l.name),
            )),
            None => Ok(addr),
        }
    }

    fn config(&self, raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
        let runtime = self.runtime(&raw.runtime)?;
        let http = self.http(&raw.http)?;
        let proxy = self.proxy(&raw.proxy)?;
        if raw.listeners.is_empty() {
            return Err(self.err("listener", "at least one [[listener]] is required"));
        }
        let mut upstreams = Vec::new();
        let mut index = BTreeMap::new();
        for (name, u) in &raw.upstreams {
            index.insert(name.clone(), upstreams.len());
            upstreams.push(self.upstream(name, u)?);
        }
        let mut listeners = Vec::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let key = format!("listener[{i}].bind");
            let bind = self.unused_addr(&key, &l.bind, &listeners)?;
            let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
            let protocol = match (l.protocol.as_deref(), &l.upstream) {
                (None | Some("http"), None) => Protocol::Http,
                (None | Some("http"), Some(_)) => {
                    return Err(self.err(
                        format!("listener[{i}].upstream"),
                        "only a protocol = \"tcp\" listener names an upstream; HTTP listeners use [[route]]",
                    ))
                }
                (Some("tcp"), Some(u)) => match index.get(u) {
                    Some(idx) => Protocol::Tcp(*idx),
                    None => return Err(self.err(format!("listener[{i}].upstream"), format!("unknown upstream {u:?}"))),
                },
                (Some("tcp"), None) => {
                    return Err(self.err(format!("listener[{i}].upstream"), "a tcp listener needs `upstream = \"NAME\"`"))
                }
                (Some(other), _) => {
                    return Err(self.err(
                        format!("listener[{i}].protocol"),
                        format!("unknown protocol {other:?} (known: http, tcp)"),
                    ))
                }
            };
            let tls = match (&l.tls, protocol) {
                (None, _) => None,
                (Some(t), Protocol::Http) => Some(self.listener_tls(&format!("listener[{i}].tls"), t)?),
                (Some(_), Protocol::Tcp(_)) => {
                    return Err(self.err(
                        format!("listener[{i}].tls"),
                        "TLS terminates on HTTP listeners only; a tcp listener relays bytes as they come",
                    ))
                }
            };
            listeners.push(Listener {
                name,
                bind,
                protocol,
                tls,
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
            });
        }
        let has_http = listeners.iter().any(|l| l.protocol == Protocol::Http);
        if raw.routes.is_empty() && has_http {
            return Err(self.err("route", "at least one [[route]] is required"));
        }
        let mut auth = Vec::new();
        for (name, a) in &raw.auth {
            auth.push(self.auth_policy(name, a)?);
        }
        let admin = match &raw.admin {
            None => None,
            Some(a) => Some(self.unused_addr("admin.bind", &a.bind, &listeners)?),
        };
        let access_log = match &raw.access_log {
            None => None,
            Some(a) => Some(self.access_log(a)?),
        };
        let mut caches = Vec::new();
        for (name, c) in &raw.cache {
            caches.push(self.cache_zone(name, c, runtime.workers)?);
        }
        let mut routes = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let mut route = self.route(i, r, &index, &http, &auth)?;
            route.cache = self.route_cache(i, r, &route, &caches)?;
            routes.push(route);
        }
        self.no_proxy_header_on_http(&routes, &upstreams)?;
        Ok(Config {
            source: file.to_string(),
            runtime,
            http,
            proxy,
            listeners,
            upstreams,
            routes,
            auth,
            caches,
            admin,
            access_log,
        })
    }

    fn runtime(&self, r: &RawRuntime) -> Result<Runtime, ConfigError> {
        let cpus_online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let workers = match &r.workers {
            None => 1,
            Some(Workers::Word(w)) if w == "auto" => cpus_online,
            Some(Workers::Word(w)) => {
                return Err(self.err(
                    "runtime.workers",
                    format!("{w:?} is neither a number nor \"auto\""),
                ))
            }
            Some(Workers::Count(n)) if (1..=1024).contains(n) => *n as usize,
            Some(Workers::Count(n)) => {
                return Err(self.err("runtime.workers", format!("{n} is out of range (1..=1024)")))
            }
        };
        let cpus = match &r.cpus {
            None => {
                if matches!(r.workers, Some(Workers::Word(_))) {
                    (0..workers).collect()
                } else {
                    Vec::new()
                }
            }
            Some(list) => {
                if list.len() < workers {
                    return Err(self.err(
                        "runtime.cpus",
                        format!(
                            "lists {} CPUs for {workers} workers; give one CPU per worker",
                            list.len()
                        ),
                    ));
                }
                let mut out = Vec::new();
                for (i, c) in list.iter().enumerate() {
                    if *c < 0 || *c as usize >= cpus_online.max(1024) {
                        return Err(self.err(
                            format!("runtime.cpus[{i}]"),
                            format!("CPU {c} does not exist"),
                        ));
                    }
                    out.push(*c as usize);
                }
                out.truncate(workers);
                out
            }
        };
        let uring_entries =
            self.count("runtime.uring_entries", r.uring_entries, 1024, 64, 32768)? as u32;
        Ok(Runtime {
            workers,
            cpus,
            drain_timeout: self.duration(
                "runtime.drain_timeout",
                r.drain_timeout.as_ref(),
                Duration::from_secs(30),
            )?,
            uring_entries,
            transparent_huge_pages: r.transparent_huge_pages.unwrap_or(true),
        })
    }

    fn http(&self, h: &RawHttp) -> Result<Http, ConfigError> {
        let max_head_size = self.size("http.max_head_size", h.max_head_size.as_ref(), 32 * 1024)?;
        if !(1024..=1 << 20).contains(&max_head_size) {
            return Err(self.err("http.max_head_size", "must be between 1KiB and 1MiB"));
        }
        let max_request_line = self.size(
            "http.max_request_line",
            h.max_request_line.as_ref(),
            8 * 1024,
        )?;
        if max_request_line < 64 || max_request_line > max_head_size {
            return Err(self.err(
                "http.max_request_line",
                "must be between 64 bytes and http.max_head_size",
            ));
        }
        Ok(Http {
            header_timeout: self.duration(
                "http.header_timeout",
                h.header_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            keepalive_timeout: self.duration(
                "http.keepalive_timeout",
                h.keepalive_timeout.as_ref(),
                Duration::from_secs(75),
            )?,
            body_timeout: self.duration(
                "http.body_timeout",
                h.body_timeout.as_ref(),
                Duration::from_secs(60),
            )?,
            send_timeout: self.duration(
                "http.send_timeout",
                h.send_timeout.as_ref(),
                Duration::from_secs(60),
            )?,
            max_request_line: max_request_line as usize,
            max_head_size: max_head_size as usize,
            max_headers: self.count("http.max_headers", h.max_headers, 100, 8, 512)? as usize,
            max_body_size: self.size("http.max_body_size", h.max_body_size.as_ref(), u64::MAX)?,
            max_chunk_extension: self
                .size(
                    "http.max_chunk_extension",
                    h.max_chunk_extension.as_ref(),
                    1024,
                )?
                .min(1 << 20) as usize,
            max_trailer_size: self
                .size(
                    "http.max_trailer_size",
                    h.max_trailer_size.as_ref(),
                    8 * 1024,
                )?
                .min(1 << 20) as usize,
            max_keepalive_requests: self.count(
                "http.max_keepalive_requests",
                h.max_keepalive_requests,
                100_000,
                1,
                u64::MAX >> 1,
            )?,
            max_connections: self.count(
                "http.max_connections",
                h.max_connections,
                100_000,
                1,
                10_000_000,
            )? as usize,
        })
    }

    fn proxy(&self, p: &RawProxy) -> Result<Proxy, ConfigError> {
        let request_id_header = match &p.request_id_header {
            None => Some("x-request-id".to_string()),
            Some(s) if s.is_empty() => None,
            Some(s) => {
                if httparse_token(s) {
                    Some(s.to_ascii_lowercase())
                } else {
                    return Err(self.err(
                        "proxy.request_id_header",
                        format!("{s:?} is not a valid header name"),
                    ));
                }
            }
        };
        Ok(Proxy {
            x_forwarded_for: p.x_forwarded_for.unwrap_or(true),
            x_forwarded_proto: p.x_forwarded_proto.unwrap_or(true),
            x_forwarded_host: p.x_forwarded_host.unwrap_or(true),
            via: p.via.unwrap_or(true),
            request_id_header,
            preserve_host: p.preserve_host.unwrap_or(true),
        })
    }

    fn upstream(&self, name: &str, u: &RawUpstream) -> Result<Upstream, ConfigError> {
        let key = format!("upstream.{name}");
        if u.servers.is_empty() {
            return Err(self.err(format!("{key}.servers"), "needs at least one server"));
        }
        let mut servers = Vec::new();
        for (i, s) in u.servers.iter().enumerate() {
            let skey = format!("{key}.servers[{i}]");
            let (addr, weight, drain) = match s {
                RawServer::Addr(a) => (a.as_str(), None, false),
                RawServer::Detailed(d) => (d.addr.as_str(), d.weight, d.drain.unwrap_or(false)),
            };
            let addr = self.addr(&skey, addr)?;
            let weight = self.count(&format!("{skey}.weight"), weight, 1, 1, 10_000)? as u32;
            servers.push(Server {
                addr,
                weight,
                drain,
            });
        }
        let weighted = servers.iter().any(|s| s.weight != 1);
        let balance =
            match u.balance.as_deref() {
                None if weighted => Balance::WeightedRoundRobin,
                None | Some("round_robin") if weighted => return Err(self.err(
                    format!("{key}.balance"),
                    "round_robin ignores weights; use weighted_round_robin (or drop the weights)",
                )),
                None | Some("round_robin") => Balance::RoundRobin,
                Some("weighted_round_robin") => Balance::WeightedRoundRobin,
                Some("least_conn") => Balance::LeastConn,
                Some("random") => Balance::Random,
                Some("p2c") => Balance::P2c,
                Some("p2c_ewma") => Balance::P2cEwma,
                Some("ring_hash") => Balance::RingHash,
                Some(other) => {
                    return Err(self.err(
                        format!("{key}.balance"),
                        format!("unknown algorithm {other:?} (known: {})", Balance::NAMES),
                    ))
                }
            };
        let hash_key = match u.hash_key.as_deref() {
            None if balance == Balance::RingHash => Some(HashKey::ClientIp),
            None => None,
            Some(_) if balance != Balance::RingHash => {
                return Err(self.err(
                    format!("{key}.hash_key"),
                    "only used with balance = \"ring_hash\"",
                ))
            }
            Some("client_ip") => Some(HashKey::ClientIp),
            Some("path") => Some(HashKey::Path),
            Some(k) => match k.split_once(':') {
                Some(("header", h)) if httparse_token(h) => {
                    Some(HashKey::Header(h.to_ascii_lowercase()))
                }
                Some(("cookie", c)) if httparse_token(c) => Some(HashKey::Cookie(c.to_string())),
                _ => {
                    return Err(self.err(
                        format!("{key}.hash_key"),
                        format!("{k:?} is not one of client_ip, path, header:NAME, cookie:NAME"),
                    ))
                }
            },
        };
        let health_check = match &u.health_check {
            None => None,
            Some(h) => Some(self.health_check(&format!("{key}.health_check"), h)?),
        };
        // Passive ejection is on by default, as nginx's max_fails is: a dead server should not
        // keep costing every request a failed attempt until an active check notices.
        let default_outlier = RawOutlier {
            consecutive_failures: None,
            consecutive_5xx: None,
            base_ejection: None,
            max_ejection: None,
            max_ejected_percent: None,
        };
        let o = u.outlier.as_ref().unwrap_or(&default_outlier);
        let outlier = {
            let okey = format!("{key}.outlier");
            let base = self.duration(
                &format!("{okey}.base_ejection"),
                o.base_ejection.as_ref(),
                Duration::from_secs(10),
            )?;
            let max = self.duration(
                &format!("{okey}.max_ejection"),
                o.max_ejection.as_ref(),
                Duration::from_secs(300),
            )?;
            if max < base {
                return Err(self.err(
                    format!("{okey}.max_ejection"),
                    "is shorter than base_ejection",
                ));
            }
            Some(Outlier {
                consecutive_failures: self.count(
                    &format!("{okey}.consecutive_failures"),
                    o.consecutive_failures,
                    3,
                    0,
                    1000,
                )? as u32,
                consecutive_5xx: self.count(
                    &format!("{okey}.consecutive_5xx"),
                    o.consecutive_5xx,
                    0,
                    0,
                    1000,
                )? as u32,
                base_ejection: base,
                max_ejection: max,
                max_ejected_percent: self.count(
                    &format!("{okey}.max_ejected_percent"),
                    o.max_ejected_percent,
                    50,
                    0,
                    100,
                )? as u32,
            })
        };
        let on_all_down = match u.on_all_down.as_deref() {
            None | Some("reject") => AllDown::Reject,
            Some("fail_open") => AllDown::FailOpen,
            Some(other) => {
                return Err(self.err(
                    format!("{key}.on_all_down"),
                    format!("{other:?} is not \"reject\" or \"fail_open\""),
                ))
            }
        };
        let opt_count = |k: &str, v: Option<i64>| -> Result<Option<u32>, ConfigError> {
            v.map(|n| {
                self.count(&format!("{key}.{k}"), Some(n), 0, 1, 10_000_000)
                    .map(|n| n as u32)
            })
            .transpose()
        };
        let max_connections = opt_count("max_connections", u.max_connections)?;
        let max_pending = opt_count("max_pending", u.max_pending)?;
        let slow_start = u
            .slow_start
            .as_ref()
            .map(|s| parse_duration(s).map_err(|r| self.err(format!("{key}.slow_start"), r)))
            .transpose()?;
        let send_proxy_protocol = match u.send_proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(1),
            Some("v2") => Some(2),
            Some(other) => {
                return Err(self.err(
                    format!("{key}.send_proxy_protocol"),
                    format!("{other:?} is not \"v1\" or \"v2\""),
                ))
            }
        };
        Ok(Upstream {
            name: name.to_string(),
            servers,
            balance,
            connect_timeout: self.duration(
                &format!("{key}.connect_timeout"),
                u.connect_timeout.as_ref(),
                Duration::from_secs(5),
            )?,
            response_timeout: self.duration(
                &format!("{key}.response_timeout"),
                u.response_timeout.as_ref(),
                Duration::from_secs(60),
            )?,
            body_timeout: self.duration(
                &format!("{key}.body_timeout"),
                u.body_timeout.as_ref(),
                Duration::from_secs(60),
            )?,
            tunnel_timeout: self.duration(
                &format!("{key}.tunnel_timeout"),
                u.tunnel_timeout.as_ref(),
                Duration::from_secs(300),
            )?,
            idle_timeout: self.duration(
                &format!("{key}.idle_timeout"),
                u.idle_timeout.as_ref(),
                Duration::from_secs(50),
            )?,
            max_idle: self.count(&format!("{key}.max_idle"), u.max_idle, 256, 0, 1_000_000)?
                as usize,
            hash_key,
            health_check,
            outlier,
            on_all_down,
            max_connections,
            max_pending,
            slow_start,
            send_proxy_protocol,
        })
    }

    /// A PROXY header names one client per connection, and an HTTP upstream's pooled
    /// connections carry many clients' requests: only tcp listeners may use such an upstream.
    fn no_proxy_header_on_http(
        &self,
        routes: &[Route],
        upstreams: &[Upstream],
    ) -> Result<(), ConfigError> {
        let refuse = |key: String, u: usize| {
            match &upstreams[u] {
            up if up.send_proxy_protocol.is_some() => Err(self.err(
                key,
                format!(
                    "upstream {:?} sends a PROXY protocol header (send_proxy_protocol), which only tcp listeners may use: an HTTP upstream's pooled connections carry many clients",
                    up.name
                ),
            )),
            _ => Ok(()),
        }
        };
        for (i, r) in routes.iter().enumerate() {
            match &r.action {
                Action::Forward(u) => refuse(format!("route[{i}].upstream"), *u)?,
                Action::Aggregate(a) => {
                    for (k, p) in a.parts.iter().enumerate() {
                        refuse(format!("route[{i}].aggregate[{k}].upstream"), p.upstream)?;
                    }
                }
                Action::Respond(_) | Action::Redirect(_) => {}
            }
        }
        Ok(())
    }

    fn health_check(&self, key: &str, h: &RawHealthCheck) -> Result<HealthCheck, ConfigError> {
        let kind = match h.kind.as_deref() {
            None | Some("http") => {
                let path = h.path.clone().unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(self.err(
                        format!("{key}.path"),
                        format!("{path:?} is not a request path"),
                    ));
                }
                let status = match h.expect_status.as_deref() {
                    None => (200, 399),
                    Some([a]) => (*a, *a),
                    Some([a, b]) => (*a, *b),
                    Some(_) => {
                        return Err(self.err(
                            format!("{key}.expect_status"),
                            "give [STATUS] or [LOW, HIGH]",
                        ))
                    }
                };
                if !(100..=599).contains(&status.0)
                    || !(100..=599).contains(&status.1)
                    || status.0 > status.1
                {
                    return Err(self.err(
                        format!("{key}.expect_status"),
                        "must be a range within 100..=599",
                    ));
                }
                if let Some(host) = &h.host {
                    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        return Err(self.err(format!("{key}.host"), "is not a host name"));
                    }
                }
                HealthKind::Http {
                    path,
                    host: h.host.clone(),
                    status: (status.0 as u16, status.1 as u16),
                }
            }
            Some("tcp") => {
                if h.path.is_some() || h.expect_status.is_some() || h.host.is_some() {
                    return Err(
                        self.err(key, "path, host and expect_status are for type = \"http\"")
                    );
                }
                HealthKind::Tcp
            }
            Some(other) => {
                return Err(self.err(
                    format!("{key}.type"),
                    format!("unknown type {other:?} (known: http, tcp)"),
                ))
            }
        };
        let interval = self.duration(
            &format!("{key}.interval"),
            h.interval.as_ref(),
            Duration::from_secs(5),
        )?;
        let timeout = self.duration(
            &format!("{key}.timeout"),
            h.timeout.as_ref(),
            Duration::from_secs(2),
        )?;
        if interval < Duration::from_millis(10) {
            return Err(self.err(format!("{key}.interval"), "must be at least 10ms"));
        }
        Ok(HealthCheck {
            kind,
            interval,
            timeout,
            healthy_threshold: self.count(
                &format!("{key}.healthy_threshold"),
                h.healthy_threshold,
                2,
                1,
                100,
            )? as u32,
            unhealthy_threshold: self.count(
                &format!("{key}.unhealthy_threshold"),
                h.unhealthy_threshold,
                3,
                1,
                100,
            )? as u32,
        })
    }

    fn retry(&self, key: &str, r: Option<&RawRetry>) -> Result<RetryPolicy, ConfigError> {
        let mut p = RetryPolicy {
            attempts: 2,
            on_connect: true,
            on_reset: true,
            on_timeout: false,
            on_statuses: Vec::new(),
            budget_percent: 20,
            budget_min_per_second: 10,
        };
        let Some(r) = r else { return Ok(p) };
        p.attempts = self.count(&format!("{key}.attempts"), r.attempts, 2, 1, 10)? as u32;
        p.budget_percent = self.count(
            &format!("{key}.budget_percent"),
            r.budget_percent,
            20,
            0,
            100,
        )? as u32;
        p.budget_min_per_second = self.count(
            &format!("{key}.budget_min_per_second"),
            r.budget_min_per_second,
            10,
            0,
            1_000_000,
        )? as u32;
        if let Some(on) = &r.on {
            p.on_connect = false;
            p.on_reset = false;
            for (j, cond) in on.iter().enumerate() {
                match cond.as_str() {
                    "connect" => p.on_connect = true,
                    "reset" => p.on_reset = true,
                    "timeout" => p.on_timeout = true,
                    s => match s.parse::<u16>() {
                        Ok(code) if (500..=599).contains(&code) => p.on_statuses.push(code),
                        _ => {
                            return Err(self.err(
                                format!("{key}.on[{j}]"),
                                format!("{s:?} is not connect, reset, timeout or a 5xx status"),
                            ))
                        }
                    },
                }
            }
        }
        Ok(p)
    }

    fn route(
        &self,
        i: usize,
        r: &RawRoute,
        upstreams: &BTreeMap<String, usize>,
        http: &Http,
        policies: &[AuthPolicy],
    ) -> Result<Route, ConfigError> {
        let key = format!("route[{i}]");
        let raw_match = r.matcher.as_ref();
        let mut matcher = Match::default();
        if let Some(m) = raw_match {
            if let Some(h) = &m.host {
                let h = h.trim().to_ascii_lowercase();
                let bare = h.strip_prefix("*.").unwrap_or(&h);
                if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
                    return Err(self.err(
                        format!("{key}.match.host"),
                        format!("{h:?} is not a host name (use \"example.com\" or \"*.example.com\", no port)"),
                    ));
                }
                matcher.host = Some(h);
            }
            for (field, v) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
                if let Some(p) = v {
                    if !p.starts_with('/') {
                        return Err(self.err(
                            format!("{key}.match.{field}"),
                            format!("{p:?} must start with '/'"),
                        ));
                    }
                }
            }
            matcher.path = m.path.clone();
            matcher.path_prefix = m.path_prefix.clone();
            if let Some(meth) = &m.method {
                if !httparse_token(meth) {
                    return Err(self.err(
                        format!("{key}.match.method"),
                        format!("{meth:?} is not an HTTP method"),
                    ));
                }
                matcher.method = Some(meth.to_ascii_uppercase());
            }
            if let Some(hs) = &m.headers {
                for (n, v) in hs {
                    if !httparse_token(n) {
                        return Err(self.err(
                            format!("{key}.match.headers"),
                            format!("{n:?} is not a header name"),
                        ));
                    }
                    matcher.headers.push((n.to_ascii_lowercase(), v.clone()));
                }
            }
            if let Some(p) = &m.path_pattern {
                matcher.path_pattern = Some(
                    PathPattern::parse(p)
                        .map_err(|e| self.err(format!("{key}.match.path_pattern"), e))?,
                );
            }
        }
        let filters = self.route_filters(&key, r, &matcher, policies)?;
        let vars = gateway::VarCheck {
            pattern: matcher.path_pattern.as_ref(),
            auth: filters
                .as_ref()
                .and_then(|f| f.auth.as_ref())
                .map(|a| &policies[a.policy]),
        };
        let actions = [
            r.upstream.is_some(),
            r.respond.is_some(),
            r.redirect.is_some(),
            r.aggregate.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() > 1 {
            return Err(self.err(
                &key,
                "has more than one of `upstream`, `respond`, `redirect`, `aggregate`; a route has one action",
            ));
        }
        let action = match (&r.upstream, &r.respond) {
            _ if r.redirect.is_some() || r.aggregate.is_some() => {
                if let Some(red) = &r.redirect {
                    Action::Redirect(self.redirect(&format!("{key}.redirect"), red, &vars)?)
                } else {
                    let parts = r.aggregate.as_deref().unwrap_or_default();
                    Action::Aggregate(self.aggregate(
                        &format!("{key}.aggregate"),
                        parts,
                        upstreams,
                        &vars,
                    )?)
                }
            }
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &key,
                    "has both `upstream` and `respond`; a route has one action",
                ))
            }
            (None, None) => {
                return Err(self.err(
                    &key,
                    "needs an action: `upstream = \"NAME\"`, `respond = {...}`, `redirect = {...}` or `aggregate = [...]`",
                ))
            }
            (Some(u), None) => match upstreams.get(u) {
                Some(idx) => Action::Forward(*idx),
                None => {
                    return Err(self.err(
                        format!("{key}.upstream"),
                        format!(
                            "unknown upstream {u:?} (defined: {})",
                            defined(upstreams.keys().map(|s| s.as_str()), "none")
                        ),
                    ));
                }
            },
            (None, Some(resp)) => {
                let status =
                    self.count(&format!("{key}.respond.status"), resp.status, 200, 200, 599)?
                        as u16;
                let mut headers = Vec::new();
                for (n, v) in resp.headers.iter().flatten() {
                    if !httparse_token(n) || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return Err(self.err(
                            format!("{key}.respond.headers"),
                            format!("invalid header {n:?}"),
                        ));
                    }
                    let lower = n.to_ascii_lowercase();
                    if matches!(
                        lower.as_str(),
                        "content-length" | "transfer-encoding" | "connection"
                    ) {
                        return Err(self.err(
                            format!("{key}.respond.headers"),
                            format!("{n:?} is set by Ringway itself"),
                        ));
                    }
                    headers.push((n.clone(), v.clone()));
                }
                Action::Respond(StaticResponse {
                    status,
                    body: resp.body.clone().unwrap_or_default(),
                    headers,
                })
            }
        };
        let strip_prefix = r.strip_prefix.unwrap_or(false);
        if strip_prefix && matcher.path_prefix.is_none() {
            return Err(self.err(
                format!("{key}.strip_prefix"),
                "needs match.path_prefix to know what to strip",
            ));
        }
        let retry = self.retry(&format!("{key}.retry"), r.retry.as_ref())?;
        let timeout = r
            .timeout
            .as_ref()
            .map(|t| parse_duration(t).map_err(|e| self.err(format!("{key}.timeout"), e)))
            .transpose()?;
        if let Some(f) = &filters {
            let forwards = matches!(action, Action::Forward(_));
            if f.rewrite.is_some() && !forwards {
                return Err(self.err(
                    format!("{key}.rewrite"),
                    "only applies to `upstream` routes",
                ));
            }
            if f.rewrite.is_some() && strip_prefix {
                return Err(self.err(
                    format!("{key}.rewrite"),
                    "use either strip_prefix or rewrite, not both",
                ));
            }
            if f.request_headers.is_some()
                && !matches!(action, Action::Forward(_) | Action::Aggregate(_))
            {
                return Err(self.err(
                    format!("{key}.request_headers"),
                    "only applies to `upstream` and `aggregate` routes",
                ));
            }
        }
        Ok(Route {
            name: r.name.clone().unwrap_or_else(|| key.clone()),
            matcher,
            action,
            strip_prefix,
            retry,
            timeout,
            max_body_size: self.size(
                &format!("{key}.max_body_size"),
                r.max_body_size.as_ref(),
                http.max_body_size,
            )?,
            filters,
            cache: None,
            access_log: r.access_log.unwrap_or(true),
        })
    }

    /// The route's gateway filters; None when it has none (the common, free case).
    fn route_filters(
        &self,
        key: &str,
        r: &RawRoute,
        matcher: &Match,
        policies: &[AuthPolicy],
    ) -> Result<Option<Box<RouteFilters>>, ConfigError> {
        let mut f = RouteFilters::default();
        if let Some(a) = &r.auth {
            f.auth = Some(self.route_auth(&format!("{key}.auth"), a, policies)?);
        }
        let vars = gateway::VarCheck {
            pattern: matcher.path_pattern.as_ref(),
            auth: f.auth.as_ref().map(|a| &policies[a.policy]),
        };
        if let Some(rl) = &r.rate_limit {
            f.rate_limit =
                Some(self.rate_limit(&format!("{key}.rate_limit"), rl, f.auth.is_some())?);
        }
        if let Some(h) = &r.request_headers {
            f.request_headers =
                Some(self.header_rules(&format!("{key}.request_headers"), h, &vars)?);
        }
        if let Some(h) = &r.response_headers {
            f.response_headers =
                Some(self.header_rules(&format!("{key}.response_headers"), h, &vars)?);
        }
        if let Some(rw) = &r.rewrite {
            f.rewrite = Some(self.rewrite(
                &format!("{key}.rewrite"),
                rw,
                matcher.path_prefix.as_deref(),
            )?);
        }
        if let Some(c) = &r.cors {
            f.cors = Some(self.cors(&format!("{key}.cors"), c)?);
        }
        if r.ip_allow.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.err(
                format!("{key}.ip_allow"),
                "an empty allow list admits no one: list addresses, or leave it out",
            ));
        }
        if r.ip_allow.is_some() || r.ip_deny.is_some() {
            let blocks = |field: &str, list: &Option<Vec<String>>| {
                let list = list.as_deref().unwrap_or_default();
                list.iter()
                    .enumerate()
                    .map(|(i, b)| {
                        Cidr::parse(b).map_err(|why| self.err(format!("{key}.{field}[{i}]"), why))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            f.ip = Some(IpRules {
                allow: blocks("ip_allow", &r.ip_allow)?,
                deny: blocks("ip_deny", &r.ip_deny)?,
            });
        }
        let any = f.auth.is_some()
            || f.rate_limit.is_some()
            || f.request_headers.is_some()
            || f.response_headers.is_some()
            || f.rewrite.is_some()
            || f.cors.is_some()
            || f.ip.is_some();
        Ok(any.then(|| Box::new(f)))
    }
}

/// RFC 9110 token characters: what header names and methods may contain.
/// The names a reference could have used, for "unknown X (defined: ...)" errors.
pub(super) fn defined<'a>(names: impl Iterator<Item = &'a str>, none: &str) -> String {
    let known: Vec<&str> = names.collect();
    if known.is_empty() {
        none.to_string()
    } else {
        known.join(", ")
    }
}

pub(super) fn httparse_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_valid() {
        let c = builtin();
        assert_eq!(c.listeners[0].bind.port(), 8080);
    }

    #[test]
    fn unknown_key_names_path() {
        let e = parse("[runtime]\nworkerz = 2\n", "f.toml").unwrap_err();
        assert_eq!(e.file, "f.toml");
        assert!(e.key.contains("runtime"), "{e}");
        assert!(e.reason.contains("workerz"), "{e}");
    }

    #[test]
    fn unknown_upstream_names_route() {
        let e = parse(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"nope\"\n",
            "f.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "route[0].upstream");
    }

    #[test]
    fn bad_duration_names_key() {
        let e = parse(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\nconnect_timeout = \"5 parsecs\"\n[[route]]\nupstream = \"a\"\n",
            "f.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "upstream.a.connect_timeout");
    }
}
