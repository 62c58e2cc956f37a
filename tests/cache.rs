//! The response cache through the real binary: what is stored and what is not, freshness from
//! the upstream's headers and from `valid`, HEAD and conditional requests answered from an
//! entry, Vary, chunked and large bodies, invalidation by unsafe methods, stale answers when
//! the upstream fails, collapsed misses, auth before the cache, a reload that keeps it, and
//! broken cache configs refused by key.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// An upstream whose answers say by their path how they may be cached; every body carries a
/// sequence number, so a body served twice came from the cache.
fn upstream() -> Upstream {
    upstream_gated(None)
}

fn upstream_gated(gate: Option<Gate>) -> Upstream {
    let seq = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    Upstream::with(move |r| {
        let n = seq.fetch_add(1, Ordering::AcqRel);
        let path = r.path.split('?').next().unwrap_or("").to_string();
        let times = {
            let mut m = served.lock().unwrap();
            let t = m.entry(path.clone()).or_insert(0usize);
            *t += 1;
            *t
        };
        let body = format!("{} {} #{n}", r.method, r.path);
        let fresh = |reply: Reply| reply.header("Cache-Control", "max-age=300");
        let mut reply = match path.as_str() {
            "/nostore" => Reply::ok(body).header("Cache-Control", "no-store"),
            "/private" => Reply::ok(body).header("Cache-Control", "private, max-age=300"),
            "/no-cache" => Reply::ok(body).header("Cache-Control", "no-cache"),
            "/cookie" => fresh(Reply::ok(body)).header("Set-Cookie", "session=abc"),
            "/plain" | "/heur/plain" => Reply::ok(body),
            "/heur/missing" => Reply::ok(body).status(404),
            "/heur/broken" => Reply::ok(body).status(500),
            "/public" => Reply::ok(body).header("Cache-Control", "public, max-age=300"),
            "/vary" => {
                let ae = r.header("accept-encoding").unwrap_or("none").to_string();
                fresh(Reply::ok(format!("{body} ae={ae}"))).header("Vary", "Accept-Encoding")
            }
            "/chunked" => {
                let mut reply = fresh(Reply::ok(Vec::new())).chunked();
                reply.body = ReplyBody::Pattern {
                    len: 100 * 1024,
                    seed: 3,
                };
                reply
            }
            "/huge" => {
                let mut reply = fresh(Reply::ok(Vec::new()));
                reply.body = ReplyBody::Pattern {
                    len: 2 * 1024 * 1024,
                    seed: 4,
                };
                reply
            }
            // Stale on arrival (Age equals max-age): kept only for `use_stale`.
            "/aged-503" | "/aged-down" | "/aged-ok" if times == 1 => Reply::ok(body)
                .header("Cache-Control", "max-age=60")
                .header("Age", "60"),
            "/aged-503" => Reply::ok("unavailable").status(503),
            // Stale on arrival, but the response itself allows answering with it on error.
            "/sie-down" if times == 1 => Reply::ok(body)
                .header("Cache-Control", "max-age=60, stale-if-error=3600")
                .header("Age", "60"),
            // Stale on arrival, with a validator; the validator's match gets a 304.
            "/reval" | "/reval-date" if times == 1 => {
                let reply = Reply::ok(body)
                    .header("Cache-Control", "max-age=60")
                    .header("Age", "60");
                if path == "/reval" {
                    reply.header("ETag", "\"r1\"")
                } else {
                    reply.header("Last-Modified", LAST_MODIFIED)
                }
            }
            "/reval" | "/reval-date"
                if r.header("if-none-match") == Some("\"r1\"")
                    || r.header("if-modified-since") == Some(LAST_MODIFIED) =>
            {
                let mut reply = Reply::ok(Vec::new())
                    .status(304)
                    .header("Cache-Control", "max-age=300");
                reply.no_length = true;
                reply
            }
            "/aged-down" | "/sie-down" => {
                let mut reply = Reply::ok(Vec::new());
                reply.close_without_reply = true;
                reply
            }
            "/slow" => {
                let mut reply = fresh(Reply::ok(body));
                reply.gate = gate.clone();
                reply
            }
            _ => fresh(Reply::ok(body))
                .header("ETag", "W/\"v1\"")
                .header("Last-Modified", LAST_MODIFIED)
                .header("Keep-Alive", "timeout=5"),
        };
        reply.headers.push(("X-Seq".into(), n.to_string()));
        reply
    })
}

