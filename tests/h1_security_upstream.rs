//! Issue 6 §2 from the outside: an upstream that sends conflicting framing or an invalid status
//! line makes Ringway answer 502, close that upstream connection and never reuse it: the next
//! request opens a fresh one. A response after which the upstream connection's state is
//! uncertain (extra bytes, close-delimited, `Connection: close`, broken chunked body) is
//! relayed but the connection never goes back to the pool.

mod h1_common;

use h1_common::*;
use std::io::Write;

/// An upstream whose first connection answers its first request with `bad` and then stays
/// open (so that reusing it would hang); every later connection behaves.
fn misbehaving(bad: &'static [u8]) -> Upstream {
    Upstream::spawn(move |c| {
        if c.index == 0 {
            if c.read_request().is_some() {
                let _ = c.stream.write_all(bad);
            }
            c.drain_to_eof();
        } else {
            serve_echo(c);
        }
    })
}

const BAD_RESPONSES: &[(&str, &[u8])] = &[
    ("CL and TE", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE and CL", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"),
    ("differing CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("CL list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ("CL negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
    ("CL plus", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
    ("CL non-numeric", b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello"),
    ("two TE headers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx"),
    ("TE gzip, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("4-digit status", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
    ("2-digit status", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
    ("status 600", b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"),
    ("status 099", b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"),
    ("letters in status", b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"),
    ("wrong protocol name", b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("HTTP/2.0 status line", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("no status line", b"Content-Length: 0\r\n\r\n"),
    ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n"),
    ("NUL in header", b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("unasked 101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"),
    ("closed inside the head", b"HTTP/1.1 200 OK\r\nContent-Len"),
];

#[test]
fn bad_upstream_responses_are_502_and_the_connection_is_dropped() {
    for (what, bad) in BAD_RESPONSES {
        eprintln!("case: {what}");
        let close_after = *what == "closed inside the head";
        let up = if close_after {
            Upstream::spawn(move |c| {
                if c.index == 0 {
                    if c.read_request().is_some() {
                        let _ = c.stream.write_all(bad);
                    }
                    // Closing our side: the head can never complete.
                } else {
                    serve_echo(c);
                }
            })
        } else {
            misbehaving(bad)
        };
        let rw = Ringway::start(&config(up.addr, "", ""));
        let mut c = Client::new(rw.addr);
        c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response().expect("an answer");
        assert_eq!(r.status, 502, "{what}: {}", r.head);
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{what}");
        c.expect_closed();
        if !close_after {
            up.wait_closed(0);
        }
        // The next request is served on a fresh upstream connection.
        let r = get(rw.addr, "/second");
        assert_eq!((r.status, r.text().as_str()), (200, "/second"), "{what}");
        assert_eq!(up.accepted(), 2, "{what}: the bad connection was reused");
    }
}

/// Responses Ringway can relay, after which the upstream connection must still not be reused.
#[test]
fn uncertain_connections_are_not_pooled() {
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "bytes after the body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl",
            "ok",
        ),
        (
            "Connection: close",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            "ok",
        ),
        (
            "HTTP/1.0 without keep-alive",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "ok",
        ),
    ];
    for (what, resp, body) in cases {
        eprintln!("case: {what}");
        let up = misbehaving(resp);
        let rw = Ringway::start(&config(up.addr, "", ""));
        let mut c = Client::new(rw.addr);
        c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response().expect("an answer");
        assert_eq!((r.status, r.text().as_str()), (200, *body), "{what}");
        up.wait_closed(0);
        // The client connection itself is fine and keeps going, on a new upstream connection.
        c.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response().expect("an answer");
        assert_eq!((r.status, r.text().as_str()), (200, "/second"), "{what}");
        assert_eq!(up.accepted(), 2, "{what}");
    }
}

#[test]
fn close_delimited_response_is_rechunked_and_not_pooled() {
    let up = Upstream::spawn(|c| {
        if c.index == 0 {
            if c.read_request().is_some() {
                let _ = c
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end");
            }
            // Returning closes the connection: that ends the body.
        } else {
            serve_echo(c);
        }
    });
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().expect("an answer");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.text(), "until the end");
    c.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().expect("answer").text(), "/second");
    assert_eq!(up.accepted(), 2);
}

#[test]
fn broken_chunked_response_body_closes_both_sides() {
    let up = misbehaving(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
    );
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    // The head went out before the body broke: the only honest signal left is the close,
    // without the terminating chunk (so the client knows the body is incomplete).
    let mut raw = Vec::new();
    {
        use std::io::Read;
        let _ = c.stream.read_to_end(&mut raw);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a broken body was completed: {text}"
    );
    up.wait_closed(0);
    assert_eq!(get(rw.addr, "/second").text(), "/second");
    assert_eq!(up.accepted(), 2);
}

#[test]
fn upstream_response_is_normalised_for_the_client() {
    let up = misbehaving(
        b"HTTP/1.1 200 Fine\r\nX-Z: 1\r\nConnection: X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=3\r\nTransfer-Encoding: chunked\r\nX-A: 2\r\nContent_Length: 3\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    {
        use std::io::Read;
        c.stream.read_to_end(&mut raw).unwrap();
    }
    assert_eq!(
        String::from_utf8_lossy(&raw),
        "HTTP/1.1 200 Fine\r\nX-Z: 1\r\nX-A: 2\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
}

/// A response larger than the upstream read buffer (16 KiB) but small enough to be read whole
/// before it is passed on (32 KiB), arriving in two pieces: nothing reaches the client until the
/// second piece is in, then all of it does, in one write. Both for a head passed on as it came
/// and for one Ringway rewrites (a hop-by-hop header to drop), over one client connection and
/// one upstream connection.
#[test]
fn a_small_response_in_pieces_is_held_until_whole() {
    use std::io::Read;
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    // The test says when the upstream may send the second piece.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let up = Upstream::spawn(move |c| {
        while let Some(req) = c.read_request() {
            let hop = if req.target() == "/rewritten" {
                "Keep-Alive: timeout=5\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\n{hop}Content-Length: {}\r\n\r\n",
                sent.len()
            );
            c.stream.write_all(head.as_bytes()).unwrap();
            c.stream.write_all(&sent[..17_000]).unwrap();
            if wait.lock().unwrap().recv().is_err() {
                return;
            }
            c.stream.write_all(&sent[17_000..]).unwrap();
        }
    });
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    for path in ["/verbatim", "/rewritten"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        // The first piece is at the proxy, which holds it: not a byte reaches the client.
        c.stream
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut one = [0u8; 1];
        let early = c.stream.read(&mut one);
        assert!(
            matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "{path}: the client got bytes before the response was whole: {early:?}"
        );
        c.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        go.send(()).unwrap();
        let r = c.response().expect("an answer");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.body == body,
            "{path}: body differs ({} bytes)",
            r.body.len()
        );
        assert_eq!(r.header("keep-alive"), None, "{path}");
    }
    assert_eq!(up.accepted(), 1, "the upstream connection was reused");
}

/// The same response cut short by the upstream: the client gets the head and the bytes that
/// came, then the connection closes, never hangs and never sees a complete response.
#[test]
fn a_small_response_cut_short_closes_the_client_connection() {
    let up = Upstream::spawn(|c| {
        if c.read_request().is_some() {
            let _ = c
                .stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n");
            let _ = c.stream.write_all(&[b'x'; 5_000]);
        }
        // Returning closes the connection inside the body.
    });
    let rw = Ringway::start(&config(up.addr, "", ""));
    let mut c = Client::new(rw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut got = Vec::new();
    match std::io::Read::read_to_end(&mut c.stream, &mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no close within the deadline: {e}"),
    }
    let end = find(&got, b"\r\n\r\n").expect("a response head") + 4;
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got[..end])
    );
    assert_eq!(got.len() - end, 5_000, "the bytes that came, and no more");
}
