//! Harness for the gateway integration tests: starts the real `ringway` binary on a temporary
//! config (killed by PID on drop), runs recording upstreams on std threads, and speaks raw
//! HTTP/1.1 so the tests see exactly what goes over the wire. Kept apart from `tests/common`
//! (owned by the core suite) on purpose.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use std::process::Command;

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Failure deadline for anything that should happen soon; never a pacing sleep.
pub const DEADLINE: Duration = Duration::from_secs(20);

#[path = "../common/process.rs"]
mod process;
pub use process::TempDir;

/// A running proxy (the shared process harness); its listener address comes from the
/// "listening on" line.
pub struct Ringway {
    inner: process::Ringway,
    pub addr: SocketAddr,
}

impl Ringway {
    /// Starts ringway with `body` appended to a listener on 127.0.0.1:0. Extra files (keys,
    /// JWKS) can be written into the same folder first through `files`.
    pub fn start(body: &str, files: &[(&str, &str)]) -> Ringway {
        let dir = TempDir::new();
        for (n, t) in files {
            dir.write(n, t);
        }
        let text = format!("[[listener]]\nname = \"gw\"\nbind = \"127.0.0.1:0\"\n{body}");
        let cfg = dir.write("ringway.toml", &text);
        let mut cmd = Command::new(process::bin());
        cmd.arg("--config").arg(&cfg);
        let inner = process::spawn_ringway(cmd, 1, Some(dir)).unwrap_or_else(|(st, err)| {
            panic!("ringway exited before listening ({st}):\n{err}\nconfig:\n{text}")
        });
        let addr = inner.addr();
        Ringway { inner, addr }
    }
}

/// `ringway check FILE` on `text`: (exit ok, stdout + stderr).
pub fn check(text: &str) -> (bool, String) {
    let dir = TempDir::new();
    check_file(&dir.write("c.toml", text))
}

/// `ringway check FILE`: (exit ok, stdout + stderr).
pub fn check_file(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(process::bin())
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the upstream answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A recording HTTP/1.1 upstream on std threads (one per connection, keep-alive).
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<(Mutex<Vec<Seen>>, Condvar)>,
}

impl Upstream {
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<(Mutex<Vec<Seen>>, Condvar)> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let s2 = seen.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let seen = s2.clone();
                let handler = handler.clone();
                thread::spawn(move || serve(c, seen, handler));
            }
        });
        Upstream { addr, seen }
    }

    /// Answers 200 with a body naming this upstream.
    pub fn echo(name: &'static str) -> Upstream {
        Upstream::start(move |s| {
            let mut r = Reply::ok(&format!("{name} {}", s.target));
            r.headers.push(("x-upstream".into(), name.into()));
            r
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.0.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    /// Blocks until the upstream has seen `n` requests (or panics at the deadline).
    pub fn wait_for(&self, n: usize) {
        let (m, cv) = &*self.seen;
        let end = Instant::now() + DEADLINE;
        let mut g = m.lock().unwrap();
        while g.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "upstream saw {} of {n} requests", g.len());
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }
}

fn serve(c: TcpStream, seen: Arc<(Mutex<Vec<Seen>>, Condvar)>, handler: Arc<Handler>) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let s = Seen {
            method,
            target,
            headers,
        };
        // Recorded before the handler runs, so a test can wait for requests a handler holds.
        {
            let (m, cv) = &*seen;
            m.lock().unwrap().push(s.clone());
            cv.notify_all();
        }
        let reply = handler(&s);
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (n, v) in &reply.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&reply.body);
        if w.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a new connection; `headers` are extra lines ("Name: value").
pub fn send(addr: SocketAddr, method: &str, target: &str, headers: &[&str]) -> Response {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: api.test\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(c), method == "HEAD")
}

pub fn get(addr: SocketAddr, target: &str, headers: &[&str]) -> Response {
    send(addr, "GET", target, headers)
}

pub fn read_response(r: &mut impl BufRead, head: bool) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = Vec::new();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if head || status == 204 || status == 304 {
    } else if let Some(len) = find("content-length") {
        body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
    } else if find("transfer-encoding").is_some() {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response {
        status,
        headers,
        body,
    }
}

/// `name = ["addr"]` upstream table lines.
pub fn upstream_cfg(name: &str, u: &Upstream) -> String {
    format!("[upstream.{name}]\nservers = [\"{}\"]\n", u.addr)
}

pub fn header_map(r: &Response) -> HashMap<String, String> {
    r.headers.iter().cloned().collect()
}
