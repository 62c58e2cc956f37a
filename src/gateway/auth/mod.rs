//! Authentication policies (`[auth.NAME]`), compiled once per core from the config: API keys,
//! HTTP Basic with bcrypt hashes, and JWT bearer tokens. Each answers "who is this" (a consumer
//! name that later filters use) or why not, and knows which credential to strip before the
//! request goes upstream.

pub mod api_key;
pub mod basic;
pub mod jwt;

use crate::config::{AuthKind, AuthPolicy};
use httparse::Header;
use serde_json::{Map, Value};
use std::rc::Rc;

/// A request that authenticated.
pub struct Identity {
    pub consumer: Rc<str>,
    /// The token's claims, for JWT.
    pub claims: Option<Box<Map<String, Value>>>,
}

/// Why a request did not authenticate; each maps to one status and challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credential: 401 with a challenge.
    Missing,
    /// Wrong, expired, tampered or malformed: 401 with a challenge naming the error.
    Invalid(&'static str),
    /// Authenticated but not allowed (missing scope, consumer not admitted): 403.
    Forbidden(&'static str),
    /// The worker's budget for slow password checks is spent this second: 503, retry later.
    Busy,
}

pub enum Kind {
    ApiKey(api_key::ApiKeys),
    Basic(basic::Basic),
    Jwt(jwt::Jwt),
}

pub struct Policy {
    pub kind: Kind,
    /// Header naming the consumer upstream (lower-case).
    pub consumer_header: Option<String>,
}

impl Policy {
    pub fn new(p: &AuthPolicy) -> Self {
        let kind = match &p.kind {
            AuthKind::ApiKey(a) => Kind::ApiKey(api_key::ApiKeys::new(a)),
            AuthKind::Basic(b) => Kind::Basic(basic::Basic::new(b)),
            AuthKind::Jwt(j) => Kind::Jwt(jwt::Jwt::new(j)),
        };
        Self {
            kind,
            consumer_header: p.consumer_header.clone(),
        }
    }

    pub fn authenticate(&self, headers: &[Header<'_>], target: &str) -> Result<Identity, Failure> {
        match &self.kind {
            Kind::ApiKey(k) => k.authenticate(headers, target),
            Kind::Basic(b) => b.authenticate(headers),
            Kind::Jwt(j) => j.authenticate(headers),
        }
    }

    /// The `www-authenticate` line for a 401 (nothing for 403).
    pub fn write_challenge(&self, f: Failure, out: &mut Vec<u8>) {
        match (&self.kind, f) {
            (_, Failure::Busy) => out.extend_from_slice(b"retry-after: 1\r\n"),
            (_, Failure::Forbidden(_)) => {
                if let (Kind::Jwt(_), Failure::Forbidden(why)) = (&self.kind, f) {
                    if why == jwt::INSUFFICIENT_SCOPE {
                        out.extend_from_slice(
                            b"www-authenticate: Bearer error=\"insufficient_scope\"\r\n",
                        );
                    }
                }
            }
            (Kind::ApiKey(k), _) => k.write_challenge(out),
            (Kind::Basic(b), _) => b.write_challenge(out),
            (Kind::Jwt(_), Failure::Missing) => {
                out.extend_from_slice(b"www-authenticate: Bearer realm=\"ringway\"\r\n")
            }
            (Kind::Jwt(_), Failure::Invalid(why)) => {
                out.extend_from_slice(
                    b"www-authenticate: Bearer realm=\"ringway\", error=\"invalid_token\", error_description=\"",
                );
                out.extend_from_slice(why.as_bytes());
                out.extend_from_slice(b"\"\r\n");
            }
        }
    }

    /// The request header that carries the credential (stripped before forwarding).
    pub fn credential_header(&self) -> Option<&str> {
        match &self.kind {
            Kind::ApiKey(k) => k.header.as_deref(),
            Kind::Basic(_) | Kind::Jwt(_) => Some("authorization"),
        }
    }

    /// The query parameter that carries the credential (stripped before forwarding).
    pub fn credential_query(&self) -> Option<&str> {
        match &self.kind {
            Kind::ApiKey(k) => k.query.as_deref(),
            _ => None,
        }
    }

    /// Header names this policy sets upstream from claims, so a client's own copies are dropped.
    pub fn claim_headers(&self) -> Vec<String> {
        match &self.kind {
            Kind::Jwt(j) => j.claims_to_headers.iter().map(|(_, h)| h.clone()).collect(),
            _ => Vec::new(),
        }
    }
}

/// The value of the first header called `name` (lower-case), if any.
#[inline]
pub fn header<'a>(headers: &'a [Header<'_>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.len() == name.len() && h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The credential after `scheme ` in an Authorization header (scheme case-insensitive).
pub fn authorization<'a>(headers: &'a [Header<'_>], scheme: &str) -> Option<&'a [u8]> {
    let v = header(headers, "authorization")?;
    let n = scheme.len();
    if v.len() > n + 1 && v[..n].eq_ignore_ascii_case(scheme.as_bytes()) && v[n] == b' ' {
        let rest = &v[n + 1..];
        let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
        Some(&rest[start..])
    } else {
        None
    }
}
