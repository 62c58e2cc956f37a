//! Path rewrites before forwarding: replace a prefix, or a regex with captures (`$1`, `${name}`,
//! the regex crate's replacement syntax). The query string is kept as is.

use crate::config::Rewrite;
use regex::Regex;

pub enum Rewriter {
    Prefix { prefix: String, replace: String },
    Regex { re: Regex, replace: String },
}

impl Rewriter {
    pub fn new(r: &Rewrite) -> Option<Self> {
        Some(match r {
            Rewrite::Prefix { prefix, replace } => Rewriter::Prefix {
                prefix: prefix.clone(),
                replace: replace.clone(),
            },
            // Compiled once at load already; failing here cannot happen for a validated config.
            Rewrite::Regex { pattern, replace } => Rewriter::Regex {
                re: Regex::new(pattern).ok()?,
                replace: replace.clone(),
            },
        })
    }

    /// The new target for `target` (path and query), or None when the rule does not apply.
    pub fn apply(&self, target: &str) -> Option<String> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut out = match self {
            Rewriter::Prefix { prefix, replace } => {
                let rest = path.strip_prefix(prefix.as_str())?;
                let mut s = String::with_capacity(replace.len() + rest.len() + 1);
                s.push_str(replace);
                s.push_str(rest);
                s
            }
            Rewriter::Regex { re, replace } => {
                if !re.is_match(path) {
                    return None;
                }
                re.replace(path, replace.as_str()).into_owned()
            }
        };
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        // A replacement must not be able to forge a request line.
        out.retain(|c| !c.is_ascii_control() && c != ' ');
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            // A replacement with its own query gets the client's parameters after it (as nginx).
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(q);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        let r = Rewriter::new(&Rewrite::Prefix {
            prefix: "/api/v1/".into(),
            replace: "/v2/".into(),
        })
        .unwrap();
        assert_eq!(
            r.apply("/api/v1/users?x=1").as_deref(),
            Some("/v2/users?x=1")
        );
        assert_eq!(r.apply("/other"), None);
    }

    #[test]
    fn regex_captures() {
        let r = Rewriter::new(&Rewrite::Regex {
            pattern: r"^/users/(\d+)/profile$".into(),
            replace: "/profiles/$1".into(),
        })
        .unwrap();
        assert_eq!(
            r.apply("/users/42/profile?a").as_deref(),
            Some("/profiles/42?a")
        );
        assert_eq!(r.apply("/users/x/profile"), None);
        let r = Rewriter::new(&Rewrite::Regex {
            pattern: r"^/(?P<svc>\w+)/(.*)$".into(),
            replace: "/${svc}-svc/$2".into(),
        })
        .unwrap();
        assert_eq!(r.apply("/orders/1/2").as_deref(), Some("/orders-svc/1/2"));
        let r = Rewriter::new(&Rewrite::Regex {
            pattern: r"^/u/(\d+)$".into(),
            replace: "/users?id=$1".into(),
        })
        .unwrap();
        assert_eq!(r.apply("/u/5?x=1").as_deref(), Some("/users?id=5&x=1"));
    }
}
