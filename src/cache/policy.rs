//! The HTTP caching rules a shared cache follows (RFC 9111), as nginx applies them by default:
//! which requests may be answered from the cache, which responses may be stored, and for how
//! long they stay fresh.

use super::Entry;
use crate::config::{CacheBypass, CacheZone};
use crate::http::headers::name_is;
use httparse::Header;
use std::time::SystemTime;

/// What the cache does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestUse {
    /// GET or HEAD without a body: look it up; `store` says whether its response may be kept.
    Lookup { store: bool },
    /// A method that changes the resource (POST, PUT, DELETE, PATCH...): what is stored for its
    /// URL is dropped (RFC 9111 §4.4).
    Invalidate,
    /// Anything else passes by the cache.
    Bypass,
}

pub fn request_use(method: &str, has_body: bool, headers: &[Header<'_>]) -> RequestUse {
    match method {
        "GET" | "HEAD" if !has_body => RequestUse::Lookup {
            // HEAD has no body to store; a client's `no-store` asks that nothing be kept.
            store: method == "GET"
                && !header_values(headers, b"cache-control")
                    .any(|v| directives(v).any(|(n, _)| n.eq_ignore_ascii_case("no-store"))),
        },
        "GET" | "HEAD" | "OPTIONS" | "TRACE" => RequestUse::Bypass,
        _ => RequestUse::Invalidate,
    }
}

/// Whether the request carries something the zone's `bypass` names.
pub fn bypassed(zone: &CacheZone, headers: &[Header<'_>]) -> bool {
    zone.bypass.iter().any(|b| match b {
        CacheBypass::Header(name) => header_values(headers, name.as_bytes()).next().is_some(),
        CacheBypass::Cookie { name, prefix } => header_values(headers, b"cookie")
            .flat_map(|v| v.split(|c| *c == b';'))
            .filter_map(|pair| pair.split(|c| *c == b'=').next().map(<[u8]>::trim_ascii))
            .any(|n| match prefix {
                true => n.starts_with(name.as_bytes()),
                false => n == name.as_bytes(),
            }),
    })
}

/// Whether the client's validators match the stored entry (RFC 9110 §13.1.1-2), so a 304
/// answers: `If-None-Match` by weak comparison, else `If-Modified-Since` against
/// `Last-Modified`.
pub fn not_modified(request: &[Header<'_>], e: &Entry) -> bool {
    if let Some(inm) = header_values(request, b"if-none-match").next() {
        let Some(etag) = e.header(b"etag") else {
            return false;
        };
        fn weak(t: &[u8]) -> &[u8] {
            let t = t.trim_ascii();
            t.strip_prefix(b"W/").unwrap_or(t)
        }
        let inm = inm.trim_ascii();
        return inm == b"*" || inm.split(|b| *b == b',').any(|t| weak(t) == weak(etag));
    }
    // Most requests carry no validator: the stored head is only searched for one that does.
    let Some(since) = header_values(request, b"if-modified-since").next() else {
        return false;
    };
    match (
        http_date(since),
        e.header(b"last-modified").and_then(http_date),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// An HTTP-date field value (RFC 9110 §5.6.7), any of its three forms.
pub fn http_date(v: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(v).ok()?.trim()).ok()
}

/// Why a response is kept, and for how long it is fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storable {
    /// Seconds it is fresh for, counted from when the origin made it.
    pub lifetime: u64,
    /// Its age on arrival (the upstream's `Age`).
    pub age: u64,
    /// Request headers the response varies on (lower-case).
    pub vary: Vec<String>,
    /// Seconds past expiry it may answer when the upstream fails: the zone's `use_stale`, or
    /// the response's own `stale-if-error` when longer (RFC 5861).
    pub stale_window: u64,
}

/// Whether a response may be stored (RFC 9111 §3, shared cache), and its freshness (§4.2).
/// `authorized`: the request carried `Authorization`.
pub fn storable(
    zone: &CacheZone,
    status: u16,
    headers: &[Header<'_>],
    authorized: bool,
) -> Option<Storable> {
    if (100..200).contains(&status) || status == 206 || status == 304 {
        return None;
    }
    let mut max_age = None;
    let mut s_maxage = None;
    let mut shared_ok = false;
    let mut stale_if_error = 0;
    for v in header_values(headers, b"cache-control") {
        for (name, arg) in directives(v) {
            match name.to_ascii_lowercase().as_str() {
                // `no-cache` would have every use revalidated; nginx does not store it either.
                "no-store" | "private" | "no-cache" => return None,
                "max-age" => max_age = Some(seconds(arg)?),
                "s-maxage" => {
                    s_maxage = Some(seconds(arg)?);
                    shared_ok = true;
                }
                "public" | "must-revalidate" => shared_ok = true,
                // A malformed one is ignored, not a reason to refuse the response.
                "stale-if-error" => stale_if_error = seconds(arg).unwrap_or(0),
                _ => {}
            }
        }
    }
    // A response to a request with credentials is someone's own unless it says otherwise.
    if authorized && !shared_ok {
        return None;
    }
    // As nginx: a response that sets a cookie is one client's.
    if header_values(headers, b"set-cookie").next().is_some() {
        return None;
    }
    let mut vary = Vec::new();
    for v in header_values(headers, b"vary") {
        for name in v.split(|b| *b == b',') {
            let name = name.trim_ascii();
            if name == b"*" {
                return None;
            }
            if !name.is_empty() {
                vary.push(String::from_utf8_lossy(name).to_ascii_lowercase());
            }
        }
    }
    let lifetime = match (s_maxage, max_age) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => match header_values(headers, b"expires").next() {
            Some(expires) => expires_lifetime(expires, header_values(headers, b"date").next()),
            None => heuristic(zone, status)?,
        },
    };
    let age = header_values(headers, b"age")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0);
    let stale_window = zone.use_stale.as_secs().max(stale_if_error);
    // Stale on arrival is only worth keeping to answer when the upstream fails.
    if lifetime <= age && stale_window == 0 {
        return None;
    }
    Some(Storable {
        lifetime,
        age,
        vary,
        stale_window,
    })
}

/// The freshness (lifetime, age) of a stored response that a 304 has just validated, from the
/// 304's own fields when they say (RFC 9111 §4.3.4), else the stored `lifetime` anew. `None`:
/// the 304 forbids keeping it (no-store, private...).
pub fn revalidated(
    zone: &CacheZone,
    status: u16,
    headers: &[Header<'_>],
    authorized: bool,
    lifetime: u64,
) -> Option<(u64, u64)> {
    if let Some(s) = storable(zone, status, headers, authorized) {
        return Some((s.lifetime, s.age));
    }
    let says = |lower: &'static [u8]| header_values(headers, lower).next().is_some();
    (!says(b"cache-control") && !says(b"expires")).then_some((lifetime, 0))
}

/// The configured freshness for a response that states none (`valid`), if any.
fn heuristic(zone: &CacheZone, status: u16) -> Option<u64> {
    zone.valid
        .binary_search_by_key(&status, |(s, _)| *s)
        .ok()
        .map(|i| zone.valid[i].1)
        .or(zone.valid_any)
        .map(|d| d.as_secs())
        .filter(|s| *s > 0)
}

/// `Expires` minus `Date` (or now, without a usable Date); an invalid date means already
/// expired (RFC 9111 §5.3).
fn expires_lifetime(expires: &[u8], date: Option<&[u8]>) -> u64 {
    let Some(expires) = http_date(expires) else {
        return 0;
    };
    let base = date.and_then(http_date).unwrap_or_else(SystemTime::now);
    expires
        .duration_since(base)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A delta-seconds argument; a malformed one makes the directive unusable, so the response is
/// not stored (`None`), as RFC 9111 §4.2.1 asks.
fn seconds(arg: Option<&[u8]>) -> Option<u64> {
    let arg = arg?;
    let arg = arg
        .strip_prefix(b"\"")
        .and_then(|a| a.strip_suffix(b"\""))
        .unwrap_or(arg);
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Past 2^31 seconds is "forever" (RFC 9111 §1.2.2).
    Some(
        std::str::from_utf8(arg)
            .ok()?
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            .min(1 << 31),
    )
}

/// Values of every header named `lower`.
pub fn header_values<'a>(
    headers: &'a [Header<'a>],
    lower: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| name_is(h.name.as_bytes(), lower))
        .map(|h| h.value)
}

/// The `name[=arg]` directives of a Cache-Control value.
fn directives(v: &[u8]) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
    v.split(|b| *b == b',').filter_map(|d| {
        let d = d.trim_ascii();
        let (name, arg) = match d.iter().position(|b| *b == b'=') {
            Some(i) => (&d[..i], Some(d[i + 1..].trim_ascii())),
            None => (d, None),
        };
        let name = std::str::from_utf8(name.trim_ascii()).ok()?;
        (!name.is_empty()).then_some((name, arg))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn zone() -> CacheZone {
        CacheZone {
            valid: vec![
                (200, Duration::from_secs(60)),
                (404, Duration::from_secs(5)),
            ],
            ..crate::cache::test_zone(1 << 20)
        }
    }

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<Header<'a>> {
        pairs
            .iter()
            .map(|(n, v)| Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect()
    }

    fn life(status: u16, pairs: &[(&str, &str)], auth: bool) -> Option<u64> {
        storable(&zone(), status, &h(pairs), auth).map(|s| s.lifetime)
    }

    #[test]
    fn explicit_freshness_wins_over_the_configured_one() {
        assert_eq!(life(200, &[("Cache-Control", "max-age=7")], false), Some(7));
        assert_eq!(
            life(
                200,
                &[("cache-control", "public, max-age=7, s-maxage=30")],
                false
            ),
            Some(30)
        );
        assert_eq!(life(200, &[], false), Some(60), "valid.200");
        assert_eq!(life(404, &[], false), Some(5), "valid.404");
        assert_eq!(life(500, &[], false), None, "no valid entry, no headers");
        assert_eq!(life(500, &[("cache-control", "max-age=3")], false), Some(3));
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let later = "Sun, 06 Nov 1994 08:59:37 GMT";
        assert_eq!(
            life(200, &[("date", date), ("expires", later)], false),
            Some(600)
        );
        assert_eq!(
            life(200, &[("date", date), ("expires", "0")], false),
            None,
            "an invalid Expires is already expired"
        );
    }

    #[test]
    fn private_and_personal_responses_are_not_stored() {
        for cc in [
            "no-store",
            "private",
            "no-cache",
            "max-age=abc",
            "max-age=-1",
        ] {
            assert_eq!(life(200, &[("cache-control", cc)], false), None, "{cc}");
        }
        assert_eq!(life(200, &[("set-cookie", "a=b")], false), None);
        assert_eq!(life(200, &[("vary", "*")], false), None);
        assert_eq!(life(206, &[("cache-control", "max-age=9")], false), None);
        assert_eq!(life(200, &[("cache-control", "max-age=9")], true), None);
        assert_eq!(
            life(200, &[("cache-control", "public, max-age=9")], true),
            Some(9)
        );
        assert_eq!(
            life(
                200,
                &[("cache-control", "max-age=60"), ("age", "60")],
                false
            ),
            None,
            "stale on arrival, and no use for stale entries"
        );
    }

    #[test]
    fn a_304_renews_freshness_by_its_own_fields_or_the_stored_ones() {
        let z = zone();
        let r = |pairs: &[(&str, &str)]| revalidated(&z, 200, &h(pairs), false, 40);
        assert_eq!(r(&[("cache-control", "max-age=300")]), Some((300, 0)));
        assert_eq!(
            r(&[("cache-control", "max-age=300"), ("age", "5")]),
            Some((300, 5))
        );
        assert_eq!(r(&[("etag", "\"x\"")]), Some((60, 0)), "valid.200 applies");
        let none = CacheZone {
            valid: Vec::new(),
            ..zone()
        };
        assert_eq!(
            revalidated(&none, 200, &h(&[("etag", "\"x\"")]), false, 40),
            Some((40, 0)),
            "the stored lifetime anew"
        );
        assert_eq!(r(&[("cache-control", "no-store")]), None);
    }

    #[test]
    fn stale_if_error_lengthens_the_stale_window() {
        let s = |cc: &str| storable(&zone(), 200, &h(&[("cache-control", cc)]), false);
        assert_eq!(s("max-age=5").unwrap().stale_window, 0);
        assert_eq!(
            s("max-age=5, stale-if-error=600").unwrap().stale_window,
            600
        );
        assert_eq!(s("max-age=5, stale-if-error=x").unwrap().stale_window, 0);
        let hour = CacheZone {
            use_stale: std::time::Duration::from_secs(3600),
            ..zone()
        };
        let st = storable(
            &hour,
            200,
            &h(&[("cache-control", "max-age=5, stale-if-error=60")]),
            false,
        );
        assert_eq!(st.unwrap().stale_window, 3600, "the longer of the two");
        assert!(
            s("max-age=60, stale-if-error=30").is_some() && s("max-age=0").is_none(),
            "stale on arrival is kept only with a window"
        );
    }

    #[test]
    fn bypass_matches_headers_and_cookies_by_name_or_prefix() {
        let z = CacheZone {
            bypass: vec![
                CacheBypass::Header("x-preview".into()),
                CacheBypass::Cookie {
                    name: "session".into(),
                    prefix: false,
                },
                CacheBypass::Cookie {
                    name: "wp_logged_in_".into(),
                    prefix: true,
                },
            ],
            ..zone()
        };
        let by = |pairs: &[(&str, &str)]| bypassed(&z, &h(pairs));
        assert!(!by(&[]));
        assert!(by(&[("X-Preview", "")]));
        assert!(by(&[("cookie", "a=1; session=x")]));
        assert!(
            !by(&[("cookie", "sessionid=x; a=session")]),
            "names, not values"
        );
        assert!(by(&[("cookie", "wp_logged_in_abc123=u")]));
        assert!(!by(&[("cookie", "wp_logged=u")]));
        assert!(!bypassed(&zone(), &h(&[("cookie", "session=x")])));
    }

    #[test]
    fn vary_names_are_kept_lower_case() {
        let s = storable(
            &zone(),
            200,
            &h(&[("Vary", "Accept-Encoding, X-Tenant"), ("age", "3")]),
            false,
        )
        .unwrap();
        assert_eq!(s.vary, ["accept-encoding", "x-tenant"]);
        assert_eq!(s.age, 3);
    }

    #[test]
    fn requests_are_looked_up_invalidate_or_pass() {
        let none = h(&[]);
        assert_eq!(
            request_use("GET", false, &none),
            RequestUse::Lookup { store: true }
        );
        assert_eq!(
            request_use("HEAD", false, &none),
            RequestUse::Lookup { store: false }
        );
        assert_eq!(
            request_use("GET", false, &h(&[("cache-control", "no-store")])),
            RequestUse::Lookup { store: false }
        );
        assert_eq!(request_use("GET", true, &none), RequestUse::Bypass);
        assert_eq!(request_use("POST", true, &none), RequestUse::Invalidate);
        assert_eq!(request_use("DELETE", false, &none), RequestUse::Invalidate);
        assert_eq!(request_use("OPTIONS", false, &none), RequestUse::Bypass);
    }
}
