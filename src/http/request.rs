//! Request head parsing: httparse for the grammar, then the checks that keep two parsers from
//! disagreeing about where a request ends (RFC 9112 §6, §3.2): framing, Host, target, line endings.

use super::headers::{classify, Class, ConnectionTokens};
use super::Reject;
use httparse::Header;
use std::mem::MaybeUninit;

/// Limits on a request head; taken from `[http]` in the config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_head_size: usize,
}

/// How the message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The origin-form target (path and query) that the upstream receives.
    pub path: &'a str,
    pub version: Version,
    /// Host from the absolute-form target or the Host header; empty only for HTTP/1.0 without one.
    pub host: &'a str,
    pub headers: &'a [Header<'a>],
    pub body: Body,
    pub conn: ConnectionTokens<'a>,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// The head as received; every line of it ends in CRLF.
    pub raw: &'a [u8],
    /// `host` is the Host header's value (not the authority of an absolute-form target).
    pub host_header: bool,
}

impl RequestHead<'_> {
    /// Whether the method is idempotent (RFC 9110 §9.2.2), i.e. safe to send twice.
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        )
    }
}

pub type HeaderSlots<'a> = [MaybeUninit<Header<'a>>];

/// Parses a request head from `buf`. `Ok(None)` means more bytes are needed (and the limits still
/// allow them).
pub fn parse<'a>(
    buf: &'a [u8],
    slots: &'a mut HeaderSlots<'a>,
    limits: &Limits,
) -> Result<Option<RequestHead<'a>>, Reject> {
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, slots) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(431, "too many header fields"))
        }
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(e) => return Err(Reject::new(400, httparse_reason(e))),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return partial(buf, limits),
    };
    if head_len > limits.max_head_size {
        return Err(Reject::new(431, "request head too large"));
    }
    let head = &buf[..head_len];
    // httparse skips empty lines before the request line (RFC 9112 §2.2), bare LFs included;
    // the line checks below start after them.
    let start = leading_empty_lines(head)?;
    let line_end = start + memchr::memchr(b'\n', &head[start..]).unwrap_or(head.len() - start);
    if line_end - start > limits.max_request_line {
        return Err(Reject::new(414, "request line too long"));
    }
    check_line_endings(head, start, line_end, req.headers)?;

    let (Some(method), Some(target), Some(v)) = (req.method, req.path, req.version) else {
        return Err(Reject::new(400, "incomplete request line"));
    };
    let version = if v == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let headers: &'a [Header<'a>] = req.headers;

    let (path, target_host) = split_target(method, target)?;

    let mut host: Option<&str> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut saw_te = false;
    let mut te_error: Option<Reject> = None;
    let mut conn = ConnectionTokens::default();
    let mut expect_continue = false;
    for h in headers {
        match classify(h.name) {
            Class::EndToEnd | Class::HopByHop => {}
            Class::Lookalike => {
                return Err(Reject::new(400, "header name resembling a framing header"))
            }
            Class::Host => {
                if host.is_some() {
                    return Err(Reject::new(400, "more than one Host header"));
                }
                if !valid_host(h.value) {
                    return Err(Reject::new(400, "invalid Host header"));
                }
                // SAFETY: valid_host admits ASCII bytes only (reg-name table, digits, ':', '.',
                // brackets), and ASCII is UTF-8. `from_utf8` cost ~125 instructions per request.
                host = Some(unsafe { std::str::from_utf8_unchecked(h.value) });
            }
            Class::ContentLength => {
                if length.is_some() {
                    return Err(Reject::new(400, "more than one Content-Length"));
                }
                length = Some(
                    parse_content_length(h.value)
                        .ok_or_else(|| Reject::new(400, "invalid Content-Length"))?,
                );
            }
            Class::TransferEncoding => {
                if saw_te {
                    return Err(Reject::new(400, "more than one Transfer-Encoding header"));
                }
                saw_te = true;
                // Judged after the loop: with a Content-Length too, the answer is 400 whatever
                // the coding says.
                match transfer_encoding_is_chunked(h.value) {
                    Ok(c) => chunked = c,
                    Err(r) => te_error = Some(r),
                }
            }
            Class::Connection => conn.add(h.value),
            Class::Expect => {
                if h.value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(Reject::new(417, "unsupported expectation"));
                }
            }
        }
    }
    if conn.overflow {
        return Err(Reject::new(400, "Connection header lists too many options"));
    }
    if let (Some(r), None) = (te_error, length) {
        return Err(r);
    }
    let body = match (saw_te, length) {
        (true, Some(_)) => {
            return Err(Reject::new(
                400,
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (true, None) if version == Version::Http10 => {
            return Err(Reject::new(400, "Transfer-Encoding in an HTTP/1.0 request"))
        }
        (true, None) if chunked => Body::Chunked,
        (true, None) => return Err(Reject::new(400, "Transfer-Encoding without chunked")),
        (false, Some(0)) | (false, None) => Body::None,
        (false, Some(n)) => Body::Length(n),
    };
    let host_header = target_host.is_none() && host.is_some();
    let host = match (target_host, host, version) {
        (Some(t), _, _) => t,
        (None, Some(h), _) => h,
        (None, None, Version::Http10) => "",
        (None, None, Version::Http11) => return Err(Reject::new(400, "missing Host header")),
    };
    let keep_alive = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    };
    Ok(Some(RequestHead {
        method,
        path,
        version,
        host,
        headers,
        body,
        conn,
        keep_alive,
        expect_continue: expect_continue && body != Body::None && version == Version::Http11,
        head_len,
        raw: head,
        host_header,
    }))
}

/// httparse reports any request line whose third part is not `HTTP/1.0` or `HTTP/1.1` as a
/// version error, including lines with extra spaces (`GET /a b HTTP/1.1`) or a lower-case
/// `http/1.1`. Only a well-formed line naming another version (`HTTP/2.0`, `HTTP/0.9`) earns a
/// 505; anything else is a malformed request line (400). Runs on the error path only.
fn version_error(buf: &[u8]) -> Reject {
    let line = &buf[..memchr::memchr(b'\n', buf).unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|b| *b == b' ');
    let well_formed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => {
            !m.is_empty()
                && !t.is_empty()
                && v.len() == 8
                && v.starts_with(b"HTTP/")
                && v[5].is_ascii_digit()
                && v[6] == b'.'
                && v[7].is_ascii_digit()
        }
        _ => false,
    };
    if well_formed {
        Reject::new(505, "unsupported HTTP version")
    } else {
        Reject::new(400, "malformed request line")
    }
}

