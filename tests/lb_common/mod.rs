//! Harness for the load-balancing tests: the real `ringway` binary with a config file it can
//! reload (SIGHUP), its stderr watched for health and ejection lines, and small std-thread
//! HTTP servers that count what reaches them, can be made slow, answer 5xx, hold a request
//! until released, and be killed and restarted on the same port. A tiny keep-alive client
//! that never retries on its own, so every failure Ringway lets through is seen.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Failure deadline for anything that should happen "soon"; never a speed threshold.
pub const DEADLINE: Duration = Duration::from_secs(30);

#[path = "../common/process.rs"]
mod process;
#[allow(unused_imports)] // each test binary uses a different part
pub use process::{closed_port, wait_for};

// ---------------------------------------------------------------------------------------------
// Ringway

/// A running `ringway` (the shared process harness) with what these tests add: listeners by
/// index, stderr line counting for health and ejection events, and reload by SIGHUP.
pub struct Ringway {
    inner: process::Ringway,
}

impl Ringway {
    /// Starts ringway on `config` and waits for `listeners` "listening on" lines.
    pub fn start(config: &str, listeners: usize) -> Ringway {
        Self::start_env(config, listeners, &[])
    }

    /// As `start`, with extra environment variables for the process.
    pub fn start_env(config: &str, listeners: usize, env: &[(&str, &str)]) -> Ringway {
        Ringway {
            inner: process::Ringway::start_n(config, listeners, env),
        }
    }

    /// The process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.inner.proc_status_kib("VmRSS")
    }

    /// The first listener (HTTP in every test config here).
    pub fn http(&self) -> SocketAddr {
        self.listener(0)
    }

    /// The `i`-th listener in config order (unnamed listeners are "listenerI").
    pub fn listener(&self, i: usize) -> SocketAddr {
        *self
            .inner
            .addrs
            .get(&format!("listener{i}"))
            .unwrap_or_else(|| panic!("no listener{i} in {:?}", self.inner.addrs))
    }

    pub fn pid(&self) -> i32 {
        self.inner.pid() as i32
    }

    pub fn stderr(&self) -> String {
        self.inner.stderr()
    }

    /// Number of stderr lines containing `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.stderr().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until stderr holds at least `n` lines containing `needle`.
    pub fn wait_lines(&self, needle: &str, n: usize) {
        wait_for(DEADLINE, &format!("{n}x {needle:?} in stderr"), || {
            (self.count_lines(needle) >= n).then_some(())
        });
    }

    /// Rewrites the config file and sends SIGHUP; waits for the "reloaded" line.
    pub fn reload(&self, config: &str) {
        let before = self.count_lines("ringway: reloaded");
        let path = self
            .inner
            .config_path
            .as_ref()
            .expect("started from a config file");
        std::fs::write(path, config).unwrap();
        self.inner.signal("HUP");
        self.wait_lines("ringway: reloaded", before + 1);
    }

    /// SIGTERM and the stderr once the process has exited (and closed its stderr).
    pub fn stop(mut self) -> String {
        self.inner.stop().1
    }
}

