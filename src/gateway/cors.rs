//! CORS per route: answers preflight requests itself (they never reach the upstream or the
//! auth filter: browsers send them without credentials) and adds the response headers to
//! allowed cross-origin requests.

use crate::config::Cors;
use crate::gateway::auth::header;
use crate::http::fmt::push_dec;
use httparse::Header;

pub enum Preflight {
    /// Not a preflight: go on with the other filters.
    No,
    /// Answer 204 with these header lines.
    Allow,
    /// A preflight from an origin (or for a method) that is not allowed: 403.
    Deny,
}

/// The request's Origin when this policy allows it.
pub fn allowed_origin<'a>(c: &Cors, headers: &'a [Header<'_>]) -> Option<&'a [u8]> {
    let origin = header(headers, "origin")?;
    (c.any_origin || c.origins.iter().any(|o| o.as_bytes() == origin)).then_some(origin)
}

pub fn preflight(c: &Cors, method: &str, headers: &[Header<'_>]) -> Preflight {
    if method != "OPTIONS" {
        return Preflight::No;
    }
    let Some(want) = header(headers, "access-control-request-method") else {
        return Preflight::No;
    };
    if allowed_origin(c, headers).is_none() {
        return Preflight::Deny;
    }
    let allowed = c
        .methods
        .split(", ")
        .any(|m| m.as_bytes() == want || m == "*");
    if allowed {
        Preflight::Allow
    } else {
        Preflight::Deny
    }
}

/// Header lines of a successful preflight answer.
pub fn write_preflight(c: &Cors, headers: &[Header<'_>], out: &mut Vec<u8>) {
    write_origin(c, headers, out);
    out.extend_from_slice(b"access-control-allow-methods: ");
    out.extend_from_slice(c.methods.as_bytes());
    out.extend_from_slice(b"\r\n");
    let allow_headers: &[u8] = if c.headers.is_empty() {
        // No list configured: allow what the browser asked for.
        header(headers, "access-control-request-headers").unwrap_or(b"")
    } else {
        c.headers.as_bytes()
    };
    if !allow_headers.is_empty() {
        out.extend_from_slice(b"access-control-allow-headers: ");
        out.extend(
            allow_headers
                .iter()
                .copied()
                .filter(|b| *b >= 0x20 && *b != 0x7f),
        );
        out.extend_from_slice(b"\r\n");
    }
    if let Some(age) = c.max_age {
        out.extend_from_slice(b"access-control-max-age: ");
        push_dec(out, age);
        out.extend_from_slice(b"\r\n");
    }
}

/// Header lines for an actual cross-origin request from an allowed origin; nothing otherwise.
pub fn write_actual(c: &Cors, headers: &[Header<'_>], out: &mut Vec<u8>) {
    if !write_origin(c, headers, out) {
        return;
    }
    if !c.expose.is_empty() {
        out.extend_from_slice(b"access-control-expose-headers: ");
        out.extend_from_slice(c.expose.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn write_origin(c: &Cors, headers: &[Header<'_>], out: &mut Vec<u8>) -> bool {
    let Some(origin) = allowed_origin(c, headers) else {
        return false;
    };
    out.extend_from_slice(b"access-control-allow-origin: ");
    if c.any_origin {
        out.push(b'*');
    } else {
        out.extend_from_slice(origin);
    }
    out.extend_from_slice(b"\r\n");
    if !c.any_origin {
        // The answer depends on Origin: caches must keep one copy per origin.
        out.extend_from_slice(b"vary: Origin\r\n");
    }
    if c.credentials {
        out.extend_from_slice(b"access-control-allow-credentials: true\r\n");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            origins: vec!["https://app.example.com".into()],
            any_origin: false,
            methods: "GET, POST".into(),
            headers: String::new(),
            expose: "x-total".into(),
            credentials: true,
            max_age: Some(600),
        }
    }

    #[test]
    fn preflight_rules() {
        let c = cors();
        let h = [
            Header {
                name: "Origin",
                value: b"https://app.example.com",
            },
            Header {
                name: "Access-Control-Request-Method",
                value: b"POST",
            },
            Header {
                name: "Access-Control-Request-Headers",
                value: b"x-a, content-type",
            },
        ];
        assert!(matches!(preflight(&c, "OPTIONS", &h), Preflight::Allow));
        let mut out = Vec::new();
        write_preflight(&c, &h, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("access-control-allow-origin: https://app.example.com\r\n"));
        assert!(s.contains("access-control-allow-headers: x-a, content-type\r\n"));
        assert!(s.contains("access-control-max-age: 600\r\n"));
        assert!(s.contains("access-control-allow-credentials: true\r\n"));
        let bad = [
            Header {
                name: "Origin",
                value: b"https://evil.example",
            },
            Header {
                name: "Access-Control-Request-Method",
                value: b"POST",
            },
        ];
        assert!(matches!(preflight(&c, "OPTIONS", &bad), Preflight::Deny));
        let put = [
            Header {
                name: "Origin",
                value: b"https://app.example.com",
            },
            Header {
                name: "Access-Control-Request-Method",
                value: b"PUT",
            },
        ];
        assert!(matches!(preflight(&c, "OPTIONS", &put), Preflight::Deny));
        assert!(matches!(preflight(&c, "GET", &h), Preflight::No));
    }
}