fn config(up: SocketAddr, route_extra: &str, zone_extra: &str) -> String {
    format!(
        r#"[runtime]
workers = 1

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[upstream.app]
servers = ["{up}"]

[cache.main]
max_size = "8MiB"
max_entry_size = "1MiB"
use_stale = "1h"
{zone_extra}

[cache.heur]
valid = {{ "200" = "1h", "404" = "10m" }}

[[route]]
match = {{ path_prefix = "/heur/" }}
upstream = "app"
cache = "heur"

[[route]]
match = {{ path_prefix = "/uncached/" }}
upstream = "app"

{route_extra}

[[route]]
upstream = "app"
cache = "main"
"#
    )
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(addr, "GET", path, headers)
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: cache.test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 2\r\n\r\nhi");
    } else {
        req.push_str("\r\n");
    }
    raw_exchange(addr, req.as_bytes())
}

fn x_cache(r: &RawResponse) -> &str {
    r.header("x-cache").unwrap_or("(none)")
}

#[test]
fn fresh_responses_are_answered_from_the_cache() {
    let up = upstream();
    let mut rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();

    let first = get(a, "/page?x=1", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(x_cache(&first), "MISS");
    let second = get(a, "/page?x=1", &[]);
    assert_eq!(second.status, 200, "{}", second.head);
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.body, first.body, "the stored body");
    assert_eq!(up.count(), 1, "the upstream saw the first request only");
    assert_eq!(second.header("etag"), Some("W/\"v1\""));
    assert_eq!(second.header("cache-control"), Some("max-age=300"));
    assert!(second
        .header("age")
        .is_some_and(|v| v.parse::<u64>().is_ok()));
    assert!(
        !second.has("keep-alive"),
        "hop-by-hop fields are not stored"
    );
    assert_eq!(
        second.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );

    // Another query or path is another key; so is another host.
    assert_eq!(x_cache(&get(a, "/page?x=2", &[])), "MISS");
    assert_eq!(x_cache(&get(a, "/other", &[])), "MISS");
    let mut other_host = raw_exchange(a, b"GET /page?x=1 HTTP/1.1\r\nHost: elsewhere\r\n\r\n");
    assert_eq!(x_cache(&other_host), "MISS");
    other_host = raw_exchange(a, b"GET /page?x=1 HTTP/1.1\r\nHost: ELSEWHERE\r\n\r\n");
    assert_eq!(x_cache(&other_host), "HIT", "host compared without case");
    assert_eq!(up.count(), 4);

    // HEAD is answered from the GET's entry, with its length and without its body.
    let head = request(a, "HEAD", "/page?x=1", &[]);
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"));
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // A real client, over one keep-alive connection: two answers, the second from the cache.
    let url = format!("http://{a}/curl");
    let (status, out, err) = curl(&["-sS", "-D", "-", &url, "-o", "/dev/null", &url]);
    assert_eq!(status, 200, "{err}");
    let heads = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(
        heads.contains("x-cache: miss") && heads.contains("x-cache: hit"),
        "{heads}"
    );
    assert_eq!(up.count(), 5);

    rw.signal("TERM");
    let (_, stderr) = rw.wait_exit(DEADLINE);
    assert!(
        stderr.contains("cache hits=4 misses=5 revalidated=0 stale=0 stores=5 evictions=0"),
        "{stderr}"
    );
}

