//! The API gateway filter chain, per route: CORS preflight → auth → rate limit → header rules,
//! then the route's action (forward with rewrite, redirect, or aggregate). Each filter is its
//! own module; this one compiles a route's filters once per core (`RouteGateway`, held in
//! `CoreState`) and runs them for one request.
//!
//! Cost model: a route without filters has no `RouteGateway` (`None` in the per-core table), so
//! the proxy pays one indexed `Option` check and nothing else. A filtered route allocates only
//! for what it uses (a rewritten path, rendered response headers). Everything here is per core
//! (`Rc`, `Cell`); the one thing that crosses threads, the rate-limit table, is in
//! `rate_limit::published`.

pub mod aggregate;
pub mod auth;
pub mod cors;
pub mod counters;
pub mod headers;
pub mod ip_access;
pub mod rate_limit;
pub mod redirect;
pub mod rewrite;

use crate::config::{Action, Config, Cors, HeaderRules, PathPattern, RouteAuth, Var};
use crate::http::fmt::push_dec;
use crate::http::status::reason;
use auth::{Failure, Identity, Policy};
use counters::{bump, FilterCounters, Reject};
use headers::{listed, Escape, Vars};
use httparse::Header;
use rate_limit::{InflightGuard, RouteLimiter, Verdict};
use rewrite::Rewriter;
use std::rc::Rc;

/// The gateway of one worker: compiled filters for each route that has any.
pub struct CoreGateway {
    routes: Vec<Option<Box<RouteGateway>>>,
}

/// One route's compiled filters.
pub struct RouteGateway {
    pub name: String,
    auth: Option<(Rc<Policy>, RouteAuth)>,
    limiter: Option<Rc<RouteLimiter>>,
    request: Option<HeaderRules>,
    response: Option<HeaderRules>,
    rewrite: Option<Rewriter>,
    cors: Option<Cors>,
    ip: Option<ip_access::IpRules>,
    pattern: Option<PathPattern>,
    /// Client headers never forwarded on this route: the credential, removed and replaced
    /// headers, and the names Ringway sets itself (consumer, claims) so they cannot be spoofed.
    drop_request: Vec<String>,
    drop_response: Rc<[String]>,
    /// Some template reads `${request_id}`: the id must exist before the head is written.
    needs_request_id: bool,
    pub counters: FilterCounters,
}

/// The request as the filters (and the templates, through `Vars`) see it.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub target: &'a str,
    pub headers: &'a [Header<'a>],
    pub client_ip: &'a str,
}

/// A request that passed the filters, with what the rest of the exchange needs.
#[derive(Default)]
pub struct Passed {
    pub identity: Option<Identity>,
    /// The target to send upstream when the filters changed it (rewrite, credential removed).
    pub target: Option<String>,
    /// A request id generated here because a template needs it.
    pub request_id: Option<Vec<u8>>,
    pub guard: Option<InflightGuard>,
    pub response: Option<Box<ResponseEdits>>,
}

/// Changes to the upstream's response head, rendered when the request was planned.
pub struct ResponseEdits {
    /// Upstream response headers not passed to the client (lower-case).
    pub drop: Rc<[String]>,
    /// Complete header lines to add.
    pub extra: Vec<u8>,
}

impl ResponseEdits {
    #[inline]
    pub fn drops(&self, name: &str) -> bool {
        listed(&self.drop, name)
    }
}

/// What the filters decided.
pub enum Outcome {
    /// Answer locally: `out` holds a response head without its final blank line (and without a
    /// connection header), ending at `head_len`, then the body.
    Local {
        head_len: usize,
    },
    Pass(Passed),
}

