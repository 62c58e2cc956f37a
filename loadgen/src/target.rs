//! Target URLs: parsing `URL[@weight]`, resolving each origin once (before any runtime starts,
//! because resolution blocks) and pre-encoding every request.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::http;

/// One URL as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path plus query, always starting with '/'.
    pub path: String,
    pub weight: u32,
}

impl Url {
    /// Parses `http[s]://host[:port][/path][?query][@weight]`.
    pub fn parse(spec: &str) -> Result<Url, String> {
        let (url, weight) = match spec.rsplit_once('@') {
            Some((u, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                let w: u32 = w.parse().map_err(|_| format!("{spec}: weight too large"))?;
                if w == 0 {
                    return Err(format!("{spec}: weight must be at least 1"));
                }
                (u, w)
            }
            _ => (spec, 1),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("{spec}: URL must start with http:// or https://"));
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path.strip_prefix('?') {
            Some(q) => format!("/?{q}"),
            None if path.is_empty() => "/".to_string(),
            None => path.to_string(),
        };
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{spec}: unclosed '[' in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(spec, p)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{spec}: junk after IPv6 host")),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(spec, p)?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("{spec}: missing host"));
        }
        Ok(Url {
            tls,
            host,
            port,
            path,
            weight,
        })
    }

    /// The Host header value: the port is left out when it is the scheme default.
    pub fn host_header(&self) -> String {
        if self.port == if self.tls { 443 } else { 80 } {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(spec: &str, p: &str) -> Result<u16, String> {
    p.parse().map_err(|_| format!("{spec}: bad port '{p}'"))
}

/// One encoded request: bytes that never change, plus whether its response has no body.
#[derive(Debug)]
pub struct Request {
    pub bytes: &'static [u8],
    pub head: bool,
}

/// One origin (scheme, host, port): a connection belongs to one origin and mixes its URLs.
#[derive(Debug)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub addr: SocketAddr,
    pub requests: Vec<Request>,
    /// Indices into `requests`, repeated by weight and interleaved (smooth weighted round robin),
    /// so a connection walking it cyclically sends each URL in proportion to its weight.
    pub wheel: Vec<u16>,
    pub weight: u64,
}

/// Request settings shared by all URLs.
pub struct RequestSpec<'a> {
    pub method: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Groups URLs by origin, resolves each origin once and encodes every request.
pub fn build_origins(urls: &[Url], spec: &RequestSpec) -> Result<Vec<Origin>, String> {
    let mut origins: Vec<(Url, Vec<&Url>)> = Vec::new();
    for u in urls {
        match origins
            .iter_mut()
            .find(|(o, _)| o.tls == u.tls && o.host == u.host && o.port == u.port)
        {
            Some((_, list)) => list.push(u),
            None => origins.push((u.clone(), vec![u])),
        }
    }
    let mut out = Vec::new();
    for (o, list) in origins {
        let bare = o.host.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare, o.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {}: {e}", o.host))?
            .next()
            .ok_or_else(|| format!("resolving {}: no address", o.host))?;
        let requests: Vec<Request> = list
            .iter()
            .map(|u| Request {
                bytes: Vec::leak(http::encode_request(
                    spec.method,
                    &u.path,
                    &u.host_header(),
                    spec.headers,
                    spec.body,
                )),
                head: spec.method.eq_ignore_ascii_case("HEAD"),
            })
            .collect();
        let weights: Vec<u64> = list.iter().map(|u| u64::from(u.weight)).collect();
        out.push(Origin {
            tls: o.tls,
            host: bare.to_string(),
            addr,
            requests,
            wheel: smooth_wheel(&weights),
            weight: weights.iter().sum(),
        });
    }
    Ok(out)
}

/// Smooth weighted round robin (as nginx does it), reduced by the weights' gcd and capped so the
/// wheel stays small.
pub fn smooth_wheel(weights: &[u64]) -> Vec<u16> {
    let g = weights.iter().fold(0, |a, &b| gcd(a, b)).max(1);
    let w: Vec<i64> = weights
        .iter()
        .map(|&x| (x / g).min(10_000) as i64)
        .collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, -(i as i64)))
            .unwrap_or((0, &0));
        current[best] -= total;
        wheel.push(best as u16);
    }
    wheel
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_weights() {
        let u = Url::parse("http://127.0.0.1:8080/a/b?x=1@3").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str(), u.weight),
            (false, "127.0.0.1", 8080, "/a/b?x=1", 3)
        );
        let u = Url::parse("https://[::1]/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.host_header()),
            ("[::1]", 443, "[::1]".into())
        );
        let u = Url::parse("http://user@example.com?q").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str(), u.weight),
            ("example.com", "/?q", 1)
        );
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://x:99999/").is_err());
        assert!(Url::parse("http://x/@0").is_err());
    }

    #[test]
    fn wheel_follows_weights_and_interleaves() {
        assert_eq!(smooth_wheel(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(smooth_wheel(&[2, 2]), vec![0, 1]);
        let w = smooth_wheel(&[5, 3, 2]);
        assert_eq!(w.len(), 10);
        assert_eq!(w.iter().filter(|&&i| i == 1).count(), 3);
    }
}