#[test]
fn hits_answer_pipelined_requests_in_order_and_http_1_0_clients() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    let one = get(a, "/p/1", &[]);
    let two = get(a, "/p/2", &[]);
    // Three requests in one write: two hits and a miss, answered in order on one connection.
    let mut s = connect(a);
    std::io::Write::write_all(
        &mut s,
        b"GET /p/2 HTTP/1.1\r\nHost: cache.test\r\n\r\n\
          GET /p/3 HTTP/1.1\r\nHost: cache.test\r\n\r\n\
          GET /p/1 HTTP/1.1\r\nHost: cache.test\r\n\r\n",
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let answers: Vec<RawResponse> = (0..3)
        .map(|_| read_response(&mut r, false).unwrap())
        .collect();
    assert_eq!(x_cache(&answers[0]), "HIT");
    assert_eq!(answers[0].body, two.body);
    assert_eq!(x_cache(&answers[1]), "MISS");
    assert!(answers[1].text().starts_with("GET /p/3 "));
    assert_eq!(x_cache(&answers[2]), "HIT");
    assert_eq!(answers[2].body, one.body);
    // HTTP/1.0 and Connection: close get their own connection handling on a hit.
    let old = raw_exchange(
        a,
        b"GET /p/1 HTTP/1.0\r\nHost: cache.test\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!((old.status, x_cache(&old)), (200, "HIT"));
    assert!(old.head.starts_with("HTTP/1.1 200"), "{}", old.head);
    assert_eq!(old.header("connection"), Some("keep-alive"));
    assert_eq!(old.body, one.body);
    let mut s = connect(a);
    std::io::Write::write_all(
        &mut s,
        b"GET /p/1 HTTP/1.1\r\nHost: cache.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let closing = read_response(&mut r, false).unwrap();
    assert_eq!(
        (x_cache(&closing), closing.header("connection")),
        ("HIT", Some("close"))
    );
    assert!(
        closed_by_peer(&mut r),
        "the connection closes after the answer"
    );
    assert_eq!(up.count(), 3);
}

#[test]
fn bypass_skips_the_cache_for_named_cookies_and_headers() {
    let up = upstream();
    let zone = "bypass = [\"cookie:session*\", \"header:x-preview\"]";
    let rw = Ringway::start(&config(up.addr, "", zone));
    let a = rw.addr();
    let stored = get(a, "/b", &[]);
    assert_eq!(x_cache(&get(a, "/b", &[])), "HIT");
    // A logged-in visitor, and a preview: straight to the upstream, whatever is stored.
    for headers in [
        &[("Cookie", "theme=dark; session_4f2a=abc")][..],
        &[("X-Preview", "1")][..],
    ] {
        let r = get(a, "/b", headers);
        assert_eq!(x_cache(&r), "BYPASS", "{headers:?}");
        assert_ne!(r.body, stored.body, "{headers:?}");
    }
    // Nor is what they were answered stored for anyone else.
    get(a, "/c", &[("Cookie", "session=abc")]);
    assert_eq!(x_cache(&get(a, "/c", &[])), "MISS");
    // A cookie that only has the word in its value is not a session.
    assert_eq!(x_cache(&get(a, "/b", &[("Cookie", "ref=session")])), "HIT");
    assert_eq!(up.count(), 5);
}

#[test]
fn private_and_unmarked_responses_are_not_stored() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    for path in ["/nostore", "/private", "/no-cache", "/cookie", "/plain"] {
        let before = up.count();
        let one = get(a, path, &[]);
        let two = get(a, path, &[]);
        assert_eq!((one.status, two.status), (200, 200), "{path}");
        assert_eq!(x_cache(&two), "MISS", "{path}");
        assert_ne!(one.body, two.body, "{path}");
        assert_eq!(up.count(), before + 2, "{path}");
    }
    // A request with credentials is stored only when the response says it may be shared.
    let auth = [("Authorization", "Bearer t")];
    get(a, "/mine", &auth);
    assert_eq!(x_cache(&get(a, "/mine", &auth)), "MISS");
    get(a, "/public", &auth);
    assert_eq!(x_cache(&get(a, "/public", &auth)), "HIT");
    // The client's `no-store`: answered, but not kept.
    get(a, "/asked", &[("Cache-Control", "no-store")]);
    assert_eq!(x_cache(&get(a, "/asked", &[])), "MISS");
    // Routes without `cache` are not touched.
    let plain = get(a, "/uncached/x", &[]);
    assert!(!plain.has("x-cache"));
    get(a, "/uncached/x", &[]);
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.path == "/uncached/x")
            .count(),
        2
    );
}

#[test]
fn valid_gives_freshness_to_responses_without_their_own() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    for (path, status, second) in [
        ("/heur/plain", 200, "HIT"),
        ("/heur/missing", 404, "HIT"),
        ("/heur/broken", 500, "MISS"),
    ] {
        let one = get(a, path, &[]);
        let two = get(a, path, &[]);
        assert_eq!((one.status, two.status), (status, status), "{path}");
        assert_eq!(x_cache(&two), second, "{path}");
    }
    assert_eq!(up.count(), 4);
}

