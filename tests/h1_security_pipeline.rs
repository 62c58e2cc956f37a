//! Issue 6 §5 and the normalisation rule from the outside. Pipelined requests are answered in
//! order, each framed on its own (bodies of every framing in between); a request that fails to
//! parse mid-pipeline gets the earlier ones answered, then 400 and the close, and nothing after
//! it reaches the upstream. What the upstream receives is asserted byte for byte: framing
//! re-encoded, hop-by-hop headers gone, end-to-end headers in their order and spelling. What the
//! client receives likewise: a response head with nothing to rewrite as the upstream sent it,
//! one with hop-by-hop headers re-serialised without them.

mod h1_common;

use h1_common::*;
use std::io::Write;

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    // One write: a GET, a Content-Length POST, a chunked POST, a HEAD, a body-less POST, a GET.
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n\
POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n0\r\n\r\n\
HEAD /4 HTTP/1.1\r\nHost: t\r\n\r\n\
POST /5 HTTP/1.1\r\nHost: t\r\n\r\n\
GET /6 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    for i in 1..=6 {
        let r = c.response_to(i == 4).expect("an answer");
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
        if i != 4 {
            assert_eq!(r.text(), format!("/{i}"));
        }
    }
    // Bodies that look like requests stayed bodies.
    let seen = String::from_utf8_lossy(&up.all_received()).into_owned();
    assert_eq!(seen.matches("GET /smuggled").count(), 2, "{seen}");
    // The connection is still good.
    c.send(b"GET /7 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().expect("answer").text(), "/7");
}

#[test]
fn parse_error_mid_pipeline_answers_earlier_then_400_and_close() {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
GET /2 HTTP/1.1\r\nHost: t\r\n\r\n\
GET /3 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n\
GET /4 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.response().expect("answer").text(), "/1");
    assert_eq!(c.response().expect("answer").text(), "/2");
    let r = c.response().expect("the 400");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    c.expect_closed();
    let seen = String::from_utf8_lossy(&up.all_received()).into_owned();
    assert!(seen.contains("GET /2 ") && !seen.contains("/3") && !seen.contains("/4"));
}

#[test]
fn chunked_body_error_mid_pipeline_closes() {
    let up = Upstream::spawn(|c| {
        // Answer complete requests; a half request is never answered.
        serve_echo(c)
    });
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n-0\r\n\r\n\
GET /3 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.response().expect("answer").text(), "/1");
    assert_eq!(c.response().expect("the 400").status, 400);
    c.expect_closed();
    assert!(!String::from_utf8_lossy(&up.all_received()).contains("/3"));
}

/// The request as the upstream receives it, for one request on a fresh Ringway.
fn upstream_bytes(request: &[u8]) -> String {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(request);
    let r = c.response().expect("an answer");
    assert_eq!(r.status, 200, "{}", r.head);
    String::from_utf8_lossy(&up.received(0)).into_owned()
}

#[test]
fn upstream_receives_a_normalised_chunked_request() {
    let got = upstream_bytes(
        b"POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-B: 2\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nx-a: 1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Forwarded-For: 10.0.0.1\r\nTransfer-Encoding:  chunked \r\n\r\n5;ext=1\r\nhello\r\n6;a=b;c=\"d\"\r\n world\r\n0;last\r\nX-T: t\r\n\r\n",
    );
    assert_eq!(
        got,
        "POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-B: 2\r\nx-a: 1\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: example.com\r\nvia: 1.1 ringway\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
}

#[test]
fn upstream_receives_normalised_length_and_version() {
    let got = upstream_bytes(
        b"POST /cl HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nContent-Length: 005\r\n\r\nhello",
    );
    assert_eq!(
        got,
        "POST /cl HTTP/1.1\r\nHost: t\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: t\r\nvia: 1.0 ringway\r\ncontent-length: 5\r\n\r\nhello"
    );
}

#[test]
fn upstream_receives_origin_form_for_absolute_form() {
    let got = upstream_bytes(
        b"GET http://A.example:8080/x?y=1 HTTP/1.1\r\nHost: other\r\nX-Z: z\r\n\r\n",
    );
    assert_eq!(
        got,
        "GET /x?y=1 HTTP/1.1\r\nhost: A.example:8080\r\nX-Z: z\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: A.example:8080\r\nvia: 1.1 ringway\r\n\r\n"
    );
}

#[test]
fn body_less_post_states_its_length_upstream() {
    let got = upstream_bytes(b"POST /e HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        got.ends_with("via: 1.1 ringway\r\ncontent-length: 0\r\n\r\n"),
        "{got}"
    );
}

/// An upstream answering every request with `head` and a 2-byte body.
fn fixed_head(head: &'static str) -> Upstream {
    Upstream::spawn(move |c| {
        while c.read_request().is_some() {
            if c.stream
                .write_all(format!("{head}\r\n\r\nok").as_bytes())
                .is_err()
            {
                return;
            }
        }
    })
}

#[test]
fn a_response_head_with_nothing_to_rewrite_reaches_the_client_as_sent() {
    // Spelling, order and spacing are the upstream's own: the head went through untouched.
    let head = "HTTP/1.1 200 Fine\r\nX-Mixed-Case: v\r\nContent-Length: 2\r\nServer:  odd  spacing";
    let up = fixed_head(head);
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    for _ in 0..2 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response().expect("an answer");
        assert_eq!(r.head, format!("{head}\r\n\r\n"));
        assert_eq!(r.text(), "ok");
    }
    // A client that is leaving gets the same head with the close stated.
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response().expect("an answer");
    assert_eq!(r.head, format!("{head}\r\nconnection: close\r\n\r\n"));
    c.expect_closed();
}

#[test]
fn a_response_head_with_hop_by_hop_headers_is_rewritten() {
    let up = fixed_head(
        "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\nContent-Length: 2",
    );
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().expect("an answer");
    assert_eq!(
        r.head,
        "HTTP/1.1 200 OK\r\nX-End: 2\r\ncontent-length: 2\r\n\r\n"
    );
    assert_eq!(r.text(), "ok");
}