impl CoreGateway {
    pub fn new(config: &Config) -> Self {
        let policies: Vec<Rc<Policy>> = config
            .auth
            .iter()
            .map(|p| Rc::new(Policy::new(p)))
            .collect();
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let empty = crate::config::RouteFilters::default();
                let f = match (&r.filters, &r.action) {
                    (Some(f), _) => &**f,
                    // Redirect and aggregate are gateway actions: they need the template
                    // context and counters even without filters.
                    (None, Action::Redirect(_) | Action::Aggregate(_)) => &empty,
                    (None, _) => return None,
                };
                let identity = format!("{}#{i}", r.name);
                Some(Box::new(RouteGateway::new(
                    r, f, &identity, &policies, config,
                )))
            })
            .collect();
        Self { routes }
    }

    /// The route's filters; None (the common case) when it has none.
    #[inline]
    pub fn route(&self, idx: usize) -> Option<&RouteGateway> {
        self.routes.get(idx)?.as_deref()
    }

    /// (route name, counters) of every filtered route, for the metrics endpoint.
    pub fn counters(&self) -> impl Iterator<Item = (&str, &FilterCounters)> {
        self.routes
            .iter()
            .flatten()
            .map(|r| (r.name.as_str(), &r.counters))
    }
}

impl RouteGateway {
    fn new(
        r: &crate::config::Route,
        f: &crate::config::RouteFilters,
        identity: &str,
        policies: &[Rc<Policy>],
        config: &Config,
    ) -> Self {
        let auth = f
            .auth
            .as_ref()
            .map(|a| (policies[a.policy].clone(), a.clone()));
        let mut drop_request: Vec<String> = Vec::new();
        if let Some((p, a)) = &auth {
            if !a.forward_credential {
                drop_request.extend(p.credential_header().map(str::to_string));
            }
            drop_request.extend(p.consumer_header.clone());
            drop_request.extend(p.claim_headers());
        }
        if let Some(rules) = &f.request_headers {
            drop_request.extend(headers::dropped_names(rules).cloned());
        }
        drop_request.sort();
        drop_request.dedup();
        let drop_response: Rc<[String]> = f
            .response_headers
            .as_ref()
            .map(|rules| headers::dropped_names(rules).cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into();
        let uses_id = |rules: &Option<HeaderRules>| {
            rules.iter().any(|r| {
                r.set
                    .iter()
                    .chain(&r.append)
                    .any(|(_, t)| t.vars().any(|v| *v == Var::RequestId))
            })
        };
        let action_uses_id = match &r.action {
            Action::Redirect(red) => red.location.vars().any(|v| *v == Var::RequestId),
            Action::Aggregate(a) => a
                .parts
                .iter()
                .any(|p| p.path.vars().any(|v| *v == Var::RequestId)),
            _ => false,
        };
        Self {
            name: r.name.clone(),
            auth,
            limiter: f
                .rate_limit
                .as_ref()
                .map(|rl| Rc::new(RouteLimiter::new(identity, rl))),
            request: f.request_headers.clone(),
            response: f.response_headers.clone(),
            rewrite: f.rewrite.as_ref().and_then(Rewriter::new),
            cors: f.cors.clone(),
            ip: f.ip.clone(),
            pattern: r.matcher.path_pattern.clone(),
            drop_request,
            drop_response,
            needs_request_id: config.proxy.request_id_header.is_some()
                && (uses_id(&f.request_headers) || uses_id(&f.response_headers) || action_uses_id),
            counters: FilterCounters::default(),
        }
    }

    /// Runs the filters. On a local answer the response is written into `out` (cleared first).
    pub fn check(
        &self,
        req: &Request<'_>,
        id_header: Option<&str>,
        gen_id: impl FnOnce(&mut Vec<u8>),
        out: &mut Vec<u8>,
    ) -> Outcome {
        // First, as nginx's access phase: a client the route does not admit learns nothing
        // else about it (not its CORS policy, not whether a credential would pass).
        if let Some(ip) = &self.ip {
            if !ip.admits(req.client_ip) {
                self.counters.reject(Reject::IpDenied);
                return self.reject(req, out, 403, "client address not allowed", |_| {});
            }
        }
        if let Some(c) = &self.cors {
            match cors::preflight(c, req.method, req.headers) {
                cors::Preflight::No => {}
                cors::Preflight::Allow => {
                    bump(&self.counters.preflights);
                    out.clear();
                    let head_len =
                        local_head(out, 204, b"", |o| cors::write_preflight(c, req.headers, o));
                    return Outcome::Local { head_len };
                }
                cors::Preflight::Deny => {
                    self.counters.reject(Reject::CorsDenied);
                    return self.reject(req, out, 403, "CORS preflight not allowed", |_| {});
                }
            }
        }
        let mut passed = Passed::default();
        if let Some((policy, ra)) = &self.auth {
            match policy.authenticate(req.headers, req.target) {
                Ok(id) => {
                    if !ra.consumers.is_empty() && !ra.consumers.iter().any(|c| **c == *id.consumer)
                    {
                        self.counters.reject(Reject::Forbidden);
                        return self.reject(
                            req,
                            out,
                            403,
                            "consumer not allowed on this route",
                            |_| {},
                        );
                    }
                    passed.identity = Some(id);
                }
                Err(f) => {
                    let (status, why, kind) = match f {
                        Failure::Missing => (401, "credential required", Reject::AuthMissing),
                        Failure::Invalid(w) => (401, w, Reject::AuthInvalid),
                        Failure::Forbidden(w) => (403, w, Reject::Forbidden),
                        Failure::Busy => (503, "authentication busy, retry", Reject::AuthInvalid),
                    };
                    self.counters.reject(kind);
                    return self.reject(req, out, status, why, |o| policy.write_challenge(f, o));
                }
            }
        }
        let consumer = passed.identity.as_ref().map_or("", |i| &*i.consumer);
        let mut limit_headers: Option<(u64, u64)> = None;
        if let Some(l) = &self.limiter {
            match l.check(req.client_ip, consumer, req.headers) {
                Verdict::Allow {
                    guard,
                    remaining,
                    reset_ns,
                } => {
                    passed.guard = guard;
                    if l.cfg.headers {
                        limit_headers = Some((remaining, reset_ns));
                    }
                }
                Verdict::RateLimited { retry_after_s } => {
                    self.counters.reject(Reject::RateLimited);
                    return self.reject(req, out, 429, "rate limit exceeded", |o| {
                        l.write_reject_headers(o, retry_after_s)
                    });
                }
                Verdict::TooManyInFlight => {
                    self.counters.reject(Reject::TooManyInFlight);
                    return self.reject(req, out, 429, "too many requests in flight", |o| {
                        l.write_reject_headers(o, 1)
                    });
                }
                // Fail open: a full table must not turn into an outage; it is counted.
                Verdict::TableFull => bump(&self.counters.rate_table_full),
            }
        }
        bump(&self.counters.allowed);

        // The upstream target: credential parameter removed, then the rewrite.
        if let Some((policy, ra)) = &self.auth {
            if let (Some(q), false) = (policy.credential_query(), ra.forward_credential) {
                if headers::query_param(req.target, q).is_some() {
                    passed.target = Some(headers::without_query_param(req.target, q));
                }
            }
        }
        if let Some(rw) = &self.rewrite {
            let current = passed.target.as_deref().unwrap_or(req.target);
            if let Some(t) = rw.apply(current) {
                passed.target = Some(t);
            }
        }
        if self.needs_request_id {
            if let Some(h) = id_header {
                if auth::header(req.headers, h).is_none() {
                    let mut id = Vec::with_capacity(24);
                    gen_id(&mut id);
                    passed.request_id = Some(id);
                }
            }
        }

        // Response edits, rendered now while the request head is still readable.
        let cors_actual = self
            .cors
            .as_ref()
            .filter(|c| cors::allowed_origin(c, req.headers).is_some());
        if self.response.is_some() || cors_actual.is_some() || limit_headers.is_some() {
            let mut extra = Vec::new();
            if let Some(rules) = &self.response {
                let v = self.vars(req, &passed, id_header);
                headers::write_rules(rules, &v, &mut extra);
            }
            if let Some(c) = cors_actual {
                cors::write_actual(c, req.headers, &mut extra);
            }
            if let (Some(l), Some((rem, reset))) = (&self.limiter, limit_headers) {
                l.write_headers(&mut extra, rem, reset);
            }
            passed.response = Some(Box::new(ResponseEdits {
                drop: self.drop_response.clone(),
                extra,
            }));
        }
        Outcome::Pass(passed)
    }

    /// A local error answer with the route's CORS headers, so a browser can read it.
    fn reject(
        &self,
        req: &Request<'_>,
        out: &mut Vec<u8>,
        status: u16,
        why: &str,
        extra: impl FnOnce(&mut Vec<u8>),
    ) -> Outcome {
        out.clear();
        let mut body = Vec::with_capacity(64);
        push_dec(&mut body, status as u64);
        body.push(b' ');
        body.extend_from_slice(reason(status).as_bytes());
        body.extend_from_slice(b": ");
        body.extend_from_slice(why.as_bytes());
        body.push(b'\n');
        let head_len = local_head(out, status, &body, |o| {
            extra(o);
            if let Some(c) = &self.cors {
                cors::write_actual(c, req.headers, o);
            }
            o.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
        });
        Outcome::Local { head_len }
    }

    /// The template variables of this request after the filters.
    pub fn vars<'a>(
        &'a self,
        req: &'a Request<'a>,
        passed: &'a Passed,
        id_header: Option<&str>,
    ) -> Vars<'a> {
        let request_id: &[u8] = match &passed.request_id {
            Some(id) => id,
            None => id_header
                .and_then(|h| auth::header(req.headers, h))
                .unwrap_or(b""),
        };
        Vars {
            req: *req,
            route: &self.name,
            request_id,
            consumer: passed.identity.as_ref().map_or("", |i| &i.consumer),
            claims: passed.identity.as_ref().and_then(|i| i.claims.as_deref()),
            pattern: self.pattern.as_ref(),
        }
    }

    /// What `proxy::head::write_request` needs to apply this route's request rules.
    pub fn upstream_edits<'a>(&'a self, vars: Vars<'a>, passed: &'a Passed) -> UpstreamEdits<'a> {
        UpstreamEdits {
            route: self,
            vars,
            request_id: passed.request_id.as_deref(),
        }
    }
}