/// An incomplete head is fine unless it already breaks a limit.
fn partial<'a>(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead<'a>>, Reject> {
    let start = leading_empty_lines(buf)?;
    let line_end = memchr::memchr(b'\n', &buf[start..]);
    match line_end {
        None if buf.len() - start > limits.max_request_line => {
            Err(Reject::new(414, "request line too long"))
        }
        Some(n) if n > limits.max_request_line => Err(Reject::new(414, "request line too long")),
        _ if buf.len() >= limits.max_head_size => Err(Reject::new(431, "request head too large")),
        _ => Ok(None),
    }
}

/// Empty lines before the request line are tolerated as CRLF only (a client may send one
/// after a body); a bare LF there is refused like anywhere else. Returns where the request
/// line starts. Only the first bytes of a head are looked at.
fn leading_empty_lines(buf: &[u8]) -> Result<usize, Reject> {
    let mut i = 0;
    while buf[i..].starts_with(b"\r\n") {
        i += 2;
    }
    if buf.get(i) == Some(&b'\n') {
        return Err(Reject::new(400, "bare LF in request head"));
    }
    Ok(i)
}

/// httparse accepts a bare LF as a line ending; a peer that does not would see different
/// headers, so we refuse it (RFC 9112 §2.2 allows either choice). A LF can only end a line
/// (httparse refuses it elsewhere, and obs-fold), so checking the byte before each line's end
/// covers the head in O(lines): the request line, each header (after any trailing
/// whitespace), and the final empty line.
fn check_line_endings(
    head: &[u8],
    start: usize,
    line_end: usize,
    headers: &[Header<'_>],
) -> Result<(), Reject> {
    const BARE_LF: Reject = Reject::new(400, "bare LF in request head");
    if line_end <= start || head[line_end - 1] != b'\r' || !head.ends_with(b"\r\n\r\n") {
        crate::hint::cold();
        return Err(BARE_LF);
    }
    let base = head.as_ptr() as usize;
    for h in headers {
        let mut i = h.value.as_ptr() as usize - base + h.value.len();
        while i < head.len() && (head[i] == b' ' || head[i] == b'\t') {
            i += 1;
        }
        if head.get(i) != Some(&b'\r') {
            crate::hint::cold();
            return Err(BARE_LF);
        }
    }
    Ok(())
}

/// Turns the request target into the origin-form path to forward, plus the authority when the
/// client sent absolute-form (which then overrides Host, RFC 9112 §3.2.2).
fn split_target<'a>(method: &str, target: &'a str) -> Result<(&'a str, Option<&'a str>), Reject> {
    if target.starts_with('/') {
        // httparse admits bytes >= 0x80 in a target; RFC 3986 does not. One branch-free pass
        // finds both those and a fragment.
        let bad = target
            .bytes()
            .fold(0u8, |acc, b| acc | (b & 0x80) | u8::from(b == b'#'));
        if bad != 0 {
            return Err(Reject::new(400, "invalid request target"));
        }
        return Ok((target, None));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(("*", None))
        } else {
            Err(Reject::new(400, "asterisk target is only for OPTIONS"))
        };
    }
    if method == "CONNECT" {
        return Err(Reject::new(405, "CONNECT is not supported"));
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or_else(|| Reject::new(400, "invalid request target"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || !valid_host(authority.as_bytes())
        || path.bytes().any(|b| b == b'#' || b >= 0x80)
    {
        return Err(Reject::new(400, "invalid request target"));
    }
    Ok((path, Some(authority)))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// uri-host [":" port]: reg-name characters or an IPv6 literal, and digits after the colon.
fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > 255 {
        return false;
    }
    let (name_ok, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(i) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal_ok = i > 0
            && rest[..i]
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        let after = &rest[i + 1..];
        let port = match after.strip_prefix(b":") {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return false,
        };
        (literal_ok, port)
    } else {
        let (name, port) = match v.iter().rposition(|b| *b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        (
            !name.is_empty() && name.iter().all(|b| REG_NAME[*b as usize]),
            port,
        )
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    name_ok && port_ok
}

/// Bytes allowed in a reg-name (RFC 3986: unreserved, sub-delims, pct-encoded), as a table:
/// the host is checked on every request.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    t
};

/// Content-Length is 1*DIGIT; signs, spaces inside, lists and overflow are refused.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, d| acc * 10 + (d - b'0') as u64))
}

/// Only exactly `chunked` is accepted: other codings would need Ringway to decode them to find
/// the end of the message.
fn transfer_encoding_is_chunked(v: &[u8]) -> Result<bool, Reject> {
    let v = trim(v);
    if v.eq_ignore_ascii_case(b"chunked") {
        return Ok(true);
    }
    let last = v.rsplit(|b| *b == b',').next().map(trim).unwrap_or(b"");
    let chunked_count = v
        .split(|b| *b == b',')
        .filter(|c| trim(c).eq_ignore_ascii_case(b"chunked"))
        .count();
    if chunked_count > 1 {
        Err(Reject::new(400, "chunked applied more than once"))
    } else if v.is_empty() {
        Err(Reject::new(400, "empty Transfer-Encoding"))
    } else if last.eq_ignore_ascii_case(b"chunked") {
        Err(Reject::new(501, "unsupported transfer coding"))
    } else if v
        .split(|b| *b == b',')
        .map(trim)
        .any(|c| c.eq_ignore_ascii_case(b"chunked"))
    {
        Err(Reject::new(400, "chunked is not the final transfer coding"))
    } else {
        Err(Reject::new(501, "unsupported transfer coding"))
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request line",
        _ => "malformed request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_request_line: 8192,
        max_head_size: 32768,
    };

    /// The Host header is turned into a str without a UTF-8 check because of this.
    #[test]
    fn valid_host_admits_ascii_only() {
        for b in 0x80..=0xffu8 {
            for v in [
                vec![b'a', b],
                vec![b],
                vec![b'[', b':', b':', b, b']'],
                vec![b'a', b':', b'8', b],
            ] {
                assert!(!valid_host(&v), "{v:?}");
            }
        }
        assert!(valid_host(b"Example.com:8080"));
        assert!(valid_host(b"[::1]:80"));
    }

    #[test]
    fn valid_host_ports_and_colons() {
        for ok in [
            &b"a"[..],
            b"a:1",
            b"a.b-c_d~e%41!$&'()*+,;=:65535",
            b"127.0.0.1:8080",
        ] {
            assert!(valid_host(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b":80"[..],
            b"a:",
            b"a:b",
            b"a:1:2",
            b"a::1",
            b"a:123456",
            b"a b",
            b"a/b",
            b"a@b",
            b"",
        ] {
            assert!(!valid_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn run(input: &[u8]) -> Result<Option<(Body, String, bool)>, u16> {
        let mut slots = [MaybeUninit::uninit(); 64];
        match parse(input, &mut slots, &LIMITS) {
            Ok(Some(h)) => Ok(Some((h.body, h.host.to_string(), h.keep_alive))),
            Ok(None) => Ok(None),
            Err(r) => Err(r.status),
        }
    }

    #[test]
    fn plain_get() {
        let r = run(b"GET /a HTTP/1.1\r\nHost: Example.com:80\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r, (Body::None, "Example.com:80".into(), true));
    }

    #[test]
    fn partial_needs_more() {
        assert_eq!(run(b"GET /a HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
    }

    #[test]
    fn framing_rejections() {
        assert_eq!(run(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(501)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(run(b"GET / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(400)
        );
        assert_eq!(run(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Err(400));
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), Err(400));
        // Empty lines before the request line: CRLF tolerated, bare LF not, and the line
        // checks apply to the request line itself (found by fuzzing).
        assert!(run(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .is_some());
        assert_eq!(run(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"\r\nGET / HTTP/1.1\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost: a  \nX: b\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET / HTTP/1.1\r\nX:\nHost: a\r\n\r\n"), Err(400));
        assert!(run(b"GET / HTTP/1.1\r\nHost: a  \r\nX:\r\n\r\n").is_ok());
        assert_eq!(run(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Err(400));
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
            Err(400)
        );
        // Extra spaces or a malformed version are a bad request line; only a real other
        // version is 505.
        assert_eq!(run(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET / http/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(run(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Err(505));
        assert_eq!(run(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n"), Err(505));
        assert_eq!(
            run(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"GET http://a/caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"),
            Err(400)
        );
    }

    #[test]
    fn chunked_and_length() {
        let r = run(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.0, Body::Chunked);
        let r = run(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.0, Body::Length(42));
    }

    #[test]
    fn absolute_form_overrides_host() {
        let r = run(b"GET http://a.example/x HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.1, "a.example");
    }

    #[test]
    fn http10_keepalive() {
        assert!(!run(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().2);
        assert!(
            run(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .2
        );
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(run(long.as_bytes()), Err(414));
        let long = format!("\r\nGET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(run(long.as_bytes()), Err(414));
        let long = format!("\r\nGET /{}", "a".repeat(9000));
        assert_eq!(run(long.as_bytes()), Err(414));
        let many = format!("GET / HTTP/1.1\r\n{}", "X-A: b\r\n".repeat(100));
        assert_eq!(run(many.as_bytes()), Err(431));
    }
}
