//! Error mapping through the real binary: 502 when the upstream is down or closes without an
//! answer, 504 when it hangs past `response_timeout`, 400 (and a closed connection) for a
//! malformed request line (505 for an unknown HTTP version), and the proxy keeps serving afterwards.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::time::Duration;

#[test]
fn upstream_down_is_502() {
    let port = closed_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rw = Ringway::start(&simple_config(&[addr], "connect_timeout = \"2s\"", ""));
    let (code, body) = get(&rw.url("/x"));
    assert_eq!(code, 502, "body: {body}");
    // curl sees the same status.
    let (code, _, err) = curl(&[&rw.url("/y")]);
    assert_eq!(code, 502, "{err}");
}

#[test]
fn upstream_closing_without_a_response_is_502() {
    let up = Upstream::with(|_| {
        let mut r = Reply::ok("");
        r.close_without_reply = true;
        r
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let (code, _) = get(&rw.url("/x"));
    assert_eq!(code, 502);
    assert!(up.count() >= 1, "the request never reached the upstream");
}

#[test]
fn upstream_hanging_is_504_after_response_timeout() {
    let up = Upstream::with(|_| {
        let mut r = Reply::ok("");
        r.hang = true;
        r
    });
    let rw = Ringway::start(&simple_config(
        &[up.addr],
        "response_timeout = \"300ms\"",
        "",
    ));
    let resp = raw_exchange(rw.addr(), b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 504, "{resp:?}");
    assert_eq!(
        up.count(),
        1,
        "the request reached the upstream exactly once"
    );

    // The worker is not stuck on the hung exchange: the next request gets its own 504.
    let (code, _) = get(&rw.url("/again"));
    assert_eq!(code, 504);
}

#[test]
fn malformed_request_line_is_400_and_connection_closed() {
    let up = Upstream::start("a");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    for (bad, status) in [
        (&b"GARBAGE\r\n\r\n"[..], 400),
        (b"GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"G(T /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /x HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400),
        // Well-formed but a version Ringway does not speak.
        (b"GET /x HTTP/9.9\r\nHost: t\r\n\r\n", 505),
    ] {
        let mut s = connect(rw.addr());
        s.write_all(bad).unwrap();
        // A valid request right behind must not be served on this connection.
        let _ = s.write_all(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut r = BufReader::new(s);
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(
            resp.status,
            status,
            "for {:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(
            closed_by_peer(&mut r),
            "connection left open after {status} for {:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(up.count(), 0, "a malformed request reached the upstream");
    // The proxy is still healthy.
    assert_eq!(get(&rw.url("/ok")), (200, "a GET /ok".to_string()));
}

#[test]
fn malformed_header_is_400() {
    let up = Upstream::start("a");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let resp = raw_exchange(
        rw.addr(),
        b"GET /x HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    // Conflicting framing (request smuggling shape) is refused too.
    let resp = raw_exchange(
        rw.addr(),
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert_eq!(resp.status, 400);
    assert_eq!(up.count(), 0);
}

#[test]
fn slow_upstream_within_timeout_succeeds() {
    let up = Upstream::with(|_| {
        let mut r = Reply::ok("late but fine");
        r.delay = Some(Duration::from_millis(100));
        r
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "response_timeout = \"10s\"", ""));
    assert_eq!(get(&rw.url("/")), (200, "late but fine".to_string()));
}
