//! Header rules (set, append, remove on requests and responses) and the renderer of the value
//! template language parsed in `config::template`. Rendering appends straight into the output
//! buffer: a rule costs no allocation of its own. Values from the request (headers, claims,
//! parameters) are cleaned for where they land: control bytes never reach a header, and a path
//! gets percent-encoding, so no value can split a head or smuggle a request line.

use crate::config::{HeaderRules, PathPattern, Piece, Template, Var};
use serde_json::{Map, Value};

/// Everything a template can read about the request being served.
pub struct Vars<'a> {
    /// Method, host, target (path and query as received), headers, client address.
    pub req: super::Request<'a>,
    pub route: &'a str,
    pub request_id: &'a [u8],
    pub consumer: &'a str,
    pub claims: Option<&'a Map<String, Value>>,
    pub pattern: Option<&'a PathPattern>,
}

/// Where a rendered value goes, which decides how request data is escaped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Escape {
    /// A header value: control bytes dropped.
    Header,
    /// A request path: bytes outside RFC 3986 pchar (and '/') percent-encoded.
    Path,
}

impl Vars<'_> {
    pub fn path(&self) -> &str {
        self.req
            .target
            .split_once('?')
            .map_or(self.req.target, |(p, _)| p)
    }

    pub fn query(&self) -> &str {
        self.req.target.split_once('?').map_or("", |(_, q)| q)
    }

    fn param(&self, name: &str) -> &str {
        let mut found = "";
        if let Some(p) = self.pattern {
            p.walk(self.path(), |n, v| {
                if n == name {
                    found = v;
                }
            });
        }
        found
    }
}

/// Appends `t` rendered against `v`.
pub fn render(t: &Template, v: &Vars<'_>, esc: Escape, out: &mut Vec<u8>) {
    for piece in &t.pieces {
        match piece {
            // Literals were checked at load time.
            Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
            Piece::Var(var) => {
                let push = |out: &mut Vec<u8>, b: &[u8]| push_clean(out, b, esc);
                match var {
                    Var::ClientIp => push(out, v.req.client_ip.as_bytes()),
                    Var::RequestId => push(out, v.request_id),
                    Var::Consumer => push(out, v.consumer.as_bytes()),
                    Var::Host => push(out, v.req.host.as_bytes()),
                    Var::Path => push(out, v.path().as_bytes()),
                    Var::QueryString => push(out, v.query().as_bytes()),
                    Var::Method => push(out, v.req.method.as_bytes()),
                    Var::Route => push(out, v.route.as_bytes()),
                    Var::Param(p) => push(out, v.param(p).as_bytes()),
                    Var::Query(q) => {
                        push(out, query_param(v.req.target, q).unwrap_or("").as_bytes())
                    }
                    Var::Header(h) => push(
                        out,
                        crate::gateway::auth::header(v.req.headers, h).unwrap_or(b""),
                    ),
                    Var::Claim(c) => match v.claims.and_then(|m| m.get(c)) {
                        Some(Value::String(s)) => push(out, s.as_bytes()),
                        Some(Value::Null) | None => {}
                        Some(other) => push(out, other.to_string().as_bytes()),
                    },
                }
            }
        }
    }
}

fn push_clean(out: &mut Vec<u8>, b: &[u8], esc: Escape) {
    match esc {
        Escape::Header => out.extend(
            b.iter()
                .copied()
                .filter(|c| *c == b'\t' || (*c >= 0x20 && *c != 0x7f)),
        ),
        Escape::Path => {
            for &c in b {
                let keep = c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&c);
                if keep {
                    out.push(c);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
                }
            }
        }
    }
}

/// Appends the `set` and `append` lines of `rules` ("name: value\r\n" each).
pub fn write_rules(rules: &HeaderRules, v: &Vars<'_>, out: &mut Vec<u8>) {
    for (name, t) in rules.set.iter().chain(rules.append.iter()) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        render(t, v, Escape::Header, out);
        out.extend_from_slice(b"\r\n");
    }
}

/// Names whose incoming headers must not pass: removed ones, and `set` ones (replaced).
pub fn dropped_names(rules: &HeaderRules) -> impl Iterator<Item = &String> {
    rules.remove.iter().chain(rules.set.iter().map(|(n, _)| n))
}

