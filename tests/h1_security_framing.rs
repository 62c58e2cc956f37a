//! Issue 6 §1 from the outside: every request that two parsers could read differently is refused
//! with the right status, the refusal says `connection: close` and the connection is closed, and
//! (for head-level refusals) not one byte reaches the upstream. Each case is the exact bytes sent.

mod h1_common;

use h1_common::*;

/// (what, exact request bytes, status Ringway must answer with)
const HEAD_REJECTS: &[(&str, &[u8], u16)] = &[
    // Content-Length and Transfer-Encoding together, either order.
    ("CL then TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE then CL", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("CL with TE identity", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\n\r\nhello", 400),
    // Several Content-Length values.
    ("two differing CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("two equal CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL list", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
    ("CL plus sign", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("CL minus sign", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n", 400),
    ("CL hex", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello", 400),
    ("CL inner space", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1 5\r\n\r\nhello", 400),
    ("CL empty", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n", 400),
    ("CL overflow", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    // Transfer-Encoding other than exactly chunked.
    ("TE gzip", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("TE identity", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE chunked not last", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE in two headers", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE empty", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \r\n\r\n", 400),
    ("TE xchunked", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    ("TE vertical tab", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("TE chunked in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    // Names that servers mapping `_` to `-` would read as framing.
    ("Content_Length", b"POST / HTTP/1.1\r\nHost: t\r\nContent_Length: 5\r\n\r\nhello", 400),
    ("Transfer_Encoding", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    // Line endings.
    ("bare CR in header value", b"GET / HTTP/1.1\r\nHost: t\rX-A: b\r\n\r\n", 400),
    ("bare CR ending request line", b"GET / HTTP/1.1\rHost: t\r\n\r\n", 400),
    ("bare CR in target", b"GET /a\rb HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("bare LF ending request line", b"GET / HTTP/1.1\nHost: t\r\n\r\n", 400),
    ("bare LF ending a header", b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", 400),
    ("bare LF ending the head", b"GET / HTTP/1.1\r\nHost: t\r\n\n", 400),
    ("bare LF only", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    ("bare LF before the request line", b"\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("bare LF ending request line after an empty line", b"\r\nGET / HTTP/1.1\nHost: t\r\n\r\n", 400),
    // Line folding and whitespace around names.
    ("obs-fold space", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    ("folded first header", b"GET / HTTP/1.1\r\n Host: t\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: t\r\n\r\n", 400),
    ("space before colon on CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello", 400),
    ("space inside name", b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n", 400),
    ("empty name", b"GET / HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n", 400),
    ("no colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A\r\n\r\n", 400),
    // Control bytes.
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", 400),
    ("NUL in name", b"GET / HTTP/1.1\r\nHost: t\r\nX\0A: b\r\n\r\n", 400),
    ("SOH in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400),
    ("ESC in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: \x1b[2J\r\n\r\n", 400),
    ("NUL in target", b"GET /a\0b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("NUL in method", b"G\0T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    // Request targets.
    ("relative target", b"GET foo HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("fragment", b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("raw high byte target", b"GET /\xff HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("userinfo in absolute form", b"GET http://user@t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("empty authority", b"GET http:///x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("other scheme", b"GET ftp://t/x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("bad authority", b"GET http://t:80x/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("CONNECT", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 405),
    // Host.
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("two equal Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("Host with space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("Host with slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    ("Host bad port", b"GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", 400),
    ("Host list", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
    // Request line shape.
    ("two spaces after method", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("two spaces before version", b"GET /  HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("space inside target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("trailing space", b"GET / HTTP/1.1 \r\nHost: t\r\n\r\n", 400),
    ("leading space", b" GET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("tab separator", b"GET\t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("no version", b"GET /\r\nHost: t\r\n\r\n", 400),
    ("lower-case version", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
    ("HTTP/2.0 over h1", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 505),
    ("HTTP/0.9 line", b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    ("method with slash", b"GE/T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    // Other head-level refusals.
    ("unknown expectation", b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n", 417),
    (
        "Connection lists too many names",
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: a, b, c, d, e, f, g, h, i\r\n\r\n",
        400,
    ),
];

#[test]
fn head_rejections_answer_close_and_forward_nothing() {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "", ""));
    // Control: a clean request goes through, so the refusals below are the checks at work.
    assert_eq!(get(rw.addr, "/ok").status, 200);
    let before = up.all_received().len();
    for (what, bytes, status) in HEAD_REJECTS {
        eprintln!("case: {what}");
        let r = expect_reject(rw.addr, bytes, *status);
        assert_eq!(r.header("server").as_deref(), Some("ringway"), "{what}");
    }
    assert_eq!(
        up.all_received().len(),
        before,
        "a refused request reached the upstream:\n{}",
        String::from_utf8_lossy(&up.all_received()[before..])
    );
}

/// The lenient-but-safe side: what RFC 9112 allows and Ringway accepts, normalised upstream.
#[test]
fn tolerated_forms_are_accepted() {
    let up = Upstream::echo_path();
    let rw = Ringway::start(&config(up.addr, "", ""));
    for (what, bytes) in [
        ("OWS around value", &b"GET /ows HTTP/1.1\r\nHost:   t  \r\nX-A:\tb\t\r\nConnection: close\r\n\r\n"[..]),
        ("TE case-insensitive", b"POST /te HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
        ("CL leading zeros", b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\nConnection: close\r\n\r\nhello"),
        ("HTTP/1.0 without Host", b"GET /old HTTP/1.0\r\n\r\n"),
        ("absolute form", b"GET http://t/abs HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"),
        ("IPv6 Host", b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n"),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        ("empty lines before the request line", b"\r\n\r\nGET /lead HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        ("obs-text in value", b"GET /obs HTTP/1.1\r\nHost: t\r\nX-A: caf\xe9\r\nConnection: close\r\n\r\n"),
    ] {
        let mut c = Client::new(rw.addr);
        c.send(bytes);
        let r = c.response().unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(r.status, 200, "{what}: {}", r.head);
    }
}

/// Invalid chunked bodies: the head was fine (and went upstream), the body is not. The client
/// gets 400 and a close, and the upstream connection carrying the half request is dropped.
#[test]
fn chunk_size_tricks_are_refused() {
    let up = Upstream::spawn(|c| {
        // Read the head and whatever body arrives; never answer. Ringway must give up on us.
        c.drain_to_eof();
    });
    let rw = Ringway::start(&config(up.addr, "", ""));
    let cases: &[(&str, &[u8])] = &[
        ("minus sign", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("leading space", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("space then junk", b"5 x\r\nhello\r\n0\r\n\r\n"),
        ("trailing space before CRLF", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("non-hex", b"g\r\nhello\r\n0\r\n\r\n"),
        ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
        ("17 hex digits", b"10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("overflow value", b"fffffffffffffffff\r\n"),
        ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare CR after size", b"5\rhello\r\n0\r\n\r\n"),
        ("data longer than size", b"5\r\nhello!\r\n0\r\n\r\n"),
        ("data without CRLF", b"5\r\nhello0\r\n\r\n"),
        ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
        ("NUL in extension", b"5;a=\0\r\nhello\r\n0\r\n\r\n"),
        ("bare LF in extension", b"5;a\nhello\r\n0\r\n\r\n"),
        ("bare LF in trailer", b"0\r\nX-T: 1\n\r\n"),
        ("obs-fold in trailer", b"0\r\nX-T: 1\r\n folded\r\n\r\n"),
        ("NUL in trailer", b"0\r\nX-T: \0\r\n\r\n"),
        ("underscore size", b"1_0\r\n"),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        eprintln!("case: {what}");
        let mut req = b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        expect_reject(rw.addr, &req, 400);
        // The half-sent request is never finished upstream: that connection is dropped.
        up.wait_closed(i);
    }
}
