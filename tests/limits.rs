//! Client-side limits and timeouts of `[http]` through the real binary: body size (413),
//! request line (414), header count and head size (431), head timeout (408), conflicting
//! framing (400), keep-alive idle timeout and `max_keepalive_requests`; none of the refused
//! requests reaches the upstream.

mod common;

use common::*;
use std::io::{BufReader, Write};

fn start(up: &Upstream, http: &str) -> Ringway {
    Ringway::start(&simple_config(&[up.addr], "", &format!("[http]\n{http}\n")))
}

fn refused(rw: &Ringway, req: &[u8], status: u16) {
    let mut s = connect(rw.addr());
    s.write_all(req).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, status, "{:?}", resp.head);
    assert!(
        closed_by_peer(&mut r),
        "connection left open after {status}"
    );
}

#[test]
fn oversized_bodies_are_413() {
    let up = Upstream::start("a");
    let rw = start(&up, "max_body_size = \"1KiB\"");
    let body = "x".repeat(2000);
    refused(
        &rw,
        format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n{body}").as_bytes(),
        413,
    );
    assert_eq!(up.count(), 0);
    // A chunked body is counted as it streams.
    let mut s = connect(rw.addr());
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..4 {
        let _ = s.write_all(format!("200\r\n{}\r\n", "y".repeat(512)).as_bytes());
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(resp.status, 413);
    // Within the limit it passes.
    let (code, resp) = ureq_result(agent().post(&rw.url("/ok")).send_string(&"z".repeat(1000)));
    assert_eq!(code, 200);
    assert_eq!(resp.into_string().unwrap(), "a POST /ok");
}

#[test]
fn long_request_line_is_414_and_big_heads_are_431() {
    let up = Upstream::start("a");
    let rw = start(
        &up,
        "max_request_line = \"1KiB\"\nmax_head_size = \"4KiB\"\nmax_headers = 10",
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    refused(&rw, long.as_bytes(), 414);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    refused(&rw, many.as_bytes(), 431);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    refused(&rw, big.as_bytes(), 431);
    assert_eq!(up.count(), 0);
    assert_eq!(get(&rw.url("/fine")).0, 200);
}

#[test]
fn conflicting_framing_is_400() {
    let up = Upstream::start("a");
    let rw = start(&up, "");
    refused(
        &rw,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    refused(&rw, b"GET / HTTP/1.1\r\n\r\n", 400); // HTTP/1.1 without Host
    assert_eq!(up.count(), 0);
}

#[test]
fn slow_request_head_is_408() {
    let up = Upstream::start("a");
    let rw = start(&up, "header_timeout = \"300ms\"");
    let mut s = connect(rw.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap(); // never finished
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 408);
    assert!(closed_by_peer(&mut r));
    assert_eq!(up.count(), 0);
}

#[test]
fn idle_keepalive_client_is_closed_after_keepalive_timeout() {
    let up = Upstream::start("a");
    let rw = start(&up, "keepalive_timeout = \"300ms\"");
    let mut s = connect(rw.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    // Nothing more is sent: the proxy closes (EOF, no 408 on an idle connection).
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn max_keepalive_requests_closes_after_the_last() {
    let up = Upstream::start("a");
    let rw = start(&up, "max_keepalive_requests = 3");
    let mut s = connect(rw.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..3 {
        s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.text(), format!("a GET /{i}"));
        let closes = resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        assert_eq!(closes, i == 2, "response {i}: {:?}", resp.headers);
    }
    assert!(closed_by_peer(&mut r));
}
