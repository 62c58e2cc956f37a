//! Re-serialises heads in both directions: the request Ringway sends upstream (hop-by-hop
//! headers gone, framing normalised, forwarding headers added) and the response it sends the
//! client. A response head with nothing to rewrite skips this and goes out as received (see
//! `forward::read_response_head`).

use super::state::WorkerCtx;
use crate::config::Proxy;
use crate::gateway::{ResponseEdits, UpstreamEdits};
use crate::http::fmt::push_dec;
use crate::http::headers::{classify, name_is, Class};
use crate::http::request::{Body, RequestHead, Version};
use crate::http::response::ResponseHead;
use std::net::IpAddr;

/// Facts about the client connection, kept for its whole life.
///
/// The address is kept in the connection's future, not on the heap: a rendering kept there was
/// one more line per connection, and at 1,000 connections a cold one that every request
/// stalled on when it copied it into the upstream head. 18 bytes, where a pointer and length
/// took 16 and their alignment the rest.
pub struct ClientInfo {
    /// An IPv4 address as text (at most 15 bytes), or an IPv6 address's 16 bytes.
    bytes: [u8; 16],
    /// The text's length, or `IPV6`.
    len: u8,
    /// The connection came over TLS: the scheme forwarded upstream is https.
    tls: bool,
}

/// `ClientInfo::len` of an IPv6 address, rendered when asked for: rare, and its text (up to 45
/// bytes) would not fit.
const IPV6: u8 = u8::MAX;

/// A client address as text, borrowed from its `ClientInfo` (IPv4) or rendered (IPv6).
pub enum IpText<'a> {
    Kept(&'a [u8]),
    Rendered([u8; 45], usize),
}