#[test]
fn conditional_requests_are_answered_304_from_the_entry() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    get(a, "/doc", &[]);
    for (name, value) in [
        ("If-None-Match", "\"v1\""),
        ("If-None-Match", "\"zz\", W/\"v1\""),
        ("If-None-Match", "*"),
        ("If-Modified-Since", LAST_MODIFIED),
        ("If-Modified-Since", "Mon, 07 Nov 1994 08:49:37 GMT"),
    ] {
        let r = get(a, "/doc", &[(name, value)]);
        assert_eq!(r.status, 304, "{name}: {value}\n{}", r.head);
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some("W/\"v1\""));
        assert_eq!(x_cache(&r), "HIT");
    }
    for (name, value) in [
        ("If-None-Match", "\"v2\""),
        ("If-Modified-Since", "Sat, 05 Nov 1994 08:49:37 GMT"),
    ] {
        let r = get(a, "/doc", &[(name, value)]);
        assert_eq!((r.status, x_cache(&r)), (200, "HIT"), "{name}: {value}");
        assert!(!r.body.is_empty());
    }
    assert_eq!(up.count(), 1);
}

#[test]
fn vary_keeps_each_variant_apart() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    let gzip = get(a, "/vary", &[("Accept-Encoding", "gzip")]);
    let br = get(a, "/vary", &[("Accept-Encoding", "br")]);
    let none = get(a, "/vary", &[]);
    assert!(gzip.text().ends_with("ae=gzip") && br.text().ends_with("ae=br"));
    assert!(none.text().ends_with("ae=none"));
    assert_eq!(up.count(), 3);
    let again = get(a, "/vary", &[("Accept-Encoding", "gzip")]);
    assert_eq!((x_cache(&again), again.body.clone()), ("HIT", gzip.body));
    let again = get(a, "/vary", &[]);
    assert_eq!((x_cache(&again), again.body.clone()), ("HIT", none.body));
    assert_eq!(again.header("vary"), Some("Accept-Encoding"));
    assert_eq!(up.count(), 3);
}

#[test]
fn chunked_bodies_are_stored_and_large_ones_pass_through() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    let want = pattern_sha256(100 * 1024, 3);
    let first = get(a, "/chunked", &[]);
    assert_eq!(sha256_hex(&first.body), want);
    assert_eq!(first.header("transfer-encoding"), Some("chunked"));
    let second = get(a, "/chunked", &[]);
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.header("content-length"), Some("102400"));
    assert!(!second.has("transfer-encoding"));
    assert_eq!(sha256_hex(&second.body), want);

    // Over max_entry_size: relayed whole, never stored.
    let want = pattern_sha256(2 * 1024 * 1024, 4);
    for _ in 0..2 {
        let r = get(a, "/huge", &[]);
        assert_eq!((r.status, x_cache(&r)), (200, "MISS"));
        assert_eq!(sha256_hex(&r.body), want);
    }
    assert_eq!(up.count(), 3);
}

#[test]
fn unsafe_methods_invalidate_the_entry() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    get(a, "/item", &[]);
    assert_eq!(x_cache(&get(a, "/item", &[])), "HIT");
    let post = request(a, "POST", "/item", &[]);
    assert_eq!((post.status, x_cache(&post)), (200, "BYPASS"));
    assert_eq!(up.last().method, "POST");
    assert_eq!(x_cache(&get(a, "/item", &[])), "MISS");
    request(a, "DELETE", "/item", &[]);
    assert_eq!(x_cache(&get(a, "/item", &[])), "MISS");
    assert_eq!(up.count(), 5);
}

#[test]
fn expired_entries_answer_when_the_upstream_fails() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    for path in ["/aged-503", "/aged-down"] {
        let first = get(a, path, &[]);
        assert_eq!((first.status, x_cache(&first)), (200, "MISS"), "{path}");
        let stale = get(a, path, &[]);
        assert_eq!(stale.status, 200, "{path}: {}", stale.head);
        assert_eq!(x_cache(&stale), "STALE", "{path}");
        assert_eq!(stale.body, first.body, "{path}");
    }
    // Both failures were asked of the upstream first (retries included, as the route allows).
    for path in ["/aged-503", "/aged-down"] {
        assert!(up.requests().iter().filter(|r| r.path == path).count() >= 2);
    }
}

