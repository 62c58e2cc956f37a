//! The validated configuration: what every other module reads. Built only by `config::load`,
//! immutable once built, shared between threads as `Arc<Config>`.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, for messages ("<built-in>" for the default).
    pub source: String,
    pub runtime: Runtime,
    pub http: Http,
    pub proxy: Proxy,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub workers: usize,
    /// CPU for each worker, in worker order; empty means "do not pin".
    pub cpus: Vec<usize>,
    pub drain_timeout: Duration,
    pub uring_entries: u32,
}

/// Client-side HTTP limits and deadlines.
#[derive(Debug, Clone)]
pub struct Http {
    /// Deadline for a whole request head, from its first byte (slowloris guard).
    pub header_timeout: Duration,
    /// How long an idle keep-alive client connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Longest gap between two reads of a request body.
    pub body_timeout: Duration,
    /// Longest a write to a client may take (a client that does not read).
    pub send_timeout: Duration,
    pub max_request_line: usize,
    pub max_head_size: usize,
    pub max_headers: usize,
    pub max_body_size: u64,
    pub max_keepalive_requests: u64,
    /// Client connections per worker; past it new connections are closed at once.
    pub max_connections: usize,
}

/// Headers the proxy adds to forwarded requests.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub x_forwarded_host: bool,
    pub via: bool,
    /// Header carrying the request id, lower-case; None disables it.
    pub request_id_header: Option<String>,
    pub preserve_host: bool,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<Server>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_timeout: Duration,
    /// Pooled connections idle longer than this are closed (keep it below the upstream's own
    /// keep-alive timeout so we never pick one the upstream is closing).
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per server, per worker.
    pub max_idle: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Match {
    /// Lower-case host without port; a leading "*." matches any subdomain.
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    /// Header name (lower-case) and exact value.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct StaticResponse {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Index into `Config::upstreams`.
    Forward(usize),
    Respond(StaticResponse),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Match,
    pub action: Action,
    /// Remove the matched `path_prefix` before forwarding.
    pub strip_prefix: bool,
}
