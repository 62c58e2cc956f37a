//! Two small languages of the config, parsed once at load time into plain data: value
//! templates (`"Bearer ${claim.sub} from ${client_ip}"`) used by header rules, redirects,
//! aggregation paths and (with their own variables) the access log's format, and path patterns (`"/users/{id}/orders/{*rest}"`) that routes match
//! and whose parameters templates can read. Rendering lives in `gateway::headers`; this module
//! only knows the grammar, so config stays free of request types.

/// One variable a template can read from the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    /// The request id (the client's, or the one Ringway generates for this request).
    RequestId,
    /// The consumer name set by authentication (empty without).
    Consumer,
    /// A JWT claim by name; strings as is, other JSON values in their JSON form.
    Claim(String),
    /// A parameter of the route's `match.path_pattern`.
    Param(String),
    /// A request header, lower-case name; the first one when repeated.
    Header(String),
    /// A query parameter by name, as sent (not percent-decoded).
    Query(String),
    Host,
    /// The path without the query string.
    Path,
    /// The query string without '?', empty when none.
    QueryString,
    Method,
    Route,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<V = Var> {
    Lit(String),
    Var(V),
}

/// A parsed template; a template without variables is one literal piece. `V` is the set of
/// variables it may read: the request's (`Var`) unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<V = Var> {
    pub pieces: Vec<Piece<V>>,
}

impl Template {
    /// Parses `${name}` variables; `$$` is a literal dollar sign. Errors say what is wrong.
    pub fn parse(s: &str) -> Result<Template, String> {
        Template::parse_with(s, parse_var)
    }
}

impl<V> Template<V> {
    /// Parses a template whose variable names `var` knows.
    pub fn parse_with(
        s: &str,
        var: impl Fn(&str) -> Result<V, String>,
    ) -> Result<Template<V>, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                return Err(format!(
                    "'$' must start a variable like ${{client_ip}} (write $$ for a dollar sign) in {s:?}"
                ));
            };
            let Some(end) = body.find('}') else {
                return Err(format!("unclosed '${{' in {s:?}"));
            };
            let v = var(&body[..end])?;
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(v));
            rest = &body[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    pub fn vars(&self) -> impl Iterator<Item = &V> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Lit(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }
}

/// The argument of a `${prefix.NAME}` variable: None when `name` has another prefix, an
/// error when the NAME is missing.
pub(super) fn var_arg(name: &str, prefix: &str) -> Result<Option<String>, String> {
    match name.strip_prefix(prefix) {
        Some("") => Err(format!("${{{name}}} needs a name after {prefix:?}")),
        Some(a) => Ok(Some(a.to_string())),
        None => Ok(None),
    }
}

fn parse_var(name: &str) -> Result<Var, String> {
    let arg = |prefix: &str| var_arg(name, prefix);
    if let Some(c) = arg("claim.")? {
        return Ok(Var::Claim(c));
    }
    if let Some(p) = arg("param.")? {
        return Ok(Var::Param(p));
    }
    if let Some(h) = arg("header.")? {
        return Ok(Var::Header(h.to_ascii_lowercase()));
    }
    if let Some(q) = arg("query.")? {
        return Ok(Var::Query(q));
    }
    Ok(match name {
        "client_ip" => Var::ClientIp,
        "request_id" => Var::RequestId,
        "consumer" => Var::Consumer,
        "host" => Var::Host,
        "path" => Var::Path,
        "query" => Var::QueryString,
        "method" => Var::Method,
        "route" => Var::Route,
        _ => {
            return Err(format!(
                "unknown variable ${{{name}}} (known: client_ip, request_id, consumer, host, path, \
                 query, method, route, claim.NAME, param.NAME, header.NAME, query.NAME)"
            ))
        }
    })
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(String),
    /// `{name}`: exactly one non-empty segment.
    Param(String),
    /// `{*name}`: the rest of the path (possibly empty), only last.
    Rest(String),
}