/// The request-side edits of a filtered route, applied while the upstream head is written.
pub struct UpstreamEdits<'a> {
    route: &'a RouteGateway,
    vars: Vars<'a>,
    /// An id generated by the gateway, to be used instead of generating another.
    pub request_id: Option<&'a [u8]>,
}

impl UpstreamEdits<'_> {
    /// Whether a client header must not be forwarded.
    #[inline]
    pub fn drops(&self, name: &str) -> bool {
        listed(&self.route.drop_request, name)
    }

    /// Appends the header lines the route adds: consumer, claims, then the rules.
    pub fn write_extra(&self, out: &mut Vec<u8>) {
        if let Some((policy, _)) = &self.route.auth {
            if let Some(h) = &policy.consumer_header {
                if !self.vars.consumer.is_empty() {
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend(
                        self.vars
                            .consumer
                            .bytes()
                            .filter(|c| *c == b'\t' || (*c >= 0x20 && *c != 0x7f)),
                    );
                    out.extend_from_slice(b"\r\n");
                }
            }
            if let auth::Kind::Jwt(j) = &policy.kind {
                if let Some(claims) = self.vars.claims {
                    for (claim, h) in &j.claims_to_headers {
                        let v = match claims.get(claim) {
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(serde_json::Value::Null) | None => continue,
                            Some(other) => other.to_string(),
                        };
                        out.extend_from_slice(h.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend(
                            v.bytes()
                                .filter(|c| *c == b'\t' || (*c >= 0x20 && *c != 0x7f)),
                        );
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
        if let Some(rules) = &self.route.request {
            headers::write_rules(rules, &self.vars, out);
        }
    }

    /// Renders a template (aggregation paths) against this request.
    pub fn render_path(&self, t: &crate::config::Template, out: &mut Vec<u8>) {
        headers::render(t, &self.vars, Escape::Path, out);
    }
}

/// Writes a local response head (status line, server, `lines`, content-length) and the body;
/// returns where the head ends (the caller adds the connection header and the blank line).
pub fn local_head(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    lines: impl FnOnce(&mut Vec<u8>),
) -> usize {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nserver: ringway\r\n");
    lines(out);
    out.extend_from_slice(b"content-length: ");
    push_dec(out, body.len() as u64);
    let head_len = out.len();
    out.extend_from_slice(body);
    head_len
}
