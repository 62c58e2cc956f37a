//! Client address rules on routes (`ip_allow`, `ip_deny`) through the real binary. A PROXY
//! protocol listener lets the test speak as any client address: denied blocks win over allowed
//! ones, an allow list admits only what it lists (IPv4 and IPv6), a refusal is a 403 that never
//! reaches the upstream nor the route's other filters, and is counted; a bad block is refused
//! at load with its key.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::SocketAddr;

fn config(up: SocketAddr) -> String {
    format!(
        r#"[runtime]
workers = 1

[[listener]]
name = "pp"
bind = "127.0.0.1:0"
proxy_protocol = true

[[listener]]
name = "direct"
bind = "127.0.0.1:0"

[admin]
bind = "127.0.0.1:0"

[upstream.app]
servers = ["{up}"]

[auth.keys]
type = "api_key"
keys = [{{ name = "ops", key = "key-0123456789abcdef" }}]

[[route]]
name = "internal"
match = {{ path_prefix = "/internal/" }}
ip_allow = ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]
ip_deny = ["10.66.0.0/16"]
auth = "keys"
upstream = "app"

[[route]]
name = "public"
ip_deny = ["203.0.113.0/24"]
upstream = "app"
"#
    )
}

/// The status of `GET path` from `client` (through the PROXY listener), with the API key.
fn status_as(pp: SocketAddr, client: &str, path: &str) -> u16 {
    let family = if client.contains(':') { "TCP6" } else { "TCP4" };
    let dest = if client.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    let mut c = connect(pp);
    let req = format!(
        "PROXY {family} {client} {dest} 40000 80\r\nGET {path} HTTP/1.1\r\nHost: gw\r\n\
         X-Api-Key: key-0123456789abcdef\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(c), false).unwrap().status
}

#[test]
fn routes_admit_and_refuse_client_addresses() {
    let up = Upstream::start("app");
    let rw = Ringway::start_n(&config(up.addr), 3, &[]);
    let pp = rw.addrs["pp"];
    let cases = [
        ("10.1.2.3", "/internal/a", 200),
        // Denied inside an allowed block: the deny wins.
        ("10.66.1.1", "/internal/a", 403),
        ("192.0.2.10", "/internal/a", 403),
        ("2001:db8:5::1", "/internal/a", 200),
        ("2001:db9::1", "/internal/a", 403),
        ("192.0.2.10", "/other", 200),
        ("203.0.113.50", "/other", 403),
    ];
    let mut passed = 0;
    for (client, path, want) in cases {
        assert_eq!(status_as(pp, client, path), want, "{client} {path}");
        passed += usize::from(want == 200);
    }
    assert_eq!(up.count(), passed);
    // The allow list names 127.0.0.1: a direct client gets in.
    let r = raw_exchange(
        rw.addrs["direct"],
        b"GET /internal/b HTTP/1.1\r\nHost: gw\r\nX-Api-Key: key-0123456789abcdef\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // Refused before auth: no credential asked of a client that may not use the route.
    let mut c = connect(pp);
    c.write_all(
        b"PROXY TCP4 192.0.2.10 127.0.0.1 1 80\r\nGET /internal/c HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .unwrap();
    let refused = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!(refused.status, 403);
    assert!(!refused.has("www-authenticate"));

    let metrics = wait_for(DEADLINE, "the refusals in /metrics", || {
        let t = raw_exchange(
            rw.addrs["admin"],
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .text();
        let denied = |route: &str| {
            t.lines()
                .find(|l| l.contains(&format!("route=\"{route}\",outcome=\"ip_denied\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        (denied("internal") == Some(4) && denied("public") == Some(1)).then_some(t)
    });
    assert!(metrics.contains("outcome=\"ip_denied\""));
}

#[test]
fn a_bad_block_is_refused_with_its_key() {
    let dir = TempDir::new();
    for (rule, key) in [
        (
            "ip_allow = [\"10.0.0.0/8\", \"10.0.0.1/8\"]",
            "route[0].ip_allow[1]",
        ),
        ("ip_deny = [\"300.1.1.1\"]", "route[0].ip_deny[0]"),
        ("ip_allow = []", "route[0].ip_allow"),
    ] {
        let path = dir.write(
            "ringway.toml",
            &format!(
                "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[[route]]\n{rule}\nrespond = {{ status = 200 }}\n"
            ),
        );
        let (code, text) = ringway_check(&path);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(key), "{key}: {text}");
    }
}