/// `"/users/{id}/orders/{*rest}"`: matched segment by segment, no regex, no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub segs: Vec<Seg>,
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        let Some(body) = s.strip_prefix('/') else {
            return Err(format!("{s:?} must start with '/'"));
        };
        let mut segs = Vec::new();
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                if let Some(rest) = inner.strip_prefix('*') {
                    if i + 1 != parts.len() {
                        return Err(format!("{{*{rest}}} must be the last segment of {s:?}"));
                    }
                    Seg::Rest(valid_name(rest, s)?)
                } else {
                    Seg::Param(valid_name(inner, s)?)
                }
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "a parameter must be a whole segment like /{{id}}/ in {s:?}"
                ));
            } else {
                Seg::Lit(part.to_string())
            };
            if let Seg::Param(n) | Seg::Rest(n) = &seg {
                if segs
                    .iter()
                    .any(|x| matches!(x, Seg::Param(m) | Seg::Rest(m) if m == n))
                {
                    return Err(format!("parameter {n:?} appears twice in {s:?}"));
                }
            }
            segs.push(seg);
        }
        Ok(PathPattern { segs })
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.segs
            .iter()
            .any(|s| matches!(s, Seg::Param(n) | Seg::Rest(n) if n == name))
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| {})
    }

    /// Calls `f(name, value)` for each parameter of a matching path; false when it does not match.
    pub fn walk<'p>(&self, path: &'p str, mut f: impl FnMut(&str, &'p str)) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let n = self.segs.len();
        for (i, seg) in self.segs.iter().enumerate() {
            if let Seg::Rest(name) = seg {
                f(name, rest);
                return true;
            }
            let (part, tail) = match rest.find('/') {
                Some(j) => (&rest[..j], Some(&rest[j + 1..])),
                None => (rest, None),
            };
            match seg {
                Seg::Lit(l) if l == part => {}
                Seg::Param(name) if !part.is_empty() => f(name, part),
                _ => return false,
            }
            match tail {
                Some(t) => {
                    if i + 1 == n {
                        return false;
                    }
                    rest = t;
                }
                None => {
                    // The path ended: only a trailing {*rest} may still match (empty).
                    return match self.segs.get(i + 1) {
                        None => true,
                        Some(Seg::Rest(name)) if i + 2 == n => {
                            f(name, "");
                            true
                        }
                        _ => false,
                    };
                }
            }
        }
        false
    }
}

fn valid_name(n: &str, s: &str) -> Result<String, String> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "parameter name {n:?} in {s:?} must be letters, digits or '_'"
        ));
    }
    Ok(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_pieces() {
        let t = Template::parse("Bearer ${claim.sub}@${client_ip} $$5").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Lit("Bearer ".into()),
                Piece::Var(Var::Claim("sub".into())),
                Piece::Lit("@".into()),
                Piece::Var(Var::ClientIp),
                Piece::Lit(" $5".into()),
            ]
        );
        assert!(Template::parse("plain").unwrap().is_literal());
        assert_eq!(
            Template::parse("${header.X-Tenant}").unwrap().pieces,
            vec![Piece::Var(Var::Header("x-tenant".into()))]
        );
    }

    #[test]
    fn template_errors() {
        assert!(Template::parse("${nope}")
            .unwrap_err()
            .contains("unknown variable"));
        assert!(Template::parse("${claim.}").is_err());
        assert!(Template::parse("${host").unwrap_err().contains("unclosed"));
        assert!(Template::parse("$host").is_err());
    }

    #[test]
    fn pattern_matching() {
        let p = PathPattern::parse("/users/{id}/orders/{oid}").unwrap();
        let mut got = Vec::new();
        assert!(p.walk("/users/7/orders/9", |n, v| got.push((n.to_string(), v))));
        assert_eq!(got, vec![("id".into(), "7"), ("oid".into(), "9")]);
        assert!(!p.matches("/users/7/orders"));
        assert!(!p.matches("/users/7/orders/9/x"));
        assert!(!p.matches("/users//orders/9"));
        let r = PathPattern::parse("/files/{*rest}").unwrap();
        assert!(r.matches("/files/a/b/c"));
        assert!(r.matches("/files"));
        assert!(r.matches("/files/"));
        assert!(!r.matches("/file"));
        assert!(PathPattern::parse("/a/{x}/{x}").is_err());
        assert!(PathPattern::parse("/a/{*x}/b").is_err());
        assert!(PathPattern::parse("/a/x{y}").is_err());
    }
}
