//! The gateway part of the config: `[auth.NAME]` policies and the per-route filter keys (`auth`,
//! `rate_limit`, `request_headers`, `response_headers`, `rewrite`, `cors`) and actions
//! (`redirect`, `aggregate`). Raw serde types, the validated model and the checks live together
//! here so that `config/mod.rs` only gains a few calls. Key files, JWKS files and PEM keys are
//! read and checked here, at load time: a worker never opens a file.

use super::template::{PathPattern, Template, Var};
use super::{parse_size, ConfigError, Size, Validator};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub password_hash: String,
}

/// `[auth.NAME]`: one struct for every type; fields of another type are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: String,
    pub consumer_header: Option<String>,
    // api_key
    pub header: Option<String>,
    pub query: Option<String>,
    pub keys: Option<Vec<RawApiKey>>,
    pub keys_file: Option<String>,
    // basic
    pub realm: Option<String>,
    pub users: Option<Vec<RawUser>>,
    pub users_file: Option<String>,
    // jwt
    pub algorithms: Option<Vec<String>>,
    pub secret: Option<String>,
    pub secret_base64: Option<String>,
    pub public_key: Option<String>,
    pub public_key_file: Option<String>,
    pub jwks_file: Option<String>,
    pub issuer: Option<OneOrMany>,
    pub audience: Option<OneOrMany>,
    pub leeway: Option<String>,
    pub required_claims: Option<Vec<String>>,
    pub required_scopes: Option<Vec<String>>,
    pub consumer_claim: Option<String>,
    pub claims_to_headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteAuthDetail {
    pub policy: String,
    pub consumers: Option<Vec<String>>,
    pub forward_credential: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRouteAuth {
    Name(String),
    Detailed(RawRouteAuthDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: Option<i64>,
    pub per: Option<String>,
    pub burst: Option<i64>,
    pub key: Option<String>,
    pub max_keys: Option<i64>,
    pub concurrent: Option<i64>,
    pub headers: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    pub set: Option<BTreeMap<String, String>>,
    pub append: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub prefix: Option<String>,
    pub regex: Option<String>,
    pub replace: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub status: Option<i64>,
    pub location: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPart {
    pub name: String,
    pub upstream: String,
    pub path: String,
    pub method: Option<String>,
    pub timeout: Option<String>,
    pub required: Option<bool>,
    pub max_size: Option<Size>,
}

// ---------------------------------------------------------------------------------------------
// The validated model.

#[derive(Debug, Clone)]
pub struct AuthPolicy {
    pub name: String,
    pub kind: AuthKind,
    /// Header naming the consumer to the upstream (lower-case); None: not sent.
    pub consumer_header: Option<String>,
}

#[derive(Debug, Clone)]
pub enum AuthKind {
    ApiKey(ApiKeyAuth),
    Basic(BasicAuth),
    Jwt(Box<JwtAuth>),
}

#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    /// Header carrying the key (lower-case), if keys are read from a header.
    pub header: Option<String>,
    /// Query parameter carrying the key, if keys are read from the query.
    pub query: Option<String>,
    /// (consumer name, key).
    pub keys: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub realm: String,
    /// (user name, bcrypt hash).
    pub users: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum JwtKey {
    Secret(Vec<u8>),
    RsaPem(Vec<u8>),
    EcPem(Vec<u8>),
    Jwk(Box<jsonwebtoken::jwk::Jwk>),
}

#[derive(Debug, Clone)]
pub struct JwtAuth {
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub keys: Vec<JwtKey>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    /// Claims that must be present; `exp` is in by default.
    pub required_claims: Vec<String>,
    /// Scopes the token must carry (`scope` string or `scp` list); missing ones answer 403.
    pub required_scopes: Vec<String>,
    /// Claim whose value names the consumer. Default: "sub".
    pub consumer_claim: String,
    /// (claim, lower-case header) pairs forwarded upstream.
    pub claims_to_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct RouteAuth {
    /// Index into `Config::auth`.
    pub policy: usize,
    /// When not empty, only these consumers pass; others get 403.
    pub consumers: Vec<String>,
    /// Send the credential (key header/parameter, Authorization) upstream too.
    pub forward_credential: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    Consumer,
    /// Lower-case header name; a request without it is keyed by client IP.
    Header(String),
    Route,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Requests per `per`; 0 when only `concurrent` is set.
    pub rate: u64,
    pub per: Duration,
    /// Requests allowed at once after a quiet spell.
    pub burst: u64,
    pub key: RateKey,
    pub max_keys: usize,
    /// Requests of one key in flight at once.
    pub concurrent: Option<u32>,
    /// Send RateLimit-* headers on allowed responses too (always on 429).
    pub headers: bool,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    /// Lower-case name, value: replaces any header of that name.
    pub set: Vec<(String, Template)>,
    /// Lower-case name, value: added next to existing ones.
    pub append: Vec<(String, Template)>,
    /// Lower-case names.
    pub remove: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Rewrite {
    Prefix {
        prefix: String,
        replace: String,
    },
    /// Pattern text (checked here, compiled per core) and the replacement, regex syntax ($1).
    Regex {
        pattern: String,
        replace: String,
    },
}

#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins, or empty with `any_origin`.
    pub origins: Vec<String>,
    pub any_origin: bool,
    pub methods: String,
    /// Empty: echo what the preflight asked for.
    pub headers: String,
    pub expose: String,
    pub credentials: bool,
    pub max_age: Option<u64>,
}

/// The filters of one route; `None` on the route when it has none, so a plain route pays nothing.
#[derive(Debug, Clone, Default)]
pub struct RouteFilters {
    pub auth: Option<RouteAuth>,
    pub rate_limit: Option<RateLimit>,
    pub request_headers: Option<HeaderRules>,
    pub response_headers: Option<HeaderRules>,
    pub rewrite: Option<Rewrite>,
    pub cors: Option<Cors>,
    pub ip: Option<crate::gateway::ip_access::IpRules>,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub status: u16,
    pub location: Template,
}

#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub path: Template,
    pub method: String,
    pub timeout: Duration,
    /// A failure of this part fails the whole response (502, or 504 on timeout).
    pub required: bool,
    pub max_size: usize,
}

#[derive(Debug, Clone)]
pub struct Aggregate {
    pub parts: Vec<Part>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

const TYPE_KEYS: &[(&str, &[&str])] = &[
    ("api_key", &["header", "query", "keys", "keys_file"]),
    ("basic", &["realm", "users", "users_file"]),
    (
        "jwt",
        &[
            "algorithms",
            "secret",
            "secret_base64",
            "public_key",
            "public_key_file",
            "jwks_file",
            "issuer",
            "audience",
            "leeway",
            "required_claims",
            "required_scopes",
            "consumer_claim",
            "claims_to_headers",
        ],
    ),
];

fn set_keys(a: &RawAuth) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut add = |on: bool, k: &'static str| {
        if on {
            v.push(k)
        }
    };
    add(a.header.is_some(), "header");
    add(a.query.is_some(), "query");
    add(a.keys.is_some(), "keys");
    add(a.keys_file.is_some(), "keys_file");
    add(a.realm.is_some(), "realm");
    add(a.users.is_some(), "users");
    add(a.users_file.is_some(), "users_file");
    add(a.algorithms.is_some(), "algorithms");
    add(a.secret.is_some(), "secret");
    add(a.secret_base64.is_some(), "secret_base64");
    add(a.public_key.is_some(), "public_key");
    add(a.public_key_file.is_some(), "public_key_file");
    add(a.jwks_file.is_some(), "jwks_file");
    add(a.issuer.is_some(), "issuer");
    add(a.audience.is_some(), "audience");
    add(a.leeway.is_some(), "leeway");
    add(a.required_claims.is_some(), "required_claims");
    add(a.required_scopes.is_some(), "required_scopes");
    add(a.consumer_claim.is_some(), "consumer_claim");
    add(a.claims_to_headers.is_some(), "claims_to_headers");
    v
}

pub(super) fn header_name_ok(s: &str) -> bool {
    super::httparse_token(s)
}

fn value_ok(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

impl Validator<'_> {
    /// Resolves a path in the config relative to the config file's folder.
    pub(super) fn rel_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match Path::new(self.file).parent() {
            Some(dir) if !self.file.starts_with('<') => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    fn read_file(&self, key: &str, p: &str) -> Result<String, ConfigError> {
        let path = self.rel_path(p);
        std::fs::read_to_string(&path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))
    }

    fn header_key(&self, key: &str, s: &str) -> Result<String, ConfigError> {
        if !header_name_ok(s) {
            return Err(self.err(key, format!("{s:?} is not a valid header name")));
        }
        Ok(s.to_ascii_lowercase())
    }

    pub(super) fn auth_policy(&self, name: &str, a: &RawAuth) -> Result<AuthPolicy, ConfigError> {
        let key = format!("auth.{name}");
        let Some((_, own)) = TYPE_KEYS.iter().find(|(t, _)| *t == a.kind) else {
            return Err(self.err(
                format!("{key}.type"),
                format!(
                    "unknown auth type {:?} (known: api_key, basic, jwt)",
                    a.kind
                ),
            ));
        };
        if let Some(k) = set_keys(a).into_iter().find(|k| !own.contains(k)) {
            let owner = TYPE_KEYS
                .iter()
                .find(|(_, ks)| ks.contains(&k))
                .map_or("", |(t, _)| t);
            return Err(self.err(
                format!("{key}.{k}"),
                format!("belongs to type = {owner:?}, not {:?}", a.kind),
            ));
        }
        let consumer_header = match a.consumer_header.as_deref() {
            None => Some("x-consumer".to_string()),
            Some("") => None,
            Some(h) => Some(self.header_key(&format!("{key}.consumer_header"), h)?),
        };
        let kind = match a.kind.as_str() {
            "api_key" => AuthKind::ApiKey(self.api_key(&key, a)?),
            "basic" => AuthKind::Basic(self.basic(&key, a)?),
            _ => AuthKind::Jwt(Box::new(self.jwt(&key, a)?)),
        };
        Ok(AuthPolicy {
            name: name.to_string(),
            kind,
            consumer_header,
        })
    }

    /// Lines of `NAME SECRET` (or `NAME:SECRET`); blank lines and `#` comments skipped.
    fn pairs_file(&self, key: &str, p: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let text = self.read_file(key, p)?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let split = line
                .split_once(':')
                .or_else(|| line.split_once(char::is_whitespace));
            match split {
                Some((n, s)) if !n.trim().is_empty() && !s.trim().is_empty() => {
                    out.push((n.trim().to_string(), s.trim().to_string()))
                }
                _ => {
                    return Err(self.err(key, format!("{p}: line {}: expected NAME:SECRET", i + 1)))
                }
            }
        }
        Ok(out)
    }

    fn api_key(&self, key: &str, a: &RawAuth) -> Result<ApiKeyAuth, ConfigError> {
        let header = match (&a.header, &a.query) {
            (None, None) => Some("x-api-key".to_string()),
            (Some(h), _) => Some(self.header_key(&format!("{key}.header"), h)?),
            (None, Some(_)) => None,
        };
        if let Some(q) = &a.query {
            if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
                return Err(self.err(
                    format!("{key}.query"),
                    format!("{q:?} is not a query parameter name"),
                ));
            }
        }
        let mut keys: Vec<(String, String)> = a
            .keys
            .iter()
            .flatten()
            .map(|k| (k.name.clone(), k.key.clone()))
            .collect();
        if let Some(f) = &a.keys_file {
            keys.extend(self.pairs_file(&format!("{key}.keys_file"), f)?);
        }
        if keys.is_empty() {
            return Err(self.err(
                format!("{key}.keys"),
                "no keys: list `keys = [{ name = \"...\", key = \"...\" }]` or `keys_file`",
            ));
        }
        let mut seen = HashSet::new();
        for (n, k) in &keys {
            // Keys travel in headers and query strings: keep them to visible ASCII.
            if k.len() < 8 || !k.bytes().all(|b| b.is_ascii_graphic()) || k.contains(['&', '#']) {
                return Err(self.err(
                    format!("{key}.keys"),
                    format!("key of {n:?} must be at least 8 visible ASCII characters"),
                ));
            }
            if !seen.insert(k.as_str()) {
                return Err(self.err(
                    format!("{key}.keys"),
                    format!("key of {n:?} is listed twice"),
                ));
            }
        }
        Ok(ApiKeyAuth {
            header,
            query: a.query.clone(),
            keys,
        })
    }

    fn basic(&self, key: &str, a: &RawAuth) -> Result<BasicAuth, ConfigError> {
        let mut users: Vec<(String, String)> = a
            .users
            .iter()
            .flatten()
            .map(|u| (u.name.clone(), u.password_hash.clone()))
            .collect();
        if let Some(f) = &a.users_file {
            users.extend(self.pairs_file(&format!("{key}.users_file"), f)?);
        }
        if users.is_empty() {
            return Err(self.err(
                format!("{key}.users"),
                "no users: list `users` or `users_file`",
            ));
        }
        for (n, h) in &users {
            if n.contains(':') {
                return Err(self.err(
                    format!("{key}.users"),
                    format!("user name {n:?} must not contain ':'"),
                ));
            }
            // Plain-text passwords are refused: only bcrypt hashes ($2a$, $2b$, $2y$) are taken.
            if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
                || h.len() != 60
            {
                return Err(self.err(
                    format!("{key}.users"),
                    format!(
                        "password of {n:?} is not a bcrypt hash (\"$2b$...\", 60 characters); \
                         plain-text passwords are not accepted"
                    ),
                ));
            }
        }
        let realm = a.realm.clone().unwrap_or_else(|| "ringway".to_string());
        if !value_ok(&realm) || realm.contains('"') {
            return Err(self.err(
                format!("{key}.realm"),
                "must not contain quotes or newlines",
            ));
        }
        Ok(BasicAuth { realm, users })
    }

    fn jwt(&self, key: &str, a: &RawAuth) -> Result<JwtAuth, ConfigError> {
        use jsonwebtoken::{Algorithm, DecodingKey};
        let algorithms: Vec<Algorithm> = match &a.algorithms {
            None => vec![Algorithm::HS256, Algorithm::RS256, Algorithm::ES256],
            Some(list) => {
                let mut out = Vec::new();
                for s in list {
                    match s.parse::<Algorithm>() {
                        Ok(alg) => out.push(alg),
                        Err(_) => {
                            return Err(self.err(
                                format!("{key}.algorithms"),
                                format!("unknown algorithm {s:?} (e.g. HS256, RS256, ES256)"),
                            ))
                        }
                    }
                }
                out
            }
        };
        let mut keys = Vec::new();
        if let Some(s) = &a.secret {
            if s.len() < 16 {
                return Err(self.err(
                    format!("{key}.secret"),
                    "an HMAC secret shorter than 16 bytes is too easy to guess",
                ));
            }
            keys.push(JwtKey::Secret(s.as_bytes().to_vec()));
        }
        if let Some(s) = &a.secret_base64 {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| {
                    self.err(format!("{key}.secret_base64"), format!("not base64: {e}"))
                })?;
            keys.push(JwtKey::Secret(bytes));
        }
        let mut pems = Vec::new();
        if let Some(p) = &a.public_key {
            pems.push((format!("{key}.public_key"), p.clone()));
        }
        if let Some(f) = &a.public_key_file {
            let k = format!("{key}.public_key_file");
            pems.push((k.clone(), self.read_file(&k, f)?));
        }
        for (k, pem) in pems {
            if DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok() && pem.contains("RSA") {
                keys.push(JwtKey::RsaPem(pem.into_bytes()));
            } else if DecodingKey::from_ec_pem(pem.as_bytes()).is_ok() {
                keys.push(JwtKey::EcPem(pem.into_bytes()));
            } else if DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok() {
                keys.push(JwtKey::RsaPem(pem.into_bytes()));
            } else {
                return Err(self.err(k, "not an RSA or EC public key in PEM form"));
            }
        }
        if let Some(f) = &a.jwks_file {
            let k = format!("{key}.jwks_file");
            let text = self.read_file(&k, f)?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
                .map_err(|e| self.err(&k, format!("{f}: not a JWKS document: {e}")))?;
            for jwk in set.keys {
                DecodingKey::from_jwk(&jwk).map_err(|e| {
                    self.err(
                        &k,
                        format!(
                            "{f}: key {:?} is unusable: {e}",
                            jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                        ),
                    )
                })?;
                keys.push(JwtKey::Jwk(Box::new(jwk)));
            }
        }
        if keys.is_empty() {
            return Err(self.err(
                key,
                "needs a key: secret, secret_base64, public_key, public_key_file or jwks_file",
            ));
        }
        let leeway = self.duration(
            &format!("{key}.leeway"),
            a.leeway.as_ref(),
            Duration::from_secs(30),
        )?;
        let required_claims = a
            .required_claims
            .clone()
            .unwrap_or_else(|| vec!["exp".to_string()]);
        let mut claims_to_headers = Vec::new();
        for (claim, h) in a.claims_to_headers.iter().flatten() {
            claims_to_headers.push((
                claim.clone(),
                self.header_key(&format!("{key}.claims_to_headers.{claim}"), h)?,
            ));
        }
        Ok(JwtAuth {
            algorithms,
            keys,
            issuers: a.issuer.as_ref().map(|i| i.list()).unwrap_or_default(),
            audiences: a.audience.as_ref().map(|i| i.list()).unwrap_or_default(),
            leeway,
            required_claims,
            required_scopes: a.required_scopes.clone().unwrap_or_default(),
            consumer_claim: a
                .consumer_claim
                .clone()
                .unwrap_or_else(|| "sub".to_string()),
            claims_to_headers,
        })
    }

    pub(super) fn route_auth(
        &self,
        key: &str,
        r: &RawRouteAuth,
        policies: &[AuthPolicy],
    ) -> Result<RouteAuth, ConfigError> {
        let (name, consumers, forward) = match r {
            RawRouteAuth::Name(n) => (n, Vec::new(), false),
            RawRouteAuth::Detailed(d) => (
                &d.policy,
                d.consumers.clone().unwrap_or_default(),
                d.forward_credential.unwrap_or(false),
            ),
        };
        let Some(policy) = policies.iter().position(|p| &p.name == name) else {
            return Err(self.err(
                key,
                format!(
                    "unknown auth policy {name:?} (defined: {})",
                    super::defined(
                        policies.iter().map(|p| p.name.as_str()),
                        "none; add [auth.NAME]"
                    )
                ),
            ));
        };
        Ok(RouteAuth {
            policy,
            consumers,
            forward_credential: forward,
        })
    }

    pub(super) fn rate_limit(
        &self,
        key: &str,
        r: &RawRateLimit,
        has_auth: bool,
    ) -> Result<RateLimit, ConfigError> {
        let rate = self.count(&format!("{key}.rate"), r.rate, 0, 0, 1_000_000_000)?;
        let concurrent = match r.concurrent {
            None => None,
            Some(_) => {
                Some(
                    self.count(&format!("{key}.concurrent"), r.concurrent, 0, 1, 1_000_000)? as u32,
                )
            }
        };
        if r.rate.is_none() && concurrent.is_none() {
            return Err(self.err(
                key,
                "needs `rate` (requests per `per`) or `concurrent` (requests in flight)",
            ));
        }
        if r.rate.is_some() && rate == 0 {
            return Err(self.err(format!("{key}.rate"), "must be at least 1"));
        }
        let per = self.duration(
            &format!("{key}.per"),
            r.per.as_ref(),
            Duration::from_secs(1),
        )?;
        if per.is_zero() || per > Duration::from_secs(86_400 * 366) {
            return Err(self.err(format!("{key}.per"), "must be between 1ms and a year"));
        }
        if rate > 0 && per.as_nanos() / (rate as u128) == 0 {
            return Err(self.err(format!("{key}.rate"), "more than one per nanosecond"));
        }
        let burst = self.count(
            &format!("{key}.burst"),
            r.burst,
            rate.max(1),
            1,
            1_000_000_000,
        )?;
        let k = match r.key.as_deref() {
            None | Some("client_ip") | Some("ip") => RateKey::ClientIp,
            Some("consumer") => {
                if !has_auth {
                    return Err(self.err(
                        format!("{key}.key"),
                        "\"consumer\" needs `auth` on the same route",
                    ));
                }
                RateKey::Consumer
            }
            Some("route") => RateKey::Route,
            Some(other) => match other.strip_prefix("header:") {
                Some(h) => RateKey::Header(self.header_key(&format!("{key}.key"), h)?),
                None => {
                    return Err(self.err(
                        format!("{key}.key"),
                        format!(
                            "unknown key {other:?} (known: client_ip, consumer, route, header:NAME)"
                        ),
                    ))
                }
            },
        };
        let max_keys =
            self.count(&format!("{key}.max_keys"), r.max_keys, 65_536, 1, 1 << 24)? as usize;
        Ok(RateLimit {
            rate,
            per,
            burst,
            key: k,
            max_keys,
            concurrent,
            headers: r.headers.unwrap_or(false),
        })
    }

    pub(super) fn header_rules(
        &self,
        key: &str,
        r: &RawHeaderRules,
        vars: &VarCheck<'_>,
    ) -> Result<HeaderRules, ConfigError> {
        let mut out = HeaderRules::default();
        for (field, src, dst) in [
            ("set", &r.set, &mut out.set),
            ("append", &r.append, &mut out.append),
        ] {
            for (n, v) in src.iter().flatten() {
                let k = format!("{key}.{field}.{n}");
                let name = self.header_key(&k, n)?;
                if matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "host"
                ) {
                    return Err(self.err(k, format!("{n:?} is managed by Ringway itself")));
                }
                if !value_ok(v) {
                    return Err(self.err(k, "value must not contain CR, LF or NUL"));
                }
                let t = Template::parse(v).map_err(|e| self.err(&k, e))?;
                vars.check(self, &k, &t)?;
                dst.push((name, t));
            }
        }
        for (i, n) in r.remove.iter().flatten().enumerate() {
            out.remove
                .push(self.header_key(&format!("{key}.remove[{i}]"), n)?);
        }
        Ok(out)
    }

    pub(super) fn rewrite(
        &self,
        key: &str,
        r: &RawRewrite,
        path_prefix: Option<&str>,
    ) -> Result<Rewrite, ConfigError> {
        match (&r.prefix, &r.regex) {
            (Some(p), None) => {
                if !p.starts_with('/') || !r.replace.starts_with('/') {
                    return Err(self.err(key, "prefix and replace must both start with '/'"));
                }
                if let Some(mp) = path_prefix {
                    if !mp.starts_with(p.as_str()) && !p.starts_with(mp) {
                        return Err(self.err(
                            format!("{key}.prefix"),
                            format!("{p:?} can never match paths under match.path_prefix {mp:?}"),
                        ));
                    }
                }
                Ok(Rewrite::Prefix {
                    prefix: p.clone(),
                    replace: r.replace.clone(),
                })
            }
            (None, Some(re)) => {
                regex::Regex::new(re).map_err(|e| {
                    self.err(format!("{key}.regex"), e.to_string().replace('\n', " "))
                })?;
                if !r.replace.starts_with('/') && !r.replace.starts_with('$') {
                    return Err(self.err(format!("{key}.replace"), "must start with '/'"));
                }
                Ok(Rewrite::Regex {
                    pattern: re.clone(),
                    replace: r.replace.clone(),
                })
            }
            _ => Err(self.err(
                key,
                "needs exactly one of `prefix` or `regex`, with `replace`",
            )),
        }
    }

    pub(super) fn redirect(
        &self,
        key: &str,
        r: &RawRedirect,
        vars: &VarCheck<'_>,
    ) -> Result<Redirect, ConfigError> {
        let status = self.count(&format!("{key}.status"), r.status, 302, 0, 999)? as u16;
        if ![301, 302, 303, 307, 308].contains(&status) {
            return Err(self.err(
                format!("{key}.status"),
                format!("{status} is not a redirect (301, 302, 303, 307, 308)"),
            ));
        }
        if !value_ok(&r.location) || r.location.is_empty() {
            return Err(self.err(format!("{key}.location"), "must be a non-empty single line"));
        }
        let k = format!("{key}.location");
        let location = Template::parse(&r.location).map_err(|e| self.err(&k, e))?;
        vars.check(self, &k, &location)?;
        Ok(Redirect { status, location })
    }

    pub(super) fn cors(&self, key: &str, c: &RawCors) -> Result<Cors, ConfigError> {
        if c.allow_origins.is_empty() {
            return Err(self.err(
                format!("{key}.allow_origins"),
                "list at least one origin or \"*\"",
            ));
        }
        let any_origin = c.allow_origins.iter().any(|o| o == "*");
        let credentials = c.allow_credentials.unwrap_or(false);
        if any_origin && credentials {
            return Err(self.err(
                format!("{key}.allow_credentials"),
                "browsers refuse credentials with origin \"*\"; list the origins",
            ));
        }
        for o in &c.allow_origins {
            if o != "*"
                && (!(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
            {
                return Err(self.err(
                    format!("{key}.allow_origins"),
                    format!("{o:?} is not an origin like \"https://app.example.com\""),
                ));
            }
        }
        let join =
            |field: &str, v: &Option<Vec<String>>, dflt: &str| -> Result<String, ConfigError> {
                match v {
                    None => Ok(dflt.to_string()),
                    Some(list) => {
                        for s in list {
                            if !header_name_ok(s) && s != "*" {
                                return Err(self.err(
                                    format!("{key}.{field}"),
                                    format!("{s:?} is not a token"),
                                ));
                            }
                        }
                        Ok(list.join(", "))
                    }
                }
            };
        let max_age = match &c.max_age {
            None => None,
            Some(s) => Some(
                self.duration(&format!("{key}.max_age"), Some(s), Duration::ZERO)?
                    .as_secs(),
            ),
        };
        Ok(Cors {
            origins: c
                .allow_origins
                .iter()
                .filter(|o| *o != "*")
                .cloned()
                .collect(),
            any_origin,
            methods: join(
                "allow_methods",
                &c.allow_methods,
                "GET, HEAD, POST, PUT, PATCH, DELETE",
            )?,
            headers: join("allow_headers", &c.allow_headers, "")?,
            expose: join("expose_headers", &c.expose_headers, "")?,
            credentials,
            max_age,
        })
    }

    pub(super) fn aggregate(
        &self,
        key: &str,
        parts: &[RawPart],
        upstreams: &BTreeMap<String, usize>,
        vars: &VarCheck<'_>,
    ) -> Result<Aggregate, ConfigError> {
        if parts.is_empty() {
            return Err(self.err(key, "needs at least one part"));
        }
        let mut out: Vec<Part> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let k = format!("{key}[{i}]");
            if p.name.is_empty() || p.name == "errors" || out.iter().any(|q| q.name == p.name) {
                return Err(self.err(
                    format!("{k}.name"),
                    format!("{:?} must be non-empty, unique and not \"errors\"", p.name),
                ));
            }
            let Some(&upstream) = upstreams.get(&p.upstream) else {
                return Err(self.err(
                    format!("{k}.upstream"),
                    format!("unknown upstream {:?}", p.upstream),
                ));
            };
            if !p.path.starts_with('/') || !value_ok(&p.path) || p.path.contains(' ') {
                return Err(self.err(
                    format!("{k}.path"),
                    "must start with '/' and hold no spaces",
                ));
            }
            let path = Template::parse(&p.path).map_err(|e| self.err(format!("{k}.path"), e))?;
            vars.check(self, &format!("{k}.path"), &path)?;
            let method = p.method.clone().unwrap_or_else(|| "GET".to_string());
            if !header_name_ok(&method) {
                return Err(self.err(format!("{k}.method"), format!("{method:?} is not a method")));
            }
            let max_size = match &p.max_size {
                None => 1 << 20,
                Some(Size::Bytes(n)) if *n > 0 => *n as u64,
                Some(Size::Bytes(n)) => {
                    return Err(self.err(format!("{k}.max_size"), format!("{n} is not a size")))
                }
                Some(Size::Text(s)) => {
                    parse_size(s).map_err(|r| self.err(format!("{k}.max_size"), r))?
                }
            };
            out.push(Part {
                name: p.name.clone(),
                upstream,
                path,
                method: method.to_ascii_uppercase(),
                timeout: self.duration(
                    &format!("{k}.timeout"),
                    p.timeout.as_ref(),
                    Duration::from_secs(5),
                )?,
                required: p.required.unwrap_or(false),
                max_size: max_size.min(64 << 20) as usize,
            });
        }
        Ok(Aggregate { parts: out })
    }
}

/// What a route's templates may refer to: path parameters of its pattern, and auth facts.
pub(super) struct VarCheck<'a> {
    pub pattern: Option<&'a PathPattern>,
    pub auth: Option<&'a AuthPolicy>,
}

impl VarCheck<'_> {
    fn check(&self, v: &Validator<'_>, key: &str, t: &Template) -> Result<(), ConfigError> {
        for var in t.vars() {
            match var {
                Var::Param(p) if !self.pattern.is_some_and(|pat| pat.has_param(p)) => {
                    return Err(v.err(
                        key,
                        format!(
                            "${{param.{p}}} is not a parameter of this route's match.path_pattern"
                        ),
                    ))
                }
                Var::Consumer if self.auth.is_none() => {
                    return Err(v.err(key, "${consumer} needs `auth` on this route"))
                }
                Var::Claim(c) if !matches!(self.auth.map(|a| &a.kind), Some(AuthKind::Jwt(_))) => {
                    return Err(v.err(
                        key,
                        format!("${{claim.{c}}} needs a jwt `auth` policy on this route"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
