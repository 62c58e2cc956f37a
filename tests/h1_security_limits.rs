//! Issue 6 §3 from the outside: every configurable limit is enforced with its status, just past
//! the limit, while a request just inside it still passes: request line (414), head bytes and
//! header count (431), body size per route (413, Content-Length and chunked), chunk extension
//! and trailer size (400), requests per keep-alive connection, connections per worker.

mod h1_common;

use h1_common::*;
use std::io::Write;

const HTTP_LIMITS: &str = r#"
max_request_line = 256
max_head_size = 2048
max_headers = 10
max_body_size = 1000
max_chunk_extension = 16
max_trailer_size = 32
"#;

fn limited() -> (Upstream, Ringway) {
    let up = Upstream::echo_path();
    let small = r#"
[[route]]
name = "small"
match = { path_prefix = "/small" }
upstream = "up"
max_body_size = 100
"#;
    let rw = Ringway::start(&config(up.addr, HTTP_LIMITS, small));
    (up, rw)
}

fn ok(addr: std::net::SocketAddr, bytes: &[u8]) -> Response {
    let mut c = Client::new(addr);
    c.send(bytes);
    let r = c.response().expect("an answer");
    assert_eq!(
        r.status,
        200,
        "{:?}: {}",
        String::from_utf8_lossy(bytes),
        r.head
    );
    r
}

/// A request line of exactly `len` bytes including its CRLF.
fn line_of(len: usize) -> String {
    // "GET /" + path + " HTTP/1.1\r\n"
    format!("GET /{} HTTP/1.1\r\n", "a".repeat(len - 16))
}

#[test]
fn request_line_limit_is_414() {
    let (_up, rw) = limited();
    let at = line_of(256);
    assert_eq!(at.len(), 256);
    ok(
        rw.addr,
        format!("{at}Host: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let over = line_of(258);
    expect_reject(rw.addr, format!("{over}Host: t\r\n\r\n").as_bytes(), 414);
    // Empty lines before it do not move the limit (found by fuzzing).
    expect_reject(
        rw.addr,
        format!("\r\n{over}Host: t\r\n\r\n").as_bytes(),
        414,
    );
    // Refused before the line is even complete: no need to wait for the rest.
    expect_reject(rw.addr, format!("GET /{}", "a".repeat(400)).as_bytes(), 414);
}

#[test]
fn head_bytes_limit_is_431() {
    let (_up, rw) = limited();
    let big = "v".repeat(1900);
    ok(
        rw.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let bigger = "v".repeat(2100);
    expect_reject(
        rw.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {bigger}\r\n\r\n").as_bytes(),
        431,
    );
    // A head that never ends is cut at the limit, not buffered forever.
    expect_reject(
        rw.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}", "v".repeat(3000)).as_bytes(),
        431,
    );
}

#[test]
fn header_count_limit_is_431() {
    let (_up, rw) = limited();
    let fields =
        |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>() };
    // Host + Connection + 8 = 10 fields: allowed.
    ok(
        rw.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}\r\n",
            fields(8)
        )
        .as_bytes(),
    );
    expect_reject(
        rw.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}\r\n",
            fields(9)
        )
        .as_bytes(),
        431,
    );
}

#[test]
fn body_limit_per_route_is_413() {
    let (up, rw) = limited();
    let body = |n: usize| "b".repeat(n);
    // The route's own limit (100) ...
    ok(
        rw.addr,
        format!(
            "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}",
            body(100)
        )
        .as_bytes(),
    );
    let before = up.all_received().len();
    // Refused on the head alone: the client need not send the body at all.
    expect_reject(
        rw.addr,
        b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n",
        413,
    );
    assert_eq!(up.all_received().len(), before, "a 413 went upstream");
    // ... while another route has the global one (1000).
    ok(
        rw.addr,
        format!(
            "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\nConnection: close\r\n\r\n{}",
            body(101)
        )
        .as_bytes(),
    );
    expect_reject(
        rw.addr,
        b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
        413,
    );
    // Chunked bodies are counted as they stream.
    let chunked = |n: usize| {
        format!(
            "POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            n,
            body(n)
        )
    };
    ok(rw.addr, chunked(100).as_bytes());
    expect_reject(rw.addr, chunked(101).as_bytes(), 413);
}

#[test]
fn chunk_extension_and_trailer_limits() {
    let (_up, rw) = limited();
    let req = |chunks: &str| {
        format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunks}")
    };
    let ext16 = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(16));
    ok(rw.addr, req(&ext16).as_bytes());
    let ext17 = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(17));
    expect_reject(rw.addr, req(&ext17).as_bytes(), 400);
    // Extensions on the last chunk count too.
    let last_ext = format!("0;{}\r\n\r\n", "e".repeat(40));
    expect_reject(rw.addr, req(&last_ext).as_bytes(), 400);
    // Trailer section: 32 bytes allowed (CRLFs not counted), 33 refused.
    let t32 = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(27));
    ok(rw.addr, req(&t32).as_bytes());
    let t33 = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(28));
    expect_reject(rw.addr, req(&t33).as_bytes(), 400);
    // Many small trailer lines add up.
    let many = format!("0\r\n{}\r\n", "A: b\r\n".repeat(10));
    expect_reject(rw.addr, req(&many).as_bytes(), 400);
}

#[test]
fn keepalive_requests_close_after_n() {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "max_keepalive_requests = 3", ""));
    let mut c = Client::new(rw.addr);
    for i in 1..=3 {
        c.send(format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.response().expect("answer");
        assert_eq!((r.status, r.text()), (200, format!("/{i}")));
        if i < 3 {
            assert_eq!(r.header("connection"), None, "request {i}");
        } else {
            // The last one is told so.
            assert_eq!(r.header("connection").as_deref(), Some("close"));
        }
    }
    c.expect_closed();

    // Pipelined past the limit: three answers, then the close; the fourth never goes upstream.
    let mut c = Client::new(rw.addr);
    c.send(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\nGET /p2 HTTP/1.1\r\nHost: t\r\n\r\nGET /p3 HTTP/1.1\r\nHost: t\r\n\r\nGET /p4 HTTP/1.1\r\nHost: t\r\n\r\n");
    for i in 1..=3 {
        assert_eq!(c.response().expect("answer").text(), format!("/p{i}"));
    }
    assert!(c.response().is_none(), "a fourth answer on the connection");
    assert!(!String::from_utf8_lossy(&up.all_received()).contains("/p4"));
}

#[test]
fn connections_per_worker_are_capped() {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "max_connections = 2", ""));
    // Two connections, each proven accepted and served.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = Client::new(rw.addr);
        c.send(format!("GET /held{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(c.response().expect("answer").status, 200);
        held.push(c);
    }
    // The third is closed at once, unanswered.
    let mut third = Client::new(rw.addr);
    let _ = third
        .stream
        .write_all(b"GET /third HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(third.response().is_none(), "a third connection was served");
    assert!(!String::from_utf8_lossy(&up.all_received()).contains("/third"));
    // The held ones still work; once one goes, a new connection is served again.
    held[0].send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(held[0].response().expect("answer").text(), "/again");
    drop(held.pop());
    wait_for(DEADLINE, "a freed connection slot", || {
        let mut c = Client::new(rw.addr);
        let _ = c
            .stream
            .write_all(b"GET /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        c.response().map(|r| r.status)
    });
}
