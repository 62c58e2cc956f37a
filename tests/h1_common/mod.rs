//! Harness for the HTTP/1.1 hardening tests (`tests/h1_security_*.rs`): starts the real
//! `ringway` binary on an OS-chosen port (killed by PID on drop), runs scripted upstreams that
//! record every byte they receive and can misbehave on purpose, and speaks raw bytes as the
//! client so that the exact request, the status and the close are all visible.
//! Nothing here sleeps to wait for readiness; time bounds are failure deadlines only.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Upper bound for anything that should happen "soon"; a failure deadline, never a speed goal.
pub const DEADLINE: Duration = Duration::from_secs(20);

#[path = "../common/process.rs"]
mod process;
#[allow(unused_imports)] // each test binary uses a different part
pub use process::wait_for;

// ---------------------------------------------------------------------------------------------
// The proxy under test.

/// A running `ringway` (the shared process harness) with its single listener's address.
pub struct Ringway {
    inner: process::Ringway,
    pub addr: SocketAddr,
}

impl Ringway {
    /// Starts ringway with `config` (which must have exactly one listener, bound to port 0).
    pub fn start(config: &str) -> Ringway {
        let inner = process::Ringway::start(config);
        let addr = inner.addr();
        Ringway { inner, addr }
    }

    pub fn stderr(&self) -> String {
        self.inner.stderr()
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.inner.proc_status_kib("VmRSS")
    }
}

/// A config with one worker and one listener on a free port forwarding everything to
/// `upstream` without retries; `http` is spliced into `[http]` and `routes_before` (more routes,
/// tried first) ahead of the catch-all route.
pub fn config(upstream: SocketAddr, http: &str, routes_before: &str) -> String {
    format!(
        r#"
[runtime]
workers = 1

[http]
{http}

[proxy]
request_id_header = ""

[[listener]]
name = "h1"
bind = "127.0.0.1:0"

[upstream.up]
servers = ["{upstream}"]
connect_timeout = "5s"
response_timeout = "5s"

{routes_before}

[[route]]
name = "all"
upstream = "up"
retry = {{ attempts = 1 }}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Scripted upstreams.

/// What an upstream saw: every connection's received bytes, in accept order, and whether the
/// peer (Ringway) has closed it.
#[derive(Default)]
pub struct Record {
    pub conns: Vec<Vec<u8>>,
    pub closed: Vec<bool>,
}

/// An upstream on its own thread that runs `handler` for each accepted connection (each on a
/// thread of its own), with the connection's index. The handler reads through a `Conn`, which
/// records every byte read.
pub struct Upstream {
    pub addr: SocketAddr,
    pub record: Arc<Mutex<Record>>,
}

pub struct Conn {
    pub stream: TcpStream,
    pub index: usize,
    record: Arc<Mutex<Record>>,
    buf: Vec<u8>,
}

impl Upstream {
    pub fn spawn(handler: impl Fn(&mut Conn) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let handler = Arc::new(handler);
        {
            let record = record.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { break };
                    let index = {
                        let mut r = record.lock().unwrap();
                        r.conns.push(Vec::new());
                        r.closed.push(false);
                        r.conns.len() - 1
                    };
                    let record = record.clone();
                    let handler = handler.clone();
                    thread::spawn(move || {
                        stream.set_read_timeout(Some(DEADLINE * 2)).unwrap();
                        stream.set_write_timeout(Some(DEADLINE)).unwrap();
                        let mut c = Conn {
                            stream,
                            index,
                            record,
                            buf: Vec::new(),
                        };
                        handler(&mut c);
                    });
                }
            });
        }
        Upstream { addr, record }
    }

    /// A well-behaved keep-alive upstream: answers every request with 200 and the request's
    /// target as the body.
    pub fn echo_path() -> Upstream {
        Upstream::spawn(serve_echo)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.record.lock().unwrap().conns.len()
    }

    /// Bytes received on connection `i`.
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.record.lock().unwrap().conns[i].clone()
    }

    /// Everything received on every connection, concatenated.
    pub fn all_received(&self) -> Vec<u8> {
        self.record.lock().unwrap().conns.concat()
    }

    pub fn closed(&self, i: usize) -> bool {
        self.record.lock().unwrap().closed.get(i) == Some(&true)
    }

    /// Waits until connection `i` has received at least `n` bytes.
    pub fn wait_received(&self, i: usize, n: usize) -> Vec<u8> {
        wait_for(DEADLINE, "upstream bytes", || {
            let r = self.record.lock().unwrap();
            r.conns.get(i).filter(|c| c.len() >= n).cloned()
        })
    }

    /// Waits until Ringway has closed upstream connection `i`.
    pub fn wait_closed(&self, i: usize) {
        wait_for(DEADLINE, "upstream connection closed by ringway", || {
            self.closed(i).then_some(())
        })
    }
}