#[test]
fn expired_entries_are_fetched_again() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    let first = get(a, "/aged-ok", &[]);
    assert_eq!(x_cache(&first), "MISS");
    let second = get(a, "/aged-ok", &[]);
    assert_eq!(x_cache(&second), "EXPIRED");
    assert_ne!(second.body, first.body);
    let third = get(a, "/aged-ok", &[]);
    assert_eq!((x_cache(&third), third.body.clone()), ("HIT", second.body));
    assert_eq!(up.count(), 2);
}

#[test]
fn expired_entries_are_validated_with_the_upstream() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    for (path, validator, value) in [
        ("/reval", "if-none-match", "\"r1\""),
        ("/reval-date", "if-modified-since", LAST_MODIFIED),
    ] {
        let first = get(a, path, &[]);
        assert_eq!(x_cache(&first), "MISS", "{path}");
        // Expired on arrival: the next request asks the upstream whether it still holds.
        let second = get(a, path, &[]);
        assert_eq!(second.status, 200, "{path}: {}", second.head);
        assert_eq!(x_cache(&second), "REVALIDATED", "{path}");
        assert_eq!(
            second.body, first.body,
            "{path}: the stored body, from a 304"
        );
        assert_eq!(second.header("age"), Some("0"), "{path}");
        let asked = up.last();
        assert_eq!(asked.header(validator), Some(value), "{path}");
        // The 304 made it fresh for its max-age.
        let third = get(a, path, &[]);
        assert_eq!((x_cache(&third), third.body.clone()), ("HIT", first.body));
    }
    assert_eq!(up.count(), 4);
}

#[test]
fn revalidate_off_fetches_expired_entries_whole() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", "revalidate = false"));
    let a = rw.addr();
    let first = get(a, "/reval", &[]);
    let second = get(a, "/reval", &[]);
    assert_eq!(x_cache(&second), "EXPIRED");
    assert_ne!(second.body, first.body);
    assert_eq!(up.last().header("if-none-match"), None);
}

#[test]
fn without_use_stale_the_failure_reaches_the_client() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", "").replace("use_stale = \"1h\"", ""));
    let a = rw.addr();
    assert_eq!(x_cache(&get(a, "/aged-down", &[])), "MISS");
    // Stale on arrival and no use for it: nothing was kept.
    let r = get(a, "/aged-down", &[]);
    assert_eq!((r.status, x_cache(&r)), (502, "(none)"), "{}", r.head);
    // Unless the response itself says how long it may answer for a failure (RFC 5861).
    let first = get(a, "/sie-down", &[]);
    assert_eq!(x_cache(&first), "MISS");
    let r = get(a, "/sie-down", &[]);
    assert_eq!((r.status, x_cache(&r)), (200, "STALE"), "{}", r.head);
    assert_eq!(r.body, first.body);
}

#[test]
fn concurrent_misses_for_one_key_go_upstream_once() {
    let gate = Gate::default();
    let up = upstream_gated(Some(gate.clone()));
    let rw = Ringway::start(&config(up.addr, "", "lock_timeout = \"60s\""));
    let a = rw.addr();
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let t = std::thread::spawn(move || get(a, "/slow", &[]));
            if i == 0 {
                up.wait_requests(1);
            }
            t
        })
        .collect();
    // A request behind the four others on the same worker: once the upstream sees it, the
    // worker has read theirs too, and without the lock they would have gone upstream.
    let barrier = std::thread::spawn(move || get(a, "/uncached/barrier", &[]));
    wait_for(DEADLINE, "the barrier request upstream", || {
        up.requests()
            .iter()
            .any(|r| r.path == "/uncached/barrier")
            .then_some(())
    });
    assert_eq!(
        up.requests().iter().filter(|r| r.path == "/slow").count(),
        1,
        "the others wait for the first"
    );
    gate.open();
    let bodies: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    barrier.join().unwrap();
    for r in &bodies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, bodies[0].body, "one upstream answer for all");
    }
    assert_eq!(bodies.iter().filter(|r| x_cache(r) == "HIT").count(), 4);
    assert_eq!(
        up.requests().iter().filter(|r| r.path == "/slow").count(),
        1
    );
}

