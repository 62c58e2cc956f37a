//! Shared harness for the integration tests: starts the real `ringway` binary with a temporary
//! config (killed on drop), runs test upstreams (a recording std-thread server of our own and an
//! independent hyper 1.x server), and speaks raw HTTP/1.1 where a client crate would hide what
//! happens on the wire.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod process;
pub use process::*;

/// A self-signed certificate for `names`, written as `<stem>.pem` and `<stem>.key` in `dir`.
pub struct Cert {
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_cert(dir: &Path, stem: &str, names: &[&str]) -> Cert {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Cert {
        der: cert.der().clone(),
        cert: cert_path,
        key: key_path,
    }
}

/// `simple_config` with its listener terminating TLS with `cert`; `tls_extra` goes into the
/// listener's `tls` table.
pub fn tls_config(servers: &[SocketAddr], cert: &Cert, tls_extra: &str) -> String {
    simple_config(servers, "", "").replacen(
        "bind = \"127.0.0.1:0\"\n",
        &format!(
            "bind = \"127.0.0.1:0\"\n[listener.tls]\ncert = {:?}\nkey = {:?}\n{tls_extra}\n",
            cert.cert, cert.key
        ),
        1,
    )
}

/// A rustls client connection over a std socket, for tests that speak TLS to Ringway.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn client_config(
    roots: &[&Cert],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.der.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Connects and completes the handshake for `name`, trusting only `roots`.
pub fn tls_connect(addr: SocketAddr, name: &str, roots: &[&Cert]) -> Result<Tls, std::io::Error> {
    tls_connect_with(addr, name, client_config(roots, rustls::DEFAULT_VERSIONS))
}

pub fn tls_connect_with(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Tls, std::io::Error> {
    let conn = rustls::ClientConnection::new(
        cfg,
        rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(addr));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Sums the per-worker statistics lines printed at exit: (requests, opened, reused).
pub fn worker_stats(stderr: &str) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    let mut seen = false;
    for line in stderr.lines() {
        if !line.starts_with("ringway: worker ") || !line.contains("requests=") {
            continue;
        }
        seen = true;
        let get = |key: &str| -> u64 {
            let i = line.find(key).unwrap() + key.len();
            line[i..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        t.0 += get("requests=");
        t.1 += get("opened=");
        t.2 += get("reused=");
    }
    assert!(seen, "no worker statistics in stderr:\n{stderr}");
    t
}

// ---------------------------------------------------------------------------------------------
// Deterministic data for large bodies.

/// A reader producing `len` pseudo-random bytes from `seed`; the stream does not depend on the
/// sizes of the reads.
pub struct PatternReader {
    left: u64,
    state: u64,
    block: [u8; 8],
    used: usize,
}

impl PatternReader {
    pub fn new(len: u64, seed: u64) -> Self {
        Self {
            left: len,
            state: seed | 1,
            block: [0; 8],
            used: 8,
        }
    }
}

impl PatternReader {
    fn next_block(&mut self) -> [u8; 8] {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state.to_le_bytes()
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let mut i = 0;
        // Finish a block a previous read started.
        while i < n && self.used < 8 {
            buf[i] = self.block[self.used];
            self.used += 1;
            i += 1;
        }
        // Whole blocks.
        while n - i >= 8 {
            let b = self.next_block();
            buf[i..i + 8].copy_from_slice(&b);
            i += 8;
        }
        // A tail: start a block and keep the rest for the next read.
        if i < n {
            self.block = self.next_block();
            self.used = 0;
            while i < n {
                buf[i] = self.block[self.used];
                self.used += 1;
                i += 1;
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and length of everything `r` yields.
pub fn sha256_reader(mut r: impl Read) -> (String, u64) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    (hex(&h.finalize()), total)
}

pub fn pattern_sha256(len: u64, seed: u64) -> String {
    sha256_reader(PatternReader::new(len, seed)).0
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 on a TcpStream.

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects to `addr` with read/write timeouts so a misbehaving proxy fails the test, not hangs it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

fn read_line_crlf(r: &mut impl BufRead) -> io::Result<String> {
    let mut v = Vec::new();
    r.read_until(b'\n', &mut v)?;
    if v.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
    }
    Ok(String::from_utf8_lossy(&v)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// Reads one head: first line plus headers. Skips nothing.
pub fn read_head(r: &mut impl BufRead) -> io::Result<(String, Vec<(String, String)>)> {
    let first = read_line_crlf(r)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line_crlf(r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    Ok((first, headers))
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a chunked body (and its trailer section) into `out`.
pub fn read_chunked(r: &mut impl BufRead, out: &mut impl Write) -> io::Result<u64> {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let line = read_line_crlf(r)?;
        let size = u64::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk {line:?}")))?;
        if size == 0 {
            // Trailer fields until the empty line.
            while !read_line_crlf(r)?.is_empty() {}
            return Ok(total);
        }
        let mut left = size;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            r.read_exact(&mut buf[..n])?;
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        total += size;
        let crlf = read_line_crlf(r)?;
        if !crlf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk not CRLF-terminated",
            ));
        }
    }
}

/// Reads one response (interim 1xx responses are returned too, as themselves).
/// `head_request`: the request was HEAD, so no body follows whatever the headers say.
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<RawResponse> {
    let (first, headers) = read_head(r)?;
    let status: u16 = first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, first.clone()))?;
    let mut body = Vec::new();
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    if !no_body {
        if find(&headers, "transfer-encoding").is_some() {
            read_chunked(r, &mut body)?;
        } else if let Some(n) = find(&headers, "content-length") {
            let n: usize = n.parse().unwrap();
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(RawResponse {
        status,
        head: first,
        headers,
        body,
    })
}

/// Sends `request` on a fresh connection and reads one response.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut r = BufReader::new(s);
    read_response(&mut r, request.starts_with(b"HEAD ")).unwrap()
}

/// True once the peer has closed: the next read returns EOF (or a reset).
pub fn closed_by_peer(r: &mut impl Read) -> bool {
    let mut b = [0u8; 1];
    match r.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// A ureq agent with a bounded timeout; keeps connections alive between calls.
pub fn agent() -> ureq::Agent {
    // Per-operation limits, not an overall one: a 64 MiB transfer on a loaded machine may take
    // long, but no single read or write may stall.
    ureq::AgentBuilder::new()
        .timeout_connect(DEADLINE)
        .timeout_read(DEADLINE)
        .timeout_write(DEADLINE)
        .build()
}

/// Status and body of a ureq call, treating HTTP error statuses as ordinary responses.
pub fn ureq_result(r: Result<ureq::Response, ureq::Error>) -> (u16, ureq::Response) {
    match r {
        Ok(resp) => (resp.status(), resp),
        Err(ureq::Error::Status(code, resp)) => (code, resp),
        Err(e) => panic!("transport error: {e}"),
    }
}

pub fn get(url: &str) -> (u16, String) {
    let (code, resp) = ureq_result(agent().get(url).call());
    (code, resp.into_string().unwrap())
}

/// Runs the `curl` binary; returns (http status, body, stderr). Bounded by a stall limit (under
/// 1 byte/s for 30 s aborts), not by total time.
pub fn curl(args: &[&str]) -> (u16, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--connect-timeout", "20", "-y", "30", "-Y", "1"])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed");
    let mut stdout = out.stdout;
    let pos = stdout.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&stdout[pos + 1..])
        .parse()
        .unwrap_or(0);
    stdout.truncate(pos);
    (
        code,
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// The recording upstream: std threads, one per connection.

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub conn: usize,
    pub method: String,
    pub path: String,
    pub version: String,
    /// The head's bytes exactly as received.
    pub raw_head: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body, kept only when under 1 MiB.
    pub body: Vec<u8>,
    pub body_len: u64,
    pub body_sha256: String,
    pub chunked: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub enum ReplyBody {
    Bytes(Vec<u8>),
    /// `len` bytes of `PatternReader(len, seed)`, streamed.
    Pattern {
        len: u64,
        seed: u64,
    },
}

/// What the upstream does with a request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    /// Chunked instead of Content-Length.
    pub chunked: bool,
    /// Omit Content-Length for a body-less status (204/304) or HEAD.
    pub no_length: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Wait until this gate is opened before answering.
    pub gate: Option<Gate>,
    /// Never answer (hold the connection open, read nothing more).
    pub hang: bool,
    /// Close the connection without answering.
    pub close_without_reply: bool,
    /// Close after this reply (and say so with Connection: close).
    pub close_after: bool,
    /// Close after this reply without saying so, as a server whose keep-alive timer expired.
    pub silent_close: bool,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: ReplyBody::Bytes(body.into()),
            chunked: false,
            no_length: false,
            delay: None,
            gate: None,
            hang: false,
            close_without_reply: false,
            close_after: false,
            silent_close: false,
        }
    }
    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

/// A latch opened once by the test; upstream handlers wait on it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    pub fn wait(&self) {
        let mut g = self.0 .0.lock().unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while !*g && Instant::now() < end {
            g = self
                .0
                 .1
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A recording HTTP/1.1 upstream: keeps every request, counts accepted connections.
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// Connections whose handler has finished (closed by either side).
    pub finished: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Answers every request with 200 and the body `NAME METHOD PATH`.
    pub fn start(name: &str) -> Upstream {
        let name = name.to_string();
        Self::with(move |r| {
            Reply::ok(format!("{name} {} {}", r.method, r.path)).header("X-Upstream", &name)
        })
    }

    pub fn with(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        {
            let accepted = accepted.clone();
            let finished = finished.clone();
            let requests = requests.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = accepted.fetch_add(1, Ordering::AcqRel);
                    let requests = requests.clone();
                    let handler = handler.clone();
                    let finished = finished.clone();
                    thread::spawn(move || {
                        let _ = serve_conn(id, stream, &requests, &handler);
                        finished.fetch_add(1, Ordering::AcqRel);
                    });
                }
            });
        }
        Upstream {
            addr,
            accepted,
            finished,
            requests,
            stop,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Acquire)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have been received.
    pub fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        wait_for(DEADLINE, "upstream requests", || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("upstream received no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_conn(
    conn: usize,
    stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    handler: &Handler,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    loop {
        // Record the raw head.
        let mut raw = Vec::new();
        loop {
            let n = r.read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Ok(());
            }
            if raw.ends_with(b"\r\n\r\n") || raw == b"\r\n" || raw.ends_with(b"\n\n") {
                break;
            }
        }
        let raw_head = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = raw_head.split("\r\n");
        let first = lines.next().unwrap_or_default().to_string();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let version = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let chunked = find(&headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut hasher = Sha256::new();
        let mut body = Vec::new();
        let mut body_len = 0u64;
        {
            let mut sink = HashSink {
                hasher: &mut hasher,
                keep: &mut body,
                len: &mut body_len,
            };
            if chunked {
                read_chunked(&mut r, &mut sink)?;
            } else if let Some(n) = find(&headers, "content-length") {
                let n: u64 = n.parse().unwrap_or(0);
                io::copy(&mut (&mut r).take(n), &mut sink)?;
            }
        }
        let rec = Recorded {
            conn,
            method,
            path,
            version,
            raw_head,
            headers,
            body,
            body_len,
            body_sha256: hex(&hasher.finalize()),
            chunked,
        };
        let reply = handler(&rec);
        let head_req = rec.method == "HEAD";
        let client_close = rec
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        requests.lock().unwrap().push(rec);

        if let Some(g) = &reply.gate {
            g.wait();
        }
        if let Some(d) = reply.delay {
            thread::sleep(d);
        }
        if reply.hang {
            // Hold the connection until the peer goes away.
            let mut sink = [0u8; 4096];
            while r.read(&mut sink)? > 0 {}
            return Ok(());
        }
        if reply.close_without_reply {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (n, v) in &reply.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let len = match &reply.body {
            ReplyBody::Bytes(b) => b.len() as u64,
            ReplyBody::Pattern { len, .. } => *len,
        };
        if reply.chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else if !reply.no_length {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        if reply.close_after {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        let bodyless = head_req || reply.status == 204 || reply.status == 304;
        if !bodyless {
            let mut src: Box<dyn Read> = match reply.body {
                ReplyBody::Bytes(b) => Box::new(io::Cursor::new(b)),
                ReplyBody::Pattern { len, seed } => Box::new(PatternReader::new(len, seed)),
            };
            if reply.chunked {
                let mut buf = vec![0u8; 60_000];
                loop {
                    let n = src.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(format!("{n:x}\r\n").as_bytes())?;
                    w.write_all(&buf[..n])?;
                    w.write_all(b"\r\n")?;
                }
                w.write_all(b"0\r\n\r\n")?;
            } else {
                io::copy(&mut src, &mut w)?;
            }
        }
        w.flush()?;
        if reply.close_after || reply.silent_close || client_close {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

struct HashSink<'a> {
    hasher: &'a mut Sha256,
    keep: &'a mut Vec<u8>,
    len: &'a mut u64,
}

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        *self.len += buf.len() as u64;
        if self.keep.len() + buf.len() <= 1 << 20 {
            self.keep.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// An independent upstream: hyper 1.x on a tokio runtime in a background thread.

/// A hyper server that answers every request with a text body:
/// `method PATH\n`, then `name: value\n` per request header, then `body-sha256: HEX\n` and
/// `body-len: N\n`. `GET /big/N` answers with N pattern bytes (seed 7) instead.
pub struct HyperUpstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl HyperUpstream {
    pub fn start() -> HyperUpstream {
        use http_body_util::{BodyExt, Full};
        use hyper::body::{Bytes, Incoming};
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper::{Request, Response};
        use hyper_util::rt::TokioIo;

        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    counter.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(async move {
                        let svc = service_fn(|req: Request<Incoming>| async move {
                            let mut text = format!(
                                "{} {}\n",
                                req.method(),
                                req.uri().path_and_query().unwrap()
                            );
                            for (n, v) in req.headers() {
                                text.push_str(&format!(
                                    "{}: {}\n",
                                    n.as_str(),
                                    String::from_utf8_lossy(v.as_bytes())
                                ));
                            }
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let resp = if let Some(n) = path.strip_prefix("/big/") {
                                let n: u64 = n.parse().unwrap_or(0);
                                let mut v = Vec::with_capacity(n as usize);
                                PatternReader::new(n, 7).read_to_end(&mut v).unwrap();
                                Response::new(Full::new(Bytes::from(v)))
                            } else {
                                text.push_str(&format!(
                                    "body-sha256: {}\nbody-len: {}\n",
                                    sha256_hex(&body),
                                    body.len()
                                ));
                                Response::builder()
                                    .header("x-upstream", "hyper")
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap()
                            };
                            Ok::<_, hyper::Error>(resp)
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        HyperUpstream { addr, accepted }
    }
}

/// Parses the hyper upstream's echo body into (first line, headers).
pub fn parse_echo(text: &str) -> (String, Vec<(String, String)>) {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (first, headers)
}

pub fn echo_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    find(headers, name)
}

// ---------------------------------------------------------------------------------------------
// Config text.

/// A config with one listener named "main", one worker, a route for everything to upstream
/// "app" with `servers`; `extra` is appended (more sections).
pub fn simple_config(servers: &[SocketAddr], upstream_extra: &str, extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[runtime]
workers = 1
drain_timeout = "30s"

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[upstream.app]
servers = [{}]
{upstream_extra}

{extra}

[[route]]
name = "all"
upstream = "app"
"#,
        list.join(", ")
    )
}

/// Whether a `config/` example file exists next to Cargo.toml.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