impl IpText<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IpText::Kept(b) => b,
            IpText::Rendered(b, n) => &b[..*n],
        }
    }

    pub fn as_str(&self) -> &str {
        // Only digits, dots, colons and hex letters are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// `value`'s `Display` text in a fixed buffer, and its length. `N` holds the longest text of
/// the type (45 bytes for an IPv6 address), so the write cannot run out of room.
fn render<const N: usize>(value: impl std::fmt::Display) -> ([u8; N], usize) {
    use std::io::Write;
    let mut text = [0u8; N];
    let mut rest = &mut text[..];
    let fit = write!(rest, "{value}").is_ok();
    debug_assert!(fit, "{N} bytes do not hold the text");
    let len = N - rest.len();
    (text, len)
}

const FORWARDED_FOR: &[u8] = b"x-forwarded-for: ";
impl ClientInfo {
    pub fn new(ip: IpAddr, tls: bool) -> Self {
        match ip {
            IpAddr::V4(a) => {
                // 16 bytes hold the longest IPv4 text (15).
                let (bytes, len) = render::<16>(a);
                Self {
                    bytes,
                    len: len as u8,
                    tls,
                }
            }
            IpAddr::V6(a) => Self {
                bytes: a.octets(),
                len: IPV6,
                tls,
            },
        }
    }

    /// Appends the `x-forwarded-proto` line for this connection's scheme. Two appends of
    /// constants, not one of a slice picked by a branch: a constant's copy compiles to a few
    /// moves, a picked slice's to a call to memcpy.
    #[inline]
    fn push_forwarded_proto(&self, out: &mut Vec<u8>) {
        if self.tls {
            out.extend_from_slice(b"x-forwarded-proto: https\r\n");
        } else {
            out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        }
    }

    /// The client's address as text.
    #[inline]
    /// The connection came over TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn ip(&self) -> IpText<'_> {
        if self.len != IPV6 {
            return IpText::Kept(&self.bytes[..self.len as usize]);
        }
        self.ipv6_text()
    }

    /// Out of line: the formatting machinery it runs would otherwise sit in the request path's
    /// hot code (write_request, plan) for a case the bench and most edges never see.
    #[cold]
    #[inline(never)]
    fn ipv6_text(&self) -> IpText<'_> {
        let (text, len) = render::<45>(std::net::Ipv6Addr::from(self.bytes));
        IpText::Rendered(text, len)
    }

    /// Appends the `x-forwarded-for` line: the hops `earlier` writes (each followed by ", "),
    /// then this client.
    #[inline]
    pub fn push_forwarded_for(&self, out: &mut Vec<u8>, earlier: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(FORWARDED_FOR);
        earlier(out);
        out.extend_from_slice(self.ip().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Forwarding headers a client may send that Ringway rewrites.
#[derive(PartialEq, Eq)]
enum Fwd {
    Other,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Via,
}

#[inline]
fn fwd_class(name: &str) -> Fwd {
    let n = name.as_bytes();
    match n.len() {
        3 if name_is(n, b"via") => Fwd::Via,
        15 if name_is(n, b"x-forwarded-for") => Fwd::XForwardedFor,
        16 if name_is(n, b"x-forwarded-host") => Fwd::XForwardedHost,
        17 if name_is(n, b"x-forwarded-proto") => Fwd::XForwardedProto,
        _ => Fwd::Other,
    }
}

/// A few values of a repeated header, kept by reference while the head is written.
struct Collected<'a> {
    vals: [&'a [u8]; 8],
    n: usize,
}

impl<'a> Collected<'a> {
    fn new() -> Self {
        Self {
            vals: [&[]; 8],
            n: 0,
        }
    }
    fn push(&mut self, v: &'a [u8]) {
        if self.n < self.vals.len() {
            self.vals[self.n] = v;
            self.n += 1;
        }
    }
    fn write_joined(&self, out: &mut Vec<u8>) {
        for v in &self.vals[..self.n] {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

pub struct UpstreamHead<'r> {
    pub path_prefix: &'static str,
    pub path: &'r str,
    pub host_override: Option<&'r str>,
}

/// Appends the request head for the upstream to `out`.
pub fn write_request(
    out: &mut Vec<u8>,
    req: &RequestHead<'_>,
    target: &UpstreamHead<'_>,
    cfg: &Proxy,
    client: &ClientInfo,
    worker: &WorkerCtx,
    edits: Option<&UpstreamEdits<'_>>,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path_prefix.as_bytes());
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The client's own Host line stays where it is unless another value must go upstream.
    let keep_host_line = target.host_override.is_none() && req.host_header;
    if !keep_host_line {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(target.host_override.unwrap_or(req.host).as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    let mut xff = Collected::new();
    let mut via = Collected::new();
    let mut has_id = false;
    let id_header = cfg.request_id_header.as_deref();
    // Kept lines are copied from the client's head in runs rather than one by one: every line
    // there ends in CRLF (checked when parsing), so consecutive kept lines are one slice.
    let raw = req.raw;
    let base = raw.as_ptr() as usize;
    let mut run: Option<usize> = None;
    for h in req.headers {
        let keep = 'keep: {
            match classify(h.name) {
                Class::EndToEnd => {}
                Class::Host if keep_host_line => break 'keep true,
                _ => break 'keep false,
            }
            if req.conn.has_names() && req.conn.lists(h.name) {
                break 'keep false;
            }
            if let Some(e) = edits {
                if e.drops(h.name) {
                    break 'keep false;
                }
            }
            match fwd_class(h.name) {
                Fwd::Other => {
                    if let Some(id) = id_header {
                        if h.name.len() == id.len() && h.name.eq_ignore_ascii_case(id) {
                            has_id = true;
                        }
                    }
                    true
                }
                Fwd::XForwardedFor if cfg.x_forwarded_for => {
                    xff.push(h.value);
                    false
                }
                Fwd::Via if cfg.via => {
                    via.push(h.value);
                    false
                }
                // Set by Ringway from what it saw itself; a client's value would be a spoof.
                Fwd::XForwardedProto if cfg.x_forwarded_proto => false,
                Fwd::XForwardedHost if cfg.x_forwarded_host => false,
                _ => true,
            }
        };
        let at = h.name.as_ptr() as usize - base;
        match (keep, run) {
            (true, None) => run = Some(at),
            (false, Some(start)) => {
                out.extend_from_slice(&raw[start..at]);
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        // Up to the blank line.
        out.extend_from_slice(&raw[start..raw.len() - 2]);
    }
    if cfg.x_forwarded_for {
        client.push_forwarded_for(out, |out| xff.write_joined(out));
    }
    if cfg.x_forwarded_proto {
        client.push_forwarded_proto(out);
    }
    if cfg.x_forwarded_host && !req.host.is_empty() {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(req.host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if cfg.via {
        let line: &[u8] = if req.version == Version::Http10 {
            b"via: 1.0 ringway\r\n"
        } else {
            b"via: 1.1 ringway\r\n"
        };
        if via.n == 0 {
            // One copy for the whole line: a client's own Via is rare.
            out.extend_from_slice(line);
        } else {
            out.extend_from_slice(b"via: ");
            via.write_joined(out);
            out.extend_from_slice(&line[5..]);
        }
    }
    if let (Some(id), false) = (id_header, has_id) {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b": ");
        match edits.and_then(|e| e.request_id) {
            // The gateway made one already, for a template: the upstream must see the same.
            Some(made) => out.extend_from_slice(made),
            None => worker.push_request_id(out),
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = edits {
        e.write_extra(out);
    }
    match req.body {
        Body::None => {
            // A body-less POST/PUT still states its length so the upstream need not guess.
            if matches!(req.method, "POST" | "PUT" | "PATCH") {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Body::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Body::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How the client-side response body is framed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutFraming {
    /// No body (HEAD, 204, 304); Content-Length, if the upstream sent one, is passed on as is.
    NoBody,
    Length(u64),
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients only).
    Close,
}

/// Appends the response head for the client to `out`.
pub fn write_response(
    out: &mut Vec<u8>,
    resp: &ResponseHead<'_>,
    framing: OutFraming,
    keep_alive: bool,
    client: Version,
    edits: Option<&ResponseEdits>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, resp.status as u64);
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        match classify(h.name) {
            Class::EndToEnd | Class::Host | Class::Expect => {}
            Class::ContentLength if framing == OutFraming::NoBody => {}
            _ => continue,
        }
        if resp.conn.has_names() && resp.conn.lists(h.name) {
            continue;
        }
        if let Some(e) = edits {
            if e.drops(h.name) {
                continue;
            }
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = edits {
        out.extend_from_slice(&e.extra);
    }
    match framing {
        OutFraming::NoBody | OutFraming::Close => {}
        OutFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        OutFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(connection_line(keep_alive, client));
    out.extend_from_slice(b"\r\n");
}

/// The Connection header a response to `client` needs: none for a keep-alive HTTP/1.1 client.
pub fn connection_line(keep_alive: bool, client: Version) -> &'static [u8] {
    match (keep_alive, client) {
        (false, _) => b"connection: close\r\n",
        (true, Version::Http10) => b"connection: keep-alive\r\n",
        (true, Version::Http11) => b"",
    }
}

#[cfg(test)]
mod tests {
    use super::ClientInfo;
    use std::net::IpAddr;

    #[test]
    fn client_addresses_render_as_display_does() {
        let client = ClientInfo::new("10.1.2.3".parse().unwrap(), false);
        assert_eq!(client.ip().as_str(), "10.1.2.3");
        let mut line = Vec::new();
        client.push_forwarded_for(&mut line, |out| out.extend_from_slice(b"192.0.2.7, "));
        assert_eq!(line, b"x-forwarded-for: 192.0.2.7, 10.1.2.3\r\n");
        for ip in [
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1:2",
            "2001:db8:85a3:8d3:1319:8a2e:370:7348",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ClientInfo::new(ip, false).ip().as_str(), ip.to_string());
        }
    }
}