/// The addresses of `backends`, in order.
pub fn addrs(backends: &[&Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// `["127.0.0.1:P1", "127.0.0.1:P2"]` for the servers' addresses.
pub fn server_list(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// Ringway with one HTTP listener over `backends` (see `config`).
pub fn ringway_over(backends: &[&Backend], upstream_extra: &str, route_extra: &str) -> Ringway {
    Ringway::start(
        &config(&server_list(&addrs(backends)), upstream_extra, route_extra),
        1,
    )
}

/// One worker, one HTTP listener, upstream `app` with `servers` and extra upstream keys, one
/// route to it with extra route keys.
pub fn config(servers: &str, upstream_extra: &str, route_extra: &str) -> String {
    format!(
        "[runtime]\nworkers = 1\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [upstream.app]\nservers = {servers}\n{upstream_extra}\n\n\
         [[route]]\nupstream = \"app\"\n{route_extra}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Backends

/// Releases requests held by a backend (paths starting with `/hold`).
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut o = self.open.lock().unwrap();
        let end = Instant::now() + DEADLINE;
        while !*o && Instant::now() < end {
            o = self
                .cv
                .wait_timeout(o, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

/// Behaviour and counters shared by a backend's incarnations (it keeps them across restarts).
#[derive(Default)]
pub struct Knobs {
    /// Requests received, health probes excluded.
    pub hits: AtomicUsize,
    /// Requests currently being answered (held or delayed).
    pub active: AtomicUsize,
    pub health_hits: AtomicUsize,
    pub connections: AtomicUsize,
    /// Delay before answering, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Status for ordinary requests (0: 200).
    pub status: AtomicU16,
    /// Status for `/health` (0: 200).
    pub health_status: AtomicU16,
    /// Close the connection instead of answering (a reset before the response head).
    pub drop_requests: AtomicBool,
    pub gate: Gate,
    /// Request log: (method, path, value of x-user).
    pub log: Mutex<Vec<(String, String, String)>>,
}

struct Running {
    stop: Arc<AtomicBool>,
    listener_fd: i32,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<TcpListener>,
}

/// A small HTTP/1.1 keep-alive server answering `NAME` (also in `x-server`).
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    running: Option<Running>,
}

/// One backend per name, started in order.
pub fn backends<const N: usize>(names: [&str; N]) -> [Backend; N] {
    names.map(Backend::start)
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut b = Backend {
            name: name.to_string(),
            addr,
            knobs: Arc::new(Knobs::default()),
            running: None,
        };
        b.run(l);
        b
    }

    pub fn hits(&self) -> usize {
        self.knobs.hits.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, d: Duration) {
        self.knobs
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_status(&self, s: u16) {
        self.knobs.status.store(s, Ordering::SeqCst);
    }

    pub fn set_health_status(&self, s: u16) {
        self.knobs.health_status.store(s, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Closes the listener (the port refuses connections) and every open connection, as a
    /// crashed process would.
    pub fn kill(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept(2); the listener is then dropped by its thread's owner.
        // SAFETY: the fd belongs to the listener owned by the accept thread, still open.
        unsafe { libc::shutdown(r.listener_fd, libc::SHUT_RDWR) };
        let l = r.accept.join().unwrap();
        drop(l);
        for c in r.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port, with the same knobs and counters.
    pub fn restart(&mut self) {
        assert!(self.running.is_none());
        let l = wait_for(DEADLINE, "the old port to be free", || {
            TcpListener::bind(self.addr).ok()
        });
        self.run(l);
    }

    fn run(&mut self, l: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let listener_fd = l.as_raw_fd();
        let (s, c, k, name) = (
            stop.clone(),
            conns.clone(),
            self.knobs.clone(),
            self.name.clone(),
        );
        let accept = thread::spawn(move || {
            loop {
                let res = l.accept();
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok((stream, _)) = res else { continue };
                k.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    c.lock().unwrap().push(clone);
                }
                let (k, s, name) = (k.clone(), s.clone(), name.clone());
                thread::spawn(move || serve_conn(stream, &k, &s, &name));
            }
            l
        });
        self.running = Some(Running {
            stop,
            listener_fd,
            conns,
            accept,
        });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.knobs.gate.open();
        self.kill();
    }
}

fn serve_conn(stream: TcpStream, k: &Knobs, stop: &AtomicBool, name: &str) {
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    loop {
        let Ok(Some(req)) = read_request(&mut r) else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let status = if req.path == "/health" {
            k.health_hits.fetch_add(1, Ordering::SeqCst);
            match k.health_status.load(Ordering::SeqCst) {
                0 => 200,
                s => s,
            }
        } else {
            k.hits.fetch_add(1, Ordering::SeqCst);
            k.log
                .lock()
                .unwrap()
                .push((req.method.clone(), req.path.clone(), req.user.clone()));
            if k.drop_requests.load(Ordering::SeqCst) {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            k.active.fetch_add(1, Ordering::SeqCst);
            if req.path.starts_with("/hold") {
                k.gate.wait();
            }
            let d = k.delay_ms.load(Ordering::SeqCst);
            if d > 0 {
                thread::sleep(Duration::from_millis(d));
            }
            k.active.fetch_sub(1, Ordering::SeqCst);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match k.status.load(Ordering::SeqCst) {
                0 => 200,
                s => s,
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-server: {name}\r\n\r\n{name}",
            name.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

struct Req {
    method: String,
    path: String,
    user: String,
}

fn read_request(r: &mut impl BufRead) -> io::Result<Option<Req>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    let mut user = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            let n = n.trim().to_ascii_lowercase();
            if n == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            } else if n == "x-user" {
                user = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some(Req { method, path, user }))
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The backend that answered (its `x-server`), or "" for Ringway's own answers.
    pub fn server(&self) -> String {
        self.header("x-server").unwrap_or("").to_string()
    }
}

/// A keep-alive HTTP/1.1 client over one connection at a time. It never retries: an error is
/// returned as is, so the tests see every failure.
pub struct Client {
    addr: SocketAddr,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.request("GET", path, &[], b"")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_read_timeout(Some(DEADLINE))?;
            s.set_nodelay(true)?;
            let r = BufReader::new(s.try_clone()?);
            self.conn = Some((s, r));
        }
        let res = self.exchange(method, path, headers, body);
        match &res {
            Ok(r) if r.header("connection") != Some("close") => {}
            _ => self.conn = None,
        }
        res
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let (w, r) = self.conn.as_mut().unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        w.write_all(&bytes)?;
        read_response(r)
    }
}

fn read_response(r: &mut impl BufRead) -> io::Result<Resp> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("closed inside the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        let n: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Sends `n` GETs one after another on one keep-alive client; returns the servers that answered.
pub fn sequential(addr: SocketAddr, n: usize, path: &str) -> Vec<String> {
    let mut c = Client::new(addr);
    (0..n)
        .map(|i| {
            let r = c
                .get(path)
                .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            r.server()
        })
        .collect()
}

/// How many times each name occurs.
pub fn tally(names: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// A steady stream of GETs from `clients` threads until stopped; counts outcomes.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: SocketAddr, clients: usize, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                thread::spawn(move || {
                    let mut c = Client::new(addr);
                    while !stop.load(Ordering::SeqCst) {
                        match c.get(path) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failed.lock().unwrap().push(format!(
                                "{} {}",
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            )),
                            Err(e) => failed.lock().unwrap().push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            threads,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests succeeded than now (the stream is really flowing).
    pub fn wait_more(&self, n: usize) {
        let target = self.ok() + n;
        let failed = self.failed.clone();
        let failed_max = failed.lock().unwrap().len() + 50;
        wait_for(DEADLINE, "traffic to flow", || {
            (self.ok() >= target || failed.lock().unwrap().len() > failed_max).then_some(())
        });
    }

    /// Stops the clients; returns (succeeded, failures).
    pub fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (self.ok(), self.failed.lock().unwrap().clone())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
