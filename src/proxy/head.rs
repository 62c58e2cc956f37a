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

/// Facts about the client connection, computed once per connection.
pub struct ClientInfo {
    /// `x-forwarded-for: <ip>\r\n`, rendered once per connection: most requests carry no
    /// forwarding header of their own, and then it goes out whole. The address is read from it.
    /// A boxed str, not a String: every connection's future holds it, and the capacity word
    /// would be the 8 bytes that take monoio's task out of its 512-byte size class.
    forwarded_for: Box<str>,
}

const FORWARDED_FOR: &str = "x-forwarded-for: ";
/// Listeners speak plain HTTP only, so the scheme line is a constant.
const FORWARDED_PROTO: &[u8] = b"x-forwarded-proto: http\r\n";

impl ClientInfo {
    pub fn new(ip: std::net::IpAddr) -> Self {
        Self {
            forwarded_for: format!("{FORWARDED_FOR}{ip}\r\n").into_boxed_str(),
        }
    }

    /// The whole `x-forwarded-for` line for a request that carried none of its own.
    pub fn forwarded_for(&self) -> &[u8] {
        self.forwarded_for.as_bytes()
    }

    /// The client's address as text.
    pub fn ip(&self) -> &str {
        &self.forwarded_for[FORWARDED_FOR.len()..self.forwarded_for.len() - 2]
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
        if xff.n == 0 {
            out.extend_from_slice(client.forwarded_for());
        } else {
            out.extend_from_slice(b"x-forwarded-for: ");
            xff.write_joined(out);
            out.extend_from_slice(client.ip().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if cfg.x_forwarded_proto {
        out.extend_from_slice(FORWARDED_PROTO);
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

    #[test]
    fn client_address_is_read_back_from_its_forwarded_for_line() {
        let v4 = ClientInfo::new("10.1.2.3".parse().unwrap());
        assert_eq!(v4.ip(), "10.1.2.3");
        assert_eq!(v4.forwarded_for(), b"x-forwarded-for: 10.1.2.3\r\n");
        let v6 = ClientInfo::new("::1".parse().unwrap());
        assert_eq!(v6.ip(), "::1");
    }
}