#[test]
fn routes_sharing_a_zone_keep_their_answers_apart() {
    let up = upstream();
    let other = Upstream::start("other");
    let route = format!(
        r#"[upstream.other]
servers = ["{}"]

[[route]]
name = "v2"
match = {{ path_prefix = "/v/", headers = {{ "x-version" = "2" }} }}
upstream = "other"
cache = "main"
"#,
        other.addr
    );
    let rw = Ringway::start(&config(up.addr, &route, ""));
    let a = rw.addr();
    let v1 = get(a, "/v/page", &[]);
    let v2 = get(a, "/v/page", &[("x-version", "2")]);
    assert!(v2.text().starts_with("other "), "{}", v2.text());
    assert_ne!(v1.body, v2.body);
    let v1_again = get(a, "/v/page", &[]);
    let v2_again = get(a, "/v/page", &[("x-version", "2")]);
    assert_eq!((x_cache(&v1_again), &v1_again.body), ("HIT", &v1.body));
    assert_eq!(
        x_cache(&v2_again),
        "MISS",
        "the other upstream's answer is not stored"
    );
    assert!(v2_again.text().starts_with("other "));
}

#[test]
fn route_auth_runs_before_the_cache() {
    let up = upstream();
    let route = r#"[auth.keys]
type = "api_key"
header = "x-api-key"
keys = [{ name = "a", key = "key-000000000001" }]

[[route]]
match = { path_prefix = "/members/" }
auth = "keys"
upstream = "app"
cache = "main"
response_headers = { set = { "x-route" = "members" } }
"#;
    let rw = Ringway::start(&config(up.addr, route, ""));
    let a = rw.addr();
    let key = [("x-api-key", "key-000000000001")];
    let first = get(a, "/members/list", &key);
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"));
    assert_eq!(first.header("x-route"), Some("members"));
    let hit = get(a, "/members/list", &key);
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"));
    assert_eq!(
        hit.header("x-route"),
        Some("members"),
        "response rules apply to hits"
    );
    let anonymous = get(a, "/members/list", &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.head);
    assert_ne!(anonymous.body, first.body);
    assert_eq!(up.count(), 1);
}

#[test]
fn a_reload_keeps_the_cache() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let a = rw.addr();
    let first = get(a, "/kept", &[]);
    let path = rw.config_path.clone().unwrap();
    let marker = "[[route]]\nmatch = { path = \"/reloaded\" }\nrespond = { body = \"yes\" }\n";
    let text = config(up.addr, marker, "").replace("127.0.0.1:0", &a.to_string());
    std::fs::write(&path, text).unwrap();
    rw.signal("HUP");
    wait_for(DEADLINE, "the new config to serve", || {
        (get(a, "/reloaded", &[]).status == 200).then_some(())
    });
    let again = get(a, "/kept", &[]);
    assert_eq!((x_cache(&again), again.body.clone()), ("HIT", first.body));
    assert_eq!(
        up.requests().iter().filter(|r| r.path == "/kept").count(),
        1
    );
}

#[test]
fn max_size_evicts_the_least_recently_used() {
    let up = upstream();
    let text = config(up.addr, "", "")
        .replace("max_size = \"8MiB\"", "max_size = \"64KiB\"")
        .replace("max_entry_size = \"1MiB\"", "max_entry_size = \"16KiB\"");
    let mut rw = Ringway::start(&text);
    let a = rw.addr();
    // Each entry costs a few hundred bytes: 400 of them overflow 64 KiB several times.
    for i in 0..400 {
        get(a, &format!("/many/{i}"), &[]);
        // /many/0 stays in use, so it stays.
        assert_eq!(x_cache(&get(a, "/many/0", &[])), "HIT");
    }
    assert_eq!(x_cache(&get(a, "/many/1", &[])), "MISS", "evicted long ago");
    assert_eq!(
        x_cache(&get(a, "/many/399", &[])),
        "HIT",
        "the newest stays"
    );
    rw.signal("TERM");
    let (_, stderr) = rw.wait_exit(DEADLINE);
    let evictions: u64 = stderr
        .split("evictions=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(evictions > 200, "{stderr}");
}

/// An upstream that promises a cacheable body and closes halfway through it: with
/// Content-Length, or chunked without the last chunk. Counts the requests it read.
fn cutting_upstream(chunked: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut conn, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            counter.fetch_add(1, Ordering::AcqRel);
            let reply: &[u8] = if chunked {
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nContent-Length: 1000\r\n\r\nonly part of it"
            };
            let _ = std::io::Write::write_all(&mut conn, reply);
            // Dropped: the upstream is gone halfway through the body.
        }
    });
    (addr, seen)
}

