//! Idle keep-alive client connections for the memory cell: open N connections to
//! the proxy, send one request on each and read its response (so the proxy has
//! set up its full per-connection state), then hold them idle while the proxy's
//! RSS is read.
//!
//! Plain blocking std sockets from a few pinned threads: opening 10,000
//! connections this way takes about a second, and the cell measures memory, not
//! speed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::procs;

/// Connections held open, and how many could not be opened or answered.
pub struct IdleConns {
    pub streams: Vec<TcpStream>,
    pub errors: u64,
    pub first_error: Option<String>,
}

pub fn open(addr: SocketAddr, n: usize, threads: usize, cpus: &[usize]) -> IdleConns {
    let threads = threads.clamp(1, n.max(1));
    let per = n / threads;
    let extra = n % threads;
    let mut handles = Vec::new();
    for t in 0..threads {
        let count = per + usize::from(t < extra);
        let cpus = cpus.to_vec();
        handles.push(std::thread::spawn(move || {
            let _ = procs::pin_current(&cpus);
            let mut ok = Vec::with_capacity(count);
            let mut errors = 0u64;
            let mut first = None;
            for _ in 0..count {
                match one(addr) {
                    Ok(s) => ok.push(s),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (ok, errors, first)
        }));
    }
    let mut out = IdleConns {
        streams: Vec::with_capacity(n),
        errors: 0,
        first_error: None,
    };
    for h in handles {
        match h.join() {
            Ok((s, e, f)) => {
                out.streams.extend(s);
                out.errors += e;
                if out.first_error.is_none() {
                    out.first_error = f;
                }
            }
            Err(_) => out.errors += 1,
        }
    }
    out
}

/// One connection with one complete request/response exchange on it; also the
/// readiness probe, since a proxy that accepts may not serve yet (nginx's master
/// listens before its worker exists).
pub fn one(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut s = dial(addr)?;
    exchange(&mut s)?;
    Ok(s)
}

/// A connection with the probe's timeouts.
pub fn dial(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// One GET and its whole 2xx response.
pub fn exchange(s: &mut (impl Read + Write)) -> Result<(), String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 2") {
                return Err(format!("status: {}", head.lines().next().unwrap_or("")));
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
        if buf.len() > 1 << 20 {
            return Err("response too large for the idle cell".into());
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}