/// The raw value of query parameter `name` in `target`, if present.
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, q) = target.split_once('?')?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `target` without every `name=...` query parameter (the credential of an API-key route).
pub fn without_query_param(target: &str, name: &str) -> String {
    let Some((path, q)) = target.split_once('?') else {
        return target.to_string();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    let mut first = true;
    for pair in q.split('&') {
        let k = pair.split_once('=').map_or(pair, |(k, _)| k);
        if k == name || pair.is_empty() {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        out.push_str(pair);
    }
    out
}

/// Whether header `name` is in `list` (both lower-case on our side; the request's any case).
#[inline]
pub fn listed(list: &[String], name: &str) -> bool {
    list.iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use httparse::Header;
    use serde_json::json;

    fn vars<'a>(
        headers: &'a [Header<'a>],
        claims: &'a Map<String, Value>,
        p: &'a PathPattern,
    ) -> Vars<'a> {
        Vars {
            req: crate::gateway::Request {
                method: "GET",
                host: "api.example.com",
                target: "/users/42/orders?limit=5&x=%20",
                headers,
                client_ip: "10.0.0.1",
            },
            route: "orders",
            request_id: b"abc123",
            consumer: "acme",
            claims: Some(claims),
            pattern: Some(p),
        }
    }

    #[test]
    fn renders_every_variable() {
        let h = [Header {
            name: "X-Tenant",
            value: b"t1\r\nevil: 1",
        }];
        let c = json!({"sub": "alice", "roles": ["a", "b"], "n": 7});
        let claims = c.as_object().unwrap();
        let p = PathPattern::parse("/users/{id}/orders").unwrap();
        let v = vars(&h, claims, &p);
        let t = Template::parse(
            "${client_ip}|${request_id}|${consumer}|${claim.sub}|${claim.roles}|${claim.n}|\
             ${param.id}|${header.x-tenant}|${query.limit}|${host}|${path}|${query}|${method}|${route}|${claim.none}",
        )
        .unwrap();
        let mut out = Vec::new();
        render(&t, &v, Escape::Header, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "10.0.0.1|abc123|acme|alice|[\"a\",\"b\"]|7|42|t1evil: 1|5|api.example.com|\
             /users/42/orders|limit=5&x=%20|GET|orders|"
        );
    }

    #[test]
    fn path_escaping() {
        let h = [Header {
            name: "x-q",
            value: b"a b/../?#\r\n",
        }];
        let c = json!({});
        let p = PathPattern::parse("/users/{id}/orders").unwrap();
        let v = vars(&h, c.as_object().unwrap(), &p);
        let t = Template::parse("/items/${header.x-q}").unwrap();
        let mut out = Vec::new();
        render(&t, &v, Escape::Path, &mut out);
        assert_eq!(out, b"/items/a%20b/../%3F%23%0D%0A");
    }

    #[test]
    fn query_helpers() {
        assert_eq!(query_param("/a?k=1&key=v", "key"), Some("v"));
        assert_eq!(query_param("/a?key", "key"), Some(""));
        assert_eq!(query_param("/a", "key"), None);
        assert_eq!(without_query_param("/a?x=1&key=s&y=2", "key"), "/a?x=1&y=2");
        assert_eq!(without_query_param("/a?key=s", "key"), "/a");
        assert_eq!(without_query_param("/a", "key"), "/a");
    }

    #[test]
    fn rules_lines() {
        let rules = HeaderRules {
            set: vec![("x-user".into(), Template::parse("${consumer}").unwrap())],
            append: vec![("x-via".into(), Template::parse("gw").unwrap())],
            remove: vec!["x-secret".into()],
        };
        let c = json!({});
        let p = PathPattern::parse("/").unwrap();
        let v = vars(&[], c.as_object().unwrap(), &p);
        let mut out = Vec::new();
        write_rules(&rules, &v, &mut out);
        assert_eq!(out, b"x-user: acme\r\nx-via: gw\r\n");
        let names: Vec<&String> = dropped_names(&rules).collect();
        assert_eq!(names, ["x-secret", "x-user"]);
    }
}
