//! Header rules, rewrites, redirects and CORS through the real binary, checked on both sides:
//! what the recording upstream received and what the client got back.

mod gateway_common;

use gateway_common::*;

fn start(up: &Upstream) -> Ringway {
    Ringway::start(
        &format!(
            r#"{}
[auth.keys]
type = "api_key"
keys = [{{ name = "acme", key = "key-acme-0001" }}]

[[route]]
name = "users"
match = {{ path_pattern = "/users/{{id}}/orders/{{*rest}}" }}
auth = "keys"
upstream = "svc"
rewrite = {{ regex = "^/users/([^/]+)/orders/(.*)$", replace = "/orders/$2?user=$1" }}
request_headers = {{ set = {{ "x-user" = "${{param.id}}", "x-tag" = "fixed" }}, append = {{ "x-trace" = "${{consumer}}/${{client_ip}}/${{request_id}}" }}, remove = ["x-internal"] }}
response_headers = {{ set = {{ "x-served-by" = "ringway:${{route}}" }}, append = {{ "x-req" = "${{request_id}}" }}, remove = ["x-upstream", "server-timing"] }}

[[route]]
match = {{ path_prefix = "/legacy/" }}
upstream = "svc"
rewrite = {{ prefix = "/legacy/", replace = "/v2/" }}

[[route]]
match = {{ path_prefix = "/old/" }}
redirect = {{ status = 308, location = "https://new.example.com${{path}}?${{query}}" }}

[[route]]
match = {{ path_prefix = "/moved" }}
redirect = {{ status = 301, location = "/elsewhere" }}

[[route]]
match = {{ path_prefix = "/cors/" }}
upstream = "svc"
cors = {{ allow_origins = ["https://app.example.com"], allow_methods = ["GET", "POST"], expose_headers = ["x-upstream"], allow_credentials = true, max_age = "10m" }}
"#,
            upstream_cfg("svc", up)
        ),
        &[],
    )
}

#[test]
fn request_and_response_rules_with_rewrite() {
    let up = Upstream::start(|_| {
        let mut r = Reply::ok("ok");
        r.headers.push(("x-upstream".into(), "svc".into()));
        r.headers.push(("server-timing".into(), "db;dur=53".into()));
        r.headers
            .push(("x-served-by".into(), "upstream-own".into()));
        r
    });
    let rw = start(&up);
    let r = get(
        rw.addr,
        "/users/42/orders/7/items?limit=2",
        &[
            "X-Api-Key: key-acme-0001",
            "X-Internal: secret",
            "X-User: spoof",
            "X-Trace: client",
            "X-Request-Id: rid-123",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = up.last();
    assert_eq!(s.target, "/orders/7/items?user=42&limit=2");
    assert_eq!(s.header("x-internal"), None, "removed");
    assert_eq!(s.all("x-user"), ["42"], "set replaces the client's value");
    assert_eq!(s.header("x-tag"), Some("fixed"));
    assert_eq!(
        s.all("x-trace"),
        ["client", "acme/127.0.0.1/rid-123"],
        "append keeps the client's value"
    );
    assert_eq!(s.header("x-request-id"), Some("rid-123"));
    // Response side.
    assert_eq!(r.header("x-upstream"), None);
    assert_eq!(r.header("server-timing"), None);
    assert_eq!(r.header("x-served-by"), Some("ringway:users"));
    assert_eq!(r.header("x-req"), Some("rid-123"));
}

#[test]
fn generated_request_id_is_the_same_everywhere() {
    let up = Upstream::echo("svc");
    let rw = start(&up);
    let r = get(rw.addr, "/users/9/orders/1", &["X-Api-Key: key-acme-0001"]);
    assert_eq!(r.status, 200);
    let s = up.last();
    let id = s.header("x-request-id").expect("generated id").to_string();
    assert_eq!(id.len(), 24);
    assert_eq!(s.all("x-request-id").len(), 1);
    assert!(s.header("x-trace").unwrap().ends_with(&id));
    assert_eq!(r.header("x-req"), Some(id.as_str()));
}

#[test]
fn prefix_rewrite() {
    let up = Upstream::echo("svc");
    let rw = start(&up);
    let r = get(rw.addr, "/legacy/items/3?x=1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.last().target, "/v2/items/3?x=1");
}

#[test]
fn redirects() {
    let up = Upstream::echo("svc");
    let rw = start(&up);
    let r = get(rw.addr, "/old/a/b?q=1", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://new.example.com/old/a/b?q=1")
    );
    let r = get(rw.addr, "/old/a", &[]);
    assert_eq!(r.header("location"), Some("https://new.example.com/old/a"));
    let r = get(rw.addr, "/moved", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/elsewhere"));
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(up.seen().is_empty());
}

#[test]
fn cors_preflight_and_actual() {
    let up = Upstream::echo("svc");
    let rw = start(&up);
    let r = send(
        rw.addr,
        "OPTIONS",
        "/cors/data",
        &[
            "Origin: https://app.example.com",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: content-type, x-token",
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-token")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("vary"), Some("Origin"));
    // Preflights never reach the upstream.
    assert!(up.seen().is_empty());

    let denied = send(
        rw.addr,
        "OPTIONS",
        "/cors/data",
        &[
            "Origin: https://evil.example",
            "Access-Control-Request-Method: POST",
        ],
    );
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("access-control-allow-origin"), None);
    let wrong_method = send(
        rw.addr,
        "OPTIONS",
        "/cors/data",
        &[
            "Origin: https://app.example.com",
            "Access-Control-Request-Method: DELETE",
        ],
    );
    assert_eq!(wrong_method.status, 403);

    let r = get(rw.addr, "/cors/data", &["Origin: https://app.example.com"]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-upstream")
    );
    let r = get(rw.addr, "/cors/data", &["Origin: https://evil.example"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn keep_alive_after_local_answers() {
    // A 401 and a redirect are answered on the same connection that then carries a
    // proxied request: local answers frame themselves correctly.
    use std::io::{BufReader, Write};
    let up = Upstream::echo("svc");
    let rw = start(&up);
    let mut c = std::net::TcpStream::connect(rw.addr).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for (target, want) in [
        ("/users/1/orders/2", 401),
        ("/moved", 301),
        ("/legacy/x", 200),
    ] {
        write!(c, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let resp = read_response(&mut r, false);
        assert_eq!(resp.status, want, "{target}");
        assert_eq!(resp.header("connection"), None);
    }
}
