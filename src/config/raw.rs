//! The TOML file as written: serde types that mirror the file one to one. Only `config::load`
//! sees these; the rest of Ringway reads the validated model in `model.rs`.

use super::gateway::{
    RawAuth, RawCors, RawHeaderRules, RawPart, RawRateLimit, RawRedirect, RawRewrite, RawRouteAuth,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    /// `[auth.NAME]` policies that routes refer to.
    #[serde(default)]
    pub auth: BTreeMap<String, RawAuth>,
    /// `[cache.NAME]` response caches that routes refer to.
    #[serde(default)]
    pub cache: BTreeMap<String, RawCache>,
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: String,
    pub format: Option<String>,
    pub escape: Option<String>,
    pub buffer: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_size: Option<Size>,
    pub max_entry_size: Option<Size>,
    /// Status ("200", or "any") -> duration, for responses that carry no freshness of their own.
    pub valid: Option<BTreeMap<String, String>>,
    pub use_stale: Option<String>,
    pub revalidate: Option<bool>,
    pub bypass: Option<Vec<String>>,
    pub status_header: Option<String>,
    pub lock_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Workers {
    Count(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<Workers>,
    pub cpus: Option<Vec<i64>>,
    pub drain_timeout: Option<String>,
    pub uring_entries: Option<i64>,
    pub transparent_huge_pages: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub max_request_line: Option<Size>,
    pub max_head_size: Option<Size>,
    pub max_headers: Option<i64>,
    pub max_body_size: Option<Size>,
    pub max_chunk_extension: Option<Size>,
    pub max_trailer_size: Option<Size>,
    pub max_keepalive_requests: Option<i64>,
    pub max_connections: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub x_forwarded_for: Option<bool>,
    pub x_forwarded_proto: Option<bool>,
    pub x_forwarded_host: Option<bool>,
    pub via: Option<bool>,
    pub request_id_header: Option<String>,
    pub preserve_host: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: String,
    pub protocol: Option<String>,
    pub upstream: Option<String>,
    pub tls: Option<RawTls>,
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    pub min_version: Option<String>,
    pub handshake_timeout: Option<String>,
    #[serde(default)]
    pub sni: Vec<RawSniCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniCert {
    pub server_names: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawServer {
    Addr(String),
    Detailed(RawServerDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerDetail {
    pub addr: String,
    pub weight: Option<i64>,
    pub drain: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Vec<RawServer>,
    pub balance: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub tunnel_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_idle: Option<i64>,
    pub hash_key: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub on_all_down: Option<String>,
    pub max_connections: Option<i64>,
    pub max_pending: Option<i64>,
    pub slow_start: Option<String>,
    pub send_proxy_protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<Vec<i64>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<i64>,
    pub consecutive_5xx: Option<i64>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<i64>,
    pub on: Option<Vec<String>>,
    pub budget_percent: Option<i64>,
    pub budget_min_per_second: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub path_pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<i64>,
    pub body: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub upstream: Option<String>,
    pub respond: Option<RawRespond>,
    pub strip_prefix: Option<bool>,
    pub retry: Option<RawRetry>,
    pub timeout: Option<String>,
    pub max_body_size: Option<Size>,
    // Gateway filters and actions (config/gateway.rs).
    pub auth: Option<RawRouteAuth>,
    pub rate_limit: Option<RawRateLimit>,
    pub request_headers: Option<RawHeaderRules>,
    pub response_headers: Option<RawHeaderRules>,
    pub rewrite: Option<RawRewrite>,
    pub cors: Option<RawCors>,
    pub ip_allow: Option<Vec<String>>,
    pub ip_deny: Option<Vec<String>>,
    pub redirect: Option<RawRedirect>,
    pub aggregate: Option<Vec<RawPart>>,
    /// The `[cache.NAME]` this route's responses are stored in.
    pub cache: Option<String>,
    /// `false`: this route's requests are left out of the access log.
    pub access_log: Option<bool>,
}
