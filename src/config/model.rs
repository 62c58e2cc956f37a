//! The validated configuration: what every other module reads. Built only by `config::load`,
//! immutable once built, shared between threads as `Arc<Config>`.

pub use super::access_log::AccessLog;
pub use super::gateway::*;
pub use super::template::{PathPattern, Piece, Seg, Template, Var};
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
    /// `[auth.NAME]` policies, referred to by index from `RouteAuth::policy`.
    pub auth: Vec<AuthPolicy>,
    /// `[cache.NAME]` response caches, referred to by index from `Route::cache`.
    pub caches: Vec<CacheZone>,
    /// Where the admin endpoint (metrics, health) listens; None: nowhere.
    pub admin: Option<SocketAddr>,
    /// One line per request, when configured.
    pub access_log: Option<AccessLog>,
}

/// A response cache: each worker keeps its own share of it (see `src/cache/`).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheZone {
    pub name: String,
    /// Bytes of stored responses (heads, bodies and keys) over all workers.
    pub max_size: u64,
    /// What one worker may hold: `max_size` divided among the workers.
    pub max_size_per_worker: u64,
    /// Larger responses pass through without being stored.
    pub max_entry_size: u64,
    /// Freshness by status for responses that carry none of their own (nginx's
    /// `proxy_cache_valid`); sorted by status.
    pub valid: Vec<(u16, Duration)>,
    /// The same for every other status.
    pub valid_any: Option<Duration>,
    /// How long past its expiry an entry may still answer when the upstream fails (0: never).
    pub use_stale: Duration,
    /// An expired entry with a validator (ETag, Last-Modified) is fetched with a conditional
    /// request, and a 304 refreshes it (nginx's `proxy_cache_revalidate`).
    pub revalidate: bool,
    /// Lower-case header that tells the client HIT, MISS, EXPIRED, STALE or BYPASS; None: none.
    pub status_header: Option<String>,
    /// Concurrent misses for one key on a worker wait this long for the first one's answer
    /// instead of all going upstream (0: they all go).
    pub lock_timeout: Duration,
    /// Requests carrying any of these pass by the cache: not answered from it, their responses
    /// not stored (nginx's `proxy_cache_bypass` with `proxy_no_cache`).
    pub bypass: Vec<CacheBypass>,
}

/// What makes a request pass by the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBypass {
    /// A request header (lower-case name), whatever its value.
    Header(String),
    /// A cookie by name, or by the start of its name when `prefix`.
    Cookie { name: String, prefix: bool },
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub workers: usize,
    /// CPU for each worker, in worker order; empty means "do not pin".
    pub cpus: Vec<usize>,
    pub drain_timeout: Duration,
    pub uring_entries: u32,
    /// Whether the heap may be backed by transparent huge pages (see `server::memory`).
    pub transparent_huge_pages: bool,
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
    /// Longest chunk extension accepted in a chunked body.
    pub max_chunk_extension: usize,
    /// Largest trailer section of a chunked body (trailers are dropped, never forwarded).
    pub max_trailer_size: usize,
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
    pub protocol: Protocol,
    /// TLS termination (HTTP listeners only): None serves plain HTTP.
    pub tls: Option<ListenerTls>,
    /// Every connection opens with a PROXY protocol header (v1 or v2) naming the client.
    pub proxy_protocol: bool,
}

/// A TLS listener's handshake settings, built and checked at load time.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub server: std::sync::Arc<rustls::ServerConfig>,
    /// The whole handshake must finish within this.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    /// Relay TCP streams to this upstream (index into `Config::upstreams`).
    Tcp(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// nginx's smooth weighted round-robin.
    WeightedRoundRobin,
    /// Fewest in-flight requests (this worker's count), ties by round-robin.
    LeastConn,
    Random,
    /// Power of two choices on in-flight requests.
    P2c,
    /// Power of two choices on peak-EWMA response latency times in-flight.
    P2cEwma,
    /// Consistent hashing on `hash_key` (ketama-style ring).
    RingHash,
}

impl Balance {
    pub const NAMES: &'static str =
        "round_robin, weighted_round_robin, least_conn, random, p2c, p2c_ewma, ring_hash";
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// Lower-case header name.
    Header(String),
    Cookie(String),
    Path,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Takes no new requests; in-flight ones finish (set it and reload to drain a server).
    pub drain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    Tcp,
    Http {
        path: String,
        host: Option<String>,
        status: (u16, u16),
    },
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive health: eject a server after consecutive failures seen on live traffic.
#[derive(Debug, Clone)]
pub struct Outlier {
    /// Consecutive connect failures / resets / timeouts that eject.
    pub consecutive_failures: u32,
    /// Consecutive 5xx responses that eject (0: 5xx never ejects).
    pub consecutive_5xx: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// Answer 503 at once.
    Reject,
    /// Ignore health and try the servers anyway.
    FailOpen,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<Server>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_timeout: Duration,
    /// An upgraded connection (WebSocket, after its 101) closes after this long without a byte
    /// either way.
    pub tunnel_timeout: Duration,
    /// Pooled connections idle longer than this are closed (keep it below the upstream's own
    /// keep-alive timeout so we never pick one the upstream is closing).
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per server, per worker.
    pub max_idle: usize,
    pub hash_key: Option<HashKey>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    pub on_all_down: AllDown,
    /// Requests in flight to one server, over all workers; past it another server is tried,
    /// then 503.
    pub max_connections: Option<u32>,
    /// Connections being opened to one server at once, over all workers.
    pub max_pending: Option<u32>,
    /// A server coming back ramps from 10% to its full share over this long.
    pub slow_start: Option<Duration>,
    /// PROXY protocol version (1 or 2) written to each new server connection before the
    /// relayed bytes; upstreams of tcp listeners only.
    pub send_proxy_protocol: Option<u8>,
}

/// When a failed attempt may be sent again, to another server.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, the first included (1: never retry).
    pub attempts: u32,
    pub on_connect: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub on_statuses: Vec<u16>,
    /// Retries may add at most this share of requests (per worker)...
    pub budget_percent: u32,
    /// ...plus this many per second, so a quiet worker can still retry.
    pub budget_min_per_second: u32,
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
    /// `"/users/{id}"`: segment match whose parameters templates can read.
    pub path_pattern: Option<PathPattern>,
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
    Redirect(Redirect),
    /// One client request answered by several upstream requests, merged into a JSON object.
    Aggregate(Aggregate),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Match,
    pub action: Action,
    /// Remove the matched `path_prefix` before forwarding.
    pub strip_prefix: bool,
    pub retry: RetryPolicy,
    /// Deadline for the whole exchange, all attempts together.
    pub timeout: Option<Duration>,
    /// Largest request body on this route (overrides `http.max_body_size`).
    pub max_body_size: u64,
    /// Gateway filters (auth, rate limit, header rules, rewrite, CORS); None when the route has
    /// none, which keeps plain routes free of any gateway work.
    pub filters: Option<Box<RouteFilters>>,
    /// Index into `Config::caches`: responses of this `upstream` route are cached there.
    pub cache: Option<usize>,
    /// Its requests are written to the access log (when there is one).
    pub access_log: bool,
}
