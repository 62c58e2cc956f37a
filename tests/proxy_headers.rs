//! Header handling through the real binary: hop-by-hop headers removed in both directions
//! (including names listed in `Connection`), X-Forwarded-For/Proto/Host, Via and X-Request-Id
//! as the upstream sees them, Host preserved, and the `[proxy]` switches turning them off.

mod common;

use common::*;
use std::collections::HashSet;

const HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
    "trailer",
    "x-custom-hop",
];

#[test]
fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let up = Upstream::start("a");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let resp = raw_exchange(
        rw.addr(),
        b"GET /hop HTTP/1.1\r\n\
          Host: t\r\n\
          Connection: keep-alive, X-Custom-Hop\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Upgrade: foo/2\r\n\
          Proxy-Connection: keep-alive\r\n\
          Trailer: X-Checksum\r\n\
          X-Custom-Hop: secret\r\n\
          X-End-To-End: kept\r\n\
          \r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let rec = up.last();
    for h in HOP {
        assert!(
            rec.header(h).is_none(),
            "{h} reached the upstream:\n{}",
            rec.raw_head
        );
    }
    assert!(!rec.raw_head.contains("secret"), "{}", rec.raw_head);
    assert_eq!(rec.header("x-end-to-end"), Some("kept"));
}

#[test]
fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let up = Upstream::with(|_| {
        Reply::ok("body")
            .header("Connection", "keep-alive, X-Custom-Hop")
            .header("Keep-Alive", "timeout=5, max=100")
            .header("Upgrade", "foo/2")
            .header("Proxy-Connection", "keep-alive")
            .header("Trailer", "X-Checksum")
            .header("TE", "trailers")
            .header("X-Custom-Hop", "secret")
            .header("X-Resp-Kept", "yes")
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let resp = raw_exchange(rw.addr(), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "body");
    for h in HOP {
        if h == "connection" {
            // Ringway may state its own Connection header, never the upstream's tokens.
            if let Some(v) = resp.header(h) {
                assert!(!v.to_ascii_lowercase().contains("x-custom-hop"), "{v}");
            }
            continue;
        }
        assert!(!resp.has(h), "{h} reached the client: {:?}", resp.headers);
    }
    assert_eq!(resp.header("x-resp-kept"), Some("yes"));
}

#[test]
fn forwarding_headers_seen_by_the_recording_upstream() {
    let up = Upstream::start("a");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));

    let resp = raw_exchange(
        rw.addr(),
        b"GET /f HTTP/1.1\r\nHost: shop.example.com:8443\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let rec = up.last();
    assert_eq!(rec.header("host"), Some("shop.example.com:8443"));
    assert_eq!(rec.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        rec.header("x-forwarded-host"),
        Some("shop.example.com:8443")
    );
    let via = rec.header("via").expect("no Via");
    assert!(via.contains("1.1") && via.contains("ringway"), "{via}");
    let id1 = rec
        .header("x-request-id")
        .expect("no X-Request-Id")
        .to_string();
    assert!(!id1.is_empty());

    // An existing chain is extended, a client's proto/host are not trusted, an id is kept.
    let resp = raw_exchange(
        rw.addr(),
        b"GET /f HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.1.2.3\r\nVia: 1.0 edge\r\n\
          X-Forwarded-Proto: https\r\nX-Request-Id: abc-123\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let rec = up.last();
    assert_eq!(rec.all("x-forwarded-for").join(", "), "10.1.2.3, 127.0.0.1");
    let via = rec.all("via").join(", ");
    assert!(via.starts_with("1.0 edge"), "{via}");
    assert!(via.contains("ringway"), "{via}");
    assert_eq!(rec.all("x-forwarded-proto"), ["http"]);
    assert_eq!(rec.all("x-request-id"), ["abc-123"]);

    // Generated ids differ per request.
    let mut ids = HashSet::new();
    ids.insert(id1);
    for _ in 0..20 {
        get(&rw.url("/id"));
        ids.insert(up.last().header("x-request-id").unwrap().to_string());
    }
    assert_eq!(ids.len(), 21, "request ids repeat: {ids:?}");
}

#[test]
fn forwarding_headers_seen_by_hyper_upstream() {
    let up = HyperUpstream::start();
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let (code, body, err) = curl(&[
        "-H",
        "Host: Api.Service.test",
        "-H",
        "X-Request-Id: keep-me",
        &rw.url("/h"),
    ]);
    assert_eq!(code, 200, "{err}");
    let (_, h) = parse_echo(&String::from_utf8(body).unwrap());
    assert_eq!(echo_header(&h, "host"), Some("Api.Service.test"));
    assert_eq!(echo_header(&h, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo_header(&h, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        echo_header(&h, "x-forwarded-host"),
        Some("Api.Service.test")
    );
    assert!(echo_header(&h, "via").unwrap().contains("ringway"));
    assert_eq!(echo_header(&h, "x-request-id"), Some("keep-me"));
}

#[test]
fn proxy_switches_turn_forwarding_headers_off() {
    let up = Upstream::start("a");
    let rw = Ringway::start(&simple_config(
        &[up.addr],
        "",
        "[proxy]\nx_forwarded_for = false\nx_forwarded_proto = false\nx_forwarded_host = false\n\
         via = false\nrequest_id_header = \"x-trace\"\npreserve_host = false\n",
    ));
    let resp = raw_exchange(rw.addr(), b"GET / HTTP/1.1\r\nHost: client.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    let rec = up.last();
    for h in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "x-request-id",
    ] {
        assert!(rec.header(h).is_none(), "{h} sent:\n{}", rec.raw_head);
    }
    assert!(rec.header("x-trace").is_some_and(|v| !v.is_empty()));
    assert_ne!(
        rec.header("host"),
        Some("client.test"),
        "Host kept although preserve_host = false"
    );
    assert!(rec.header("host").is_some());
}