#[test]
fn a_body_cut_short_is_never_stored() {
    for chunked in [false, true] {
        let (up, seen) = cutting_upstream(chunked);
        let rw = Ringway::start(&config(up, "", ""));
        let a = rw.addr();
        for n in 1..=2 {
            let mut s = connect(a);
            std::io::Write::write_all(&mut s, b"GET /cut HTTP/1.1\r\nHost: cache.test\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut got);
            let text = String::from_utf8_lossy(&got);
            // The client sees the truncation as the connection closing early, never as a
            // complete answer, and never from the cache.
            assert!(!text.contains("x-cache: HIT"), "chunked={chunked}: {text}");
            assert!(
                !text.contains("\r\n0\r\n\r\n") && !text.contains("content-length: 15\r\n"),
                "chunked={chunked}: {text}"
            );
            assert_eq!(seen.load(Ordering::Acquire), n, "chunked={chunked}");
        }
    }
}

#[test]
fn hits_over_tls_carry_whole_bodies() {
    let up = upstream();
    let dir = TempDir::new();
    let cert = make_cert(&dir.0, "site", &["localhost"]);
    let text = config(up.addr, "", "").replacen(
        "bind = \"127.0.0.1:0\"\n",
        &format!(
            "bind = \"127.0.0.1:0\"\n[listener.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.cert, cert.key
        ),
        1,
    );
    let rw = Ringway::start(&text);
    let port = rw.addr().port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cacert = cert.cert.to_str().unwrap();
    // 100 KiB: past the size that is copied behind the head, so the entry's own bytes go out.
    let url = format!("https://localhost:{port}/chunked");
    let want = pattern_sha256(100 * 1024, 3);
    for expect in ["MISS", "HIT"] {
        let (code, out, err) = curl(&["--cacert", cacert, "--resolve", &resolve, "-D", "-", &url]);
        assert_eq!(code, 200, "{err}");
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
        assert!(
            head.contains(&format!("x-cache: {}", expect.to_ascii_lowercase())),
            "{head}"
        );
        assert_eq!(sha256_hex(&out[split..]), want, "{expect}");
    }
    // One upstream request for both answers.
    assert_eq!(up.count(), 1);
}

#[test]
fn broken_cache_settings_are_refused_by_key() {
    let up = upstream();
    let cases = [
        (
            config(up.addr, "", "").replace("cache = \"main\"", "cache = \"nope\""),
            "route[2].cache: unknown cache \"nope\"",
        ),
        (
            config(up.addr, "", "").replace("max_entry_size = \"1MiB\"", "max_entry_size = \"9MiB\""),
            "cache.main.max_entry_size",
        ),
        (
            config(up.addr, "", "").replace("\"404\" = \"10m\"", "\"304\" = \"10m\""),
            "cache.heur.valid.304",
        ),
        (
            config(up.addr, "", "status_header = \"bad header\""),
            "cache.main.status_header",
        ),
        (
            config(up.addr, "", "use_stale = \"forever\"").replace("use_stale = \"1h\"\n", ""),
            "cache.main.use_stale",
        ),
        (
            config(up.addr, "", "colour = \"blue\""),
            "colour",
        ),
        (
            config(up.addr, "", "bypass = [\"query:debug\"]"),
            "cache.main.bypass: \"query:debug\" is not",
        ),
        (
            config(
                up.addr,
                "[[route]]\nmatch = { path = \"/s\" }\nrespond = { body = \"x\" }\ncache = \"main\"\n",
                "",
            ),
            "route[2].cache: only `upstream` routes are cached",
        ),
    ];
    for (text, want) in cases {
        let dir = TempDir::new();
        let path = dir.write("bad.toml", &text);
        let (code, out) = ringway_check(&path);
        assert_eq!(code, Some(1), "{want}: {out}");
        assert!(out.contains(want), "expected {want:?} in:\n{out}");
        assert!(out.contains("bad.toml"), "{out}");
    }
}
