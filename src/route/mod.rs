//! The route table: first match wins on host, path (exact or prefix), method and headers.
//! Built once per core from the config; matching allocates nothing.

use crate::config::{self, Route};
use httparse::Header;

enum HostMatch {
    Any,
    /// Lower-case host without port.
    Exact(String),
    /// Lower-case suffix starting with '.', from "*.example.com".
    Suffix(String),
}

struct Compiled {
    host: HostMatch,
    path: Option<String>,
    path_prefix: Option<String>,
    method: Option<String>,
    headers: Vec<(String, String)>,
    pattern: Option<config::PathPattern>,
}

pub struct Router {
    routes: Vec<Compiled>,
    /// Some route matches on host / on path: only then is the request's host normalised or
    /// its query split off (a catch-all table does neither, per request).
    needs_host: bool,
    needs_path: bool,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        let routes: Vec<Compiled> = routes.iter().map(|r| compile(&r.matcher)).collect();
        Self {
            needs_host: routes.iter().any(|r| !matches!(r.host, HostMatch::Any)),
            needs_path: routes
                .iter()
                .any(|r| r.path.is_some() || r.path_prefix.is_some() || r.pattern.is_some()),
            routes,
        }
    }

    /// Index of the first route that matches, into `Config::routes`.
    pub fn find(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[Header<'_>],
    ) -> Option<usize> {
        let host = if self.needs_host {
            normalize_host(host)
        } else {
            host
        };
        // Query strings never take part in path matching.
        let path = match self.needs_path {
            true => memchr::memchr(b'?', path.as_bytes()).map_or(path, |i| &path[..i]),
            false => path,
        };
        self.routes
            .iter()
            .position(|r| r.matches(method, host, path, headers))
    }
}

impl Compiled {
    #[inline]
    fn matches(&self, method: &str, host: &str, path: &str, headers: &[Header<'_>]) -> bool {
        if let Some(m) = &self.method {
            if m != method {
                return false;
            }
        }
        match &self.host {
            HostMatch::Any => {}
            HostMatch::Exact(h) => {
                if !h.eq_ignore_ascii_case(host) {
                    return false;
                }
            }
            HostMatch::Suffix(s) => {
                if host.len() <= s.len()
                    || !host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
                {
                    return false;
                }
            }
        }
        if let Some(p) = &self.path {
            if p != path {
                return false;
            }
        }
        if let Some(p) = &self.path_prefix {
            if !path.starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.pattern {
            if !p.matches(path) {
                return false;
            }
        }
        self.headers.iter().all(|(name, value)| {
            headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name) && h.value == value.as_bytes())
        })
    }
}

fn compile(m: &config::Match) -> Compiled {
    let host = match &m.host {
        None => HostMatch::Any,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_string()),
            None => HostMatch::Exact(h.clone()),
        },
    };
    Compiled {
        host,
        path: m.path.clone(),
        path_prefix: m.path_prefix.clone(),
        method: m.method.clone(),
        headers: m.headers.clone(),
        pattern: m.path_pattern.clone(),
    }
}

/// Drops the port and a trailing dot: "Example.COM.:8080" matches "example.com".
pub fn normalize_host(host: &str) -> &str {
    let no_port = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    no_port.strip_suffix('.').unwrap_or(no_port)
}

/// The path sent upstream when a route strips its matched prefix; always starts with '/'.
pub fn strip_prefix<'a>(path: &'a str, prefix: &str) -> (&'static str, &'a str) {
    let rest = path.get(prefix.len()..).unwrap_or("");
    if rest.starts_with('/') {
        ("", rest)
    } else {
        ("/", rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml: &str) -> Router {
        let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{toml}");
        let c = config::parse(&text, "t").unwrap();
        Router::new(&c.routes)
    }

    #[test]
    fn host_path_method() {
        let r = router(
            r#"
[[route]]
match = { host = "*.example.com", path_prefix = "/api/" }
respond = { status = 200 }
[[route]]
match = { host = "example.com", path = "/exact", method = "POST" }
respond = { status = 201 }
[[route]]
match = { headers = { "x-version" = "2" } }
respond = { status = 202 }
"#,
        );
        assert_eq!(
            r.find("GET", "a.Example.com:8080", "/api/x?y=1", &[]),
            Some(0)
        );
        assert_eq!(r.find("GET", "example.com", "/api/x", &[]), None);
        assert_eq!(r.find("POST", "EXAMPLE.com.", "/exact?q", &[]), Some(1));
        assert_eq!(r.find("GET", "example.com", "/exact", &[]), None);
        let h = [Header {
            name: "X-Version",
            value: b"2",
        }];
        assert_eq!(r.find("GET", "other", "/", &h), Some(2));
    }

    #[test]
    fn strip() {
        assert_eq!(strip_prefix("/api/users?x", "/api"), ("", "/users?x"));
        assert_eq!(strip_prefix("/api/users", "/api/"), ("/", "users"));
        assert_eq!(strip_prefix("/api", "/api"), ("/", ""));
    }
}
