//! Routing through the real binary: first match wins on host (exact, `*.example.com`, with port,
//! any case), path (exact and prefix), method and headers; static responses; 404 when nothing
//! matches; `strip_prefix` as the upstream sees it.

mod common;

use common::*;
use std::net::SocketAddr;

fn config(api: SocketAddr, other: SocketAddr) -> String {
    format!(
        r#"[runtime]
workers = 1

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[upstream.api]
servers = ["{api}"]

[upstream.other]
servers = ["{other}"]

[[route]]
name = "health"
match = {{ path = "/healthz" }}
respond = {{ status = 200, body = "healthy", headers = {{ "content-type" = "text/plain", "x-static" = "yes" }} }}

[[route]]
name = "wild"
match = {{ host = "*.example.com", path_prefix = "/static/" }}
respond = {{ status = 203, body = "wildcard static" }}

[[route]]
name = "exact-host"
match = {{ host = "exact.test" }}
respond = {{ status = 200, body = "exact host" }}

[[route]]
name = "v2"
match = {{ path_prefix = "/api/", headers = {{ "x-version" = "2" }} }}
upstream = "other"

[[route]]
name = "api"
match = {{ path_prefix = "/api/", method = "GET" }}
upstream = "api"
strip_prefix = true

[[route]]
name = "wild-upstream"
match = {{ host = "*.example.com" }}
upstream = "other"

[[route]]
name = "gone"
match = {{ path_prefix = "/gone" }}
respond = {{ status = 410, body = "gone for good" }}
"#
    )
}

fn req(addr: SocketAddr, method: &str, host: &str, path: &str, extra: &str) -> RawResponse {
    raw_exchange(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn routes_by_host_path_method_and_header() {
    let api = Upstream::start("api");
    let other = Upstream::start("other");
    let rw = Ringway::start(&config(api.addr, other.addr));
    let a = rw.addr();

    // Exact path, static response with its headers.
    let r = req(a, "GET", "any.test", "/healthz", "");
    assert_eq!((r.status, r.text().as_str()), (200, "healthy"));
    assert_eq!(r.header("x-static"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // Exact path does not match as a prefix.
    assert_eq!(req(a, "GET", "any.test", "/healthz/more", "").status, 404);

    // Wildcard host, with a port and in upper case.
    for host in [
        "shop.example.com",
        "SHOP.Example.COM:8443",
        "a.b.example.com",
    ] {
        let r = req(a, "GET", host, "/static/x.css", "");
        assert_eq!(
            (r.status, r.text().as_str()),
            (203, "wildcard static"),
            "host {host}"
        );
    }
    // A look-alike is not a subdomain.
    assert_eq!(
        req(a, "GET", "evilexample.com", "/static/x", "").status,
        404
    );

    // Exact host, case and port ignored.
    for host in ["exact.test", "EXACT.test:80"] {
        let r = req(a, "GET", host, "/whatever", "");
        assert_eq!(r.text(), "exact host", "host {host}");
    }
    assert_eq!(req(a, "GET", "exact.test.evil", "/", "").status, 404);

    // Path prefix + strip_prefix to the api upstream.
    let r = req(a, "GET", "svc.test", "/api/users/7?full=1", "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "api GET /users/7?full=1")
    );
    assert_eq!(api.last().path, "/users/7?full=1");
    assert_eq!(api.last().header("host"), Some("svc.test"));

    // Header match goes first and does not strip.
    let r = req(a, "GET", "svc.test", "/api/users/7", "X-Version: 2\r\n");
    assert_eq!(r.text(), "other GET /api/users/7");
    assert_eq!(other.last().path, "/api/users/7");

    // Method mismatch falls through to 404.
    assert_eq!(req(a, "DELETE", "svc.test", "/api/users/7", "").status, 404);

    // Wildcard host to an upstream.
    let r = req(a, "GET", "Img.Example.com", "/logo.png", "");
    assert_eq!(r.text(), "other GET /logo.png");

    // Static non-200.
    let r = req(a, "GET", "svc.test", "/gone/now", "");
    assert_eq!((r.status, r.text().as_str()), (410, "gone for good"));

    // Nothing matches.
    let r = req(a, "GET", "nowhere.test", "/nothing", "");
    assert_eq!(r.status, 404);
    let (code, _) = get(&rw.url("/nothing"));
    assert_eq!(code, 404);

    assert_eq!(api.count(), 1);
    assert_eq!(other.count(), 2);
}

#[test]
fn static_response_head_and_keepalive() {
    let api = Upstream::start("api");
    let rw = Ringway::start(&config(api.addr, api.addr));
    let r = raw_exchange(rw.addr(), b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("7"));
    // ureq on one agent: the static route keeps the connection alive across calls.
    let agent = agent();
    for _ in 0..5 {
        let (code, resp) = ureq_result(agent.get(&rw.url("/healthz")).call());
        assert_eq!(code, 200);
        assert_eq!(resp.into_string().unwrap(), "healthy");
    }
    assert_eq!(api.count(), 0);
}

#[test]
fn strip_prefix_exact_prefix_becomes_root() {
    let api = Upstream::start("api");
    let rw = Ringway::start(&config(api.addr, api.addr));
    let r = req(rw.addr(), "GET", "t", "/api/", "");
    assert_eq!(r.status, 200);
    assert_eq!(api.last().path, "/");
}
