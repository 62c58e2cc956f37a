//! HTTP/1.1 wire format for both sides: pre-encoded requests, an incremental response framer for
//! the client and an incremental request framer for `serve`. Framing only; bodies are skipped.

use std::mem::MaybeUninit;

/// Heads larger than this are refused rather than buffered without bound.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError;

/// Encodes one request once, so the hot loop only copies bytes.
pub fn encode_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if needs_length && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Skips a chunked body incrementally, byte-exact, so pipelined messages after it stay aligned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, Default)]
enum ChunkState {
    #[default]
    SizeStart,
    Size {
        value: u64,
        digits: u8,
    },
    Ext {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    FinalLf,
}

impl Chunked {
    /// Consumes bytes of the body; returns how many and whether the body ended.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), ParseError> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            self.state = match self.state {
                ChunkState::SizeStart => match hex(b) {
                    Some(d) => ChunkState::Size {
                        value: d,
                        digits: 1,
                    },
                    None => return Err(ParseError),
                },
                ChunkState::Size { value, digits } => match (hex(b), b) {
                    // 15 hex digits is already far beyond any sane chunk; refuse overflow.
                    (Some(_), _) if digits >= 15 => return Err(ParseError),
                    (Some(d), _) => ChunkState::Size {
                        value: value << 4 | d,
                        digits: digits + 1,
                    },
                    (None, b';' | b' ' | b'\t') => ChunkState::Ext { value },
                    (None, b'\r') => ChunkState::SizeLf { value },
                    _ => return Err(ParseError),
                },
                ChunkState::Ext { value } => match b {
                    b'\r' => ChunkState::SizeLf { value },
                    b'\n' => return Err(ParseError),
                    _ => ChunkState::Ext { value },
                },
                ChunkState::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => ChunkState::TrailerStart,
                    (b'\n', n) => ChunkState::Data(n),
                    _ => return Err(ParseError),
                },
                ChunkState::Data(n) => {
                    let take = (buf.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => ChunkState::SizeStart,
                ChunkState::DataCr | ChunkState::DataLf => return Err(ParseError),
                ChunkState::TrailerStart => match b {
                    b'\r' => ChunkState::FinalLf,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => match b {
                    b'\n' => ChunkState::TrailerStart,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::FinalLf if b == b'\n' => {
                    self.state = ChunkState::SizeStart;
                    return Ok((i + 1, true));
                }
                ChunkState::FinalLf => return Err(ParseError),
            };
            i += 1;
        }
        Ok((i, false))
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the head said about the body and the connection.
struct HeadInfo {
    framing: Framing,
    close: bool,
}

fn head_info<'h>(
    version: Option<u8>,
    headers: impl Iterator<Item = &'h httparse::Header<'h>>,
) -> Result<HeadInfo, ParseError> {
    let mut length = None;
    let mut chunked = false;
    let mut close = version == Some(0);
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(ParseError)?;
            if length.is_some_and(|l| l != v) {
                return Err(ParseError);
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&c| c == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for tok in h.value.split(|&c| c == b',') {
                let tok = tok.trim_ascii();
                if tok.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") && version == Some(0) {
                    close = false;
                }
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    Ok(HeadInfo { framing, close })
}

/// One complete response as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server will close (or has closed) the connection after this response.
    pub close: bool,
}

#[derive(Debug, Clone, Copy)]
enum RespState {
    Head,
    Length(u64, Response),
    Chunked(Chunked, Response),
    UntilClose(Response),
}

/// Incremental response framer: feed it bytes, it reports complete responses.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFramer {
    state: RespState,
}

impl Default for ResponseFramer {
    fn default() -> Self {
        Self {
            state: RespState::Head,
        }
    }
}

impl ResponseFramer {
    /// Parses from `buf`; returns bytes consumed and the response if one completed. `(0, None)`
    /// means more bytes are needed. `head_only` is true when the request was HEAD (no body).
    pub fn advance(
        &mut self,
        buf: &[u8],
        head_only: bool,
    ) -> Result<(usize, Option<Response>), ParseError> {
        match &mut self.state {
            RespState::Head => {
                // httparse has no uninit-headers parse for responses: start with a small array
                // (cheap to initialise per response) and retry big only when it overflows.
                let mut small = [httparse::EMPTY_HEADER; 16];
                let mut big;
                let mut resp = httparse::Response::new(&mut small);
                let mut parsed = resp.parse(buf);
                if parsed == Err(httparse::Error::TooManyHeaders) {
                    big = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    resp = httparse::Response::new(&mut big);
                    parsed = resp.parse(buf);
                }
                let n = match parsed {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok((0, None)),
                    _ => return Err(ParseError),
                };
                let status = resp.code.ok_or(ParseError)?;
                if (100..200).contains(&status) && status != 101 {
                    // Interim response: the real one follows.
                    return Ok((n, None));
                }
                let info = head_info(resp.version, resp.headers.iter())?;
                let r = Response {
                    status,
                    close: info.close,
                };
                let framing = if head_only || status == 204 || status == 304 {
                    Framing::None
                } else {
                    info.framing
                };
                match framing {
                    Framing::None | Framing::Length(0) => Ok((n, Some(r))),
                    Framing::Length(l) => {
                        self.state = RespState::Length(l, r);
                        let (m, done) = self.advance(&buf[n..], head_only)?;
                        Ok((n + m, done))
                    }
                    Framing::Chunked => {
                        self.state = RespState::Chunked(Chunked::default(), r);
                        let (m, done) = self.advance(&buf[n..], head_only)?;
                        Ok((n + m, done))
                    }
                    Framing::UntilClose => {
                        self.state = RespState::UntilClose(Response { close: true, ..r });
                        Ok((buf.len(), None))
                    }
                }
            }
            RespState::Length(left, r) => {
                let take = (buf.len() as u64).min(*left);
                *left -= take;
                let r = *r;
                if *left == 0 {
                    self.state = RespState::Head;
                    Ok((take as usize, Some(r)))
                } else {
                    Ok((take as usize, None))
                }
            }
            RespState::Chunked(c, r) => {
                let r = *r;
                let (n, done) = c.feed(buf)?;
                if done {
                    self.state = RespState::Head;
                    Ok((n, Some(r)))
                } else {
                    Ok((n, None))
                }
            }
            RespState::UntilClose(_) => Ok((buf.len(), None)),
        }
    }