/// Serves requests on `c` until EOF: 200 with the target as the body.
pub fn serve_echo(c: &mut Conn) {
    while let Some(req) = c.read_request() {
        let target = req.target();
        let body = if req.head.starts_with("HEAD ") {
            ""
        } else {
            &target
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            target.len()
        );
        if c.stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A request as an upstream received it: the head and the decoded body.
pub struct UpRequest {
    pub head: String,
    pub body: Vec<u8>,
}

impl UpRequest {
    pub fn target(&self) -> String {
        self.head.split(' ').nth(1).unwrap_or("").to_string()
    }
}

impl Conn {
    /// Reads more bytes into the buffer (and the record); false at EOF or error, which also
    /// marks the connection closed.
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => {
                self.record.lock().unwrap().closed[self.index] = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                self.record.lock().unwrap().conns[self.index].extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// Reads until the peer closes (recording everything).
    pub fn drain_to_eof(&mut self) {
        while self.fill() {}
    }

    fn take_until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, pat) {
                let out: Vec<u8> = self.buf.drain(..i + pat.len()).collect();
                return Some(out);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads one request (Content-Length or chunked body); None at EOF.
    pub fn read_request(&mut self) -> Option<UpRequest> {
        let head = String::from_utf8_lossy(&self.take_until(b"\r\n\r\n")?).into_owned();
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
            loop {
                let line = self.take_until(b"\r\n")?;
                let size = usize::from_str_radix(
                    std::str::from_utf8(&line[..line.len() - 2]).unwrap(),
                    16,
                )
                .expect("ringway sends bare hex chunk sizes");
                if size == 0 {
                    assert_eq!(self.take(2)?, b"\r\n", "no trailers after the last chunk");
                    break;
                }
                body.extend(self.take(size)?);
                assert_eq!(self.take(2)?, b"\r\n");
            }
        } else if let Some(i) = lower.find("\r\ncontent-length: ") {
            let n: usize = lower[i + 18..].split("\r\n").next()?.parse().ok()?;
            body = self.take(n)?;
        }
        Some(UpRequest { head, body })
    }

    /// Reads the next request head only (the body, if any, is left unread).
    pub fn read_head(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(&self.take_until(b"\r\n\r\n")?).into_owned())
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Raw client.

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that reads responses off a buffer, noting when the server closed.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The server closed (EOF or reset).
    pub eof: bool,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            stream: connect(addr),
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => {
                self.eof = true;
                false
            }
            Err(e) => panic!("client read failed (no answer within the deadline?): {e}"),
        }
    }

    /// Reads one response; `head_request` for a response to HEAD. None if the server closed
    /// first.
    pub fn response_to(&mut self, head_request: bool) -> Option<Response> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                assert!(
                    self.buf.is_empty(),
                    "closed inside a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head:?}"));
        let mut r = Response {
            status,
            head,
            body: Vec::new(),
        };
        let no_body =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        if no_body {
            return Some(r);
        }
        if r.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line = self.take_until(b"\r\n");
                let size = usize::from_str_radix(
                    std::str::from_utf8(&line[..line.len() - 2]).unwrap(),
                    16,
                )
                .unwrap();
                if size == 0 {
                    assert_eq!(self.take(2), b"\r\n");
                    break;
                }
                let data = self.take(size);
                r.body.extend(data);
                assert_eq!(self.take(2), b"\r\n");
            }
        } else if let Some(n) = r.header("content-length") {
            let n: usize = n.parse().unwrap();
            r.body = self.take(n);
        } else {
            while self.fill() {}
            r.body = std::mem::take(&mut self.buf);
        }
        Some(r)
    }

    pub fn response(&mut self) -> Option<Response> {
        self.response_to(false)
    }

    fn take_until(&mut self, pat: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = find(&self.buf, pat) {
                return self.buf.drain(..i + pat.len()).collect();
            }
            assert!(self.fill(), "closed inside a response body");
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "closed inside a response body");
        }
        self.buf.drain(..n).collect()
    }

    /// Asserts the server closes the connection with nothing more to say.
    pub fn expect_closed(&mut self) {
        while self.fill() {}
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Whether the server has closed, without waiting more than `within` for it.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(_) => false,
        };
        self.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        if r {
            self.eof = true;
        }
        r
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Sends `bytes` on a fresh connection and asserts the answer is `status` and that the
/// connection is then closed. Returns the response.
pub fn expect_reject(addr: SocketAddr, bytes: &[u8], status: u16) -> Response {
    let mut c = Client::new(addr);
    c.send(bytes);
    let r = c
        .response()
        .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(bytes)));
    assert_eq!(
        r.status,
        status,
        "answer to {:?} was {:?}",
        String::from_utf8_lossy(bytes),
        r.head
    );
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "rejection of {:?} must announce the close",
        String::from_utf8_lossy(bytes)
    );
    c.expect_closed();
    r
}

/// A plain GET on a fresh connection; returns the response.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::new(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.response().expect("a response")
}
