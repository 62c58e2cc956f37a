//! Upstream response head parsing and its framing rules (RFC 9112 §6.3): what delimits the body,
//! and whether the upstream connection can be reused afterwards.

use super::headers::{classify, Class, ConnectionTokens};
use super::request::{parse_content_length, Body};
use httparse::Header;
use std::mem::MaybeUninit;

/// Why an upstream response cannot be used: the client gets a 502 and the connection is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

impl BadResponse {
    /// For error returns: cold, so the branch is laid out away from the parse (`crate::hint`).
    #[cold]
    #[inline(never)]
    fn cold(why: &'static str) -> Self {
        BadResponse(why)
    }
}

pub struct ResponseHead<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub headers: &'a [Header<'a>],
    /// How the body is delimited; `None` in `Body` terms means no body at all. A body delimited
    /// by the connection closing is `close_delimited`.
    pub body: Body,
    pub close_delimited: bool,
    pub conn: ConnectionTokens<'a>,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
    pub head_len: usize,
    /// The head may go to the client byte for byte: HTTP/1.1, CRLF line ends only, no header
    /// Ringway removes or rewrites (hop-by-hop, Connection, Transfer-Encoding, look-alikes), at
    /// most one Content-Length, and a body not delimited by close.
    pub verbatim: bool,
}

/// Parses a response head to a request that was `head_request` (HEAD) or not.
pub fn parse<'a>(
    buf: &'a [u8],
    slots: &'a mut [MaybeUninit<Header<'a>>],
    head_request: bool,
    max_head: usize,
) -> Result<Option<ResponseHead<'a>>, BadResponse> {
    let mut res = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, slots)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => {
                BadResponse::cold("too many headers in upstream response")
            }
            _ => BadResponse::cold("malformed upstream response head"),
        })?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= max_head => {
            return Err(BadResponse::cold("upstream response head too large"))
        }
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Err(BadResponse::cold("malformed upstream status line"));
    };
    if !(100..=599).contains(&code) {
        return Err(BadResponse::cold("invalid upstream status code"));
    }
    let reason = res.reason.unwrap_or("");
    let headers: &'a [Header<'a>] = res.headers;
    let mut length: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    let mut conn = ConnectionTokens::default();
    let mut rewritten = false;
    for h in headers {
        match classify(h.name) {
            Class::EndToEnd | Class::Host | Class::Expect => {}
            Class::ContentLength => {
                rewritten |= length.is_some();
                let n = parse_content_length(h.value)
                    .ok_or_else(|| BadResponse::cold("invalid upstream Content-Length"))?;
                if length.is_some_and(|prev| prev != n) {
                    return Err(BadResponse::cold("conflicting upstream Content-Length"));
                }
                length = Some(n);
            }
            Class::TransferEncoding => {
                if te.is_some() {
                    return Err(BadResponse::cold(
                        "several upstream Transfer-Encoding headers",
                    ));
                }
                te = Some(h.value);
                rewritten = true;
            }
            Class::Connection => {
                conn.add(h.value);
                rewritten = true;
            }
            Class::HopByHop | Class::Lookalike => rewritten = true,
        }
    }
    if conn.overflow {
        return Err(BadResponse::cold(
            "upstream Connection header lists too many options",
        ));
    }
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let (body, close_delimited) = if no_body {
        (Body::None, false)
    } else {
        match (te, length) {
            (Some(_), Some(_)) => {
                return Err(BadResponse::cold(
                    "upstream sent both Content-Length and Transfer-Encoding",
                ))
            }
            (Some(v), None) if v.eq_ignore_ascii_case(b"chunked") || trimmed_eq_chunked(v) => {
                (Body::Chunked, false)
            }
            // Any other coding: RFC 9112 §6.3 would have the body run until close, but the coding
            // is hop-by-hop and Ringway neither decodes nor passes it on, so the client would
            // get coded bytes as the body. Refused, as HAProxy does.
            (Some(_), None) => {
                return Err(BadResponse::cold("unsupported upstream transfer coding"))
            }
            (None, Some(n)) => (Body::Length(n), false),
            (None, None) => (Body::None, true),
        }
    };
    let keep = if version == 1 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let verbatim =
        version == 1 && !rewritten && !close_delimited && crlf_only(&buf[..head_len], headers);
    Ok(Some(ResponseHead {
        verbatim,
        status: code,
        reason,
        headers,
        body,
        close_delimited,
        conn,
        reusable: keep && !close_delimited && code != 101,
        head_len,
    }))
}

/// Every line of the head ends in CRLF. httparse also takes a bare LF as a line end, but takes
/// a CR only as part of CRLF (never inside a value or the reason), so a line ends in CRLF
/// exactly when the byte two before the next line is a CR. One look per line, no scan.
fn crlf_only(head: &[u8], headers: &[Header<'_>]) -> bool {
    let base = head.as_ptr() as usize;
    head.ends_with(b"\r\n\r\n")
        && headers.iter().all(|h| {
            let at = h.name.as_ptr() as usize - base;
            at >= 2 && head[at - 2] == b'\r'
        })
}

fn trimmed_eq_chunked(v: &[u8]) -> bool {
    let s = std::str::from_utf8(v).unwrap_or("");
    s.trim().eq_ignore_ascii_case("chunked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], head: bool) -> Result<Option<(u16, Body, bool, bool)>, BadResponse> {
        let mut slots = [MaybeUninit::uninit(); 32];
        parse(input, &mut slots, head, 65536)
            .map(|o| o.map(|r| (r.status, r.body, r.close_delimited, r.reusable)))
    }

    #[test]
    fn framing() {
        assert_eq!(
            run(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false)
                .unwrap()
                .unwrap(),
            (200, Body::Length(5), false, true)
        );
        assert_eq!(
            run(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .unwrap()
            .unwrap(),
            (200, Body::Chunked, false, true)
        );
        assert_eq!(
            run(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap(),
            (200, Body::None, true, false)
        );
        assert_eq!(
            run(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .unwrap()
                .unwrap(),
            (200, Body::None, false, true)
        );
        assert_eq!(
            run(b"HTTP/1.1 204 No Content\r\n\r\n", false)
                .unwrap()
                .unwrap(),
            (204, Body::None, false, true)
        );
        assert!(
            !run(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
                .unwrap()
                .unwrap()
                .3
        );
    }

    #[test]
    fn rejects() {
        assert!(run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(run(b"HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
        assert!(run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).is_err());
        assert!(run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(run(b"HTPT/1.1 200 OK\r\n\r\n", false).is_err());
    }

    fn verbatim(input: &[u8], head: bool) -> bool {
        let mut slots = [MaybeUninit::uninit(); 32];
        parse(input, &mut slots, head, 65536)
            .unwrap()
            .unwrap()
            .verbatim
    }

    #[test]
    fn verbatim_only_when_nothing_is_rewritten() {
        assert!(verbatim(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
            false
        ));
        assert!(verbatim(
            b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
            false
        ));
        assert!(verbatim(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            true
        ));
        // Each of these must be re-serialised.
        for head in [
            &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: b\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent_Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n",
        ] {
            assert!(!verbatim(head, false), "{}", String::from_utf8_lossy(head));
        }
    }
}