    /// The peer closed: completes a close-delimited body, anything else was cut short.
    pub fn on_eof(&mut self) -> Option<Response> {
        match self.state {
            RespState::UntilClose(r) => {
                self.state = RespState::Head;
                Some(r)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ReqState {
    Head,
    Length(u64, Req),
    Chunked(Chunked, Req),
}

/// What `serve` needs to know about a complete request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Req {
    /// The client asked to close after this request (or spoke HTTP/1.0 without keep-alive).
    pub close: bool,
    /// HEAD: the response must carry no body.
    pub head: bool,
}

/// Incremental request framer for `serve`: counts complete requests, skipping their bodies.
#[derive(Debug, Clone, Copy)]
pub struct RequestFramer {
    state: ReqState,
}

impl Default for RequestFramer {
    fn default() -> Self {
        Self {
            state: ReqState::Head,
        }
    }
}

impl RequestFramer {
    /// Parses from `buf`; returns bytes consumed and the request if one completed.
    /// `(0, None)` means more bytes are needed.
    pub fn advance(&mut self, buf: &[u8]) -> Result<(usize, Option<Req>), ParseError> {
        match &mut self.state {
            ReqState::Head => {
                let mut headers = [MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                let n = match req.parse_with_uninit_headers(buf, &mut headers) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok((0, None)),
                    _ => return Err(ParseError),
                };
                let info = head_info(req.version, req.headers.iter())?;
                let r = Req {
                    close: info.close,
                    head: req.method == Some("HEAD"),
                };
                match info.framing {
                    // A request without length has no body (RFC 9112 6.3).
                    Framing::None | Framing::UntilClose | Framing::Length(0) => Ok((n, Some(r))),
                    Framing::Length(l) => {
                        self.state = ReqState::Length(l, r);
                        let (m, done) = self.advance(&buf[n..])?;
                        Ok((n + m, done))
                    }
                    Framing::Chunked => {
                        self.state = ReqState::Chunked(Chunked::default(), r);
                        let (m, done) = self.advance(&buf[n..])?;
                        Ok((n + m, done))
                    }
                }
            }
            ReqState::Length(left, req) => {
                let take = (buf.len() as u64).min(*left);
                *left -= take;
                let req = *req;
                if *left == 0 {
                    self.state = ReqState::Head;
                    Ok((take as usize, Some(req)))
                } else {
                    Ok((take as usize, None))
                }
            }
            ReqState::Chunked(c, req) => {
                let req = *req;
                let (n, done) = c.feed(buf)?;
                if done {
                    self.state = ReqState::Head;
                    Ok((n, Some(req)))
                } else {
                    Ok((n, None))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(input: &[u8], step: usize) -> Vec<u16> {
        let mut f = ResponseFramer::default();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut pos = 0;
        for chunk in input.chunks(step) {
            buf.extend_from_slice(chunk);
            loop {
                let (n, r) = f.advance(&buf[pos..], false).expect("valid input");
                pos += n;
                if let Some(r) = r {
                    out.push(r.status);
                } else if n == 0 || pos == buf.len() {
                    break;
                }
            }
        }
        assert_eq!(pos, buf.len());
        out
    }

    #[test]
    fn framing_survives_any_split() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 404 NF\r\ncontent-length: 0\r\n\r\n";
        for step in 1..input.len() {
            assert_eq!(
                responses(input, step),
                vec![200, 503, 204, 404],
                "step {step}"
            );
        }
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let mut f = ResponseFramer::default();
        let (n, r) = f.advance(b"HTTP/1.0 200 OK\r\n\r\nabc", false).unwrap();
        assert_eq!((n, r), (22, None));
        assert_eq!(
            f.on_eof(),
            Some(Response {
                status: 200,
                close: true
            })
        );
    }

    #[test]
    fn request_bodies_are_skipped() {
        let input = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n\
GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        for step in 1..input.len() {
            let mut f = RequestFramer::default();
            let (mut buf, mut pos, mut seen) = (Vec::new(), 0, Vec::new());
            for chunk in input.chunks(step) {
                buf.extend_from_slice(chunk);
                loop {
                    let (n, r) = f.advance(&buf[pos..]).unwrap();
                    pos += n;
                    if let Some(req) = r {
                        seen.push(req.close);
                    } else if n == 0 || pos == buf.len() {
                        break;
                    }
                }
            }
            assert_eq!(seen, vec![false, false, true], "step {step}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut f = ResponseFramer::default();
        assert!(f.advance(b"NOT HTTP AT ALL\r\n\r\n", false).is_err());
        let mut c = Chunked::default();
        assert!(c.feed(b"fffffffffffffffff\r\n").is_err());
    }
}
