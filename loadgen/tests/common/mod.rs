//! Shared test plumbing: start `loadgen serve` or a tiny std::net origin on an OS-chosen port,
//! run the built `loadgen` binary and read back its JSON report.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A running `loadgen serve` (or `loadgen relay` / `raw-relay`), killed on drop.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Serve {
    /// Starts `loadgen serve --bind 127.0.0.1:0 ARGS` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Serve {
        Self::spawn("serve", args)
    }

    /// Starts `loadgen relay --bind 127.0.0.1:0` in front of `upstreams`.
    pub fn relay(upstreams: &[SocketAddr]) -> Serve {
        Self::relay_kind("relay", upstreams)
    }

    /// Starts `loadgen raw-relay --bind 127.0.0.1:0` (no runtime, io_uring by hand) in front of
    /// `upstreams`.
    pub fn raw_relay(upstreams: &[SocketAddr]) -> Serve {
        Self::relay_kind("raw-relay", upstreams)
    }

    fn relay_kind(sub: &str, upstreams: &[SocketAddr]) -> Serve {
        let ups: Vec<String> = upstreams.iter().map(|a| a.to_string()).collect();
        let mut args = Vec::new();
        for u in &ups {
            args.extend(["--upstream", u.as_str()]);
        }
        Self::spawn(sub, &args)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn spawn(sub: &str, args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args([sub, "--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn loadgen serve");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("read first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Serve {
            child,
            addr,
            stdout,
        }
    }

    /// Sends SIGTERM (by PID, through kill(1)) and returns what serve printed after its first line.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let _ = self.child.wait();
        rest
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique scratch file path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "loadgen-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs `loadgen ARGS --json FILE --quiet`, asserts success and returns the parsed report.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let json = scratch("report.json");
    let out = Command::new(BIN)
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).expect("valid JSON")
}

pub fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a u64: {v}"))
}

pub fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {v}"))
}

/// A std::net origin, thread per connection, independent of the code under test: counts every
/// complete GET it reads and answers each with `response`.
pub struct CountingOrigin {
    pub addr: SocketAddr,
    pub seen: Arc<AtomicU64>,
}

impl CountingOrigin {
    pub fn start(response: &'static [u8]) -> CountingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || serve_counting(conn, &counter, response));
            }
        });
        CountingOrigin { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }
}

fn serve_counting(mut conn: TcpStream, seen: &AtomicU64, response: &[u8]) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut answers = 0;
        // Bodiless requests: each ends at the blank line.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            answers += 1;
        }
        if answers > 0 {
            seen.fetch_add(answers, Ordering::SeqCst);
            let out = response.repeat(answers as usize);
            if conn.write_all(&out).is_err() {
                return;
            }
        }
    }
}
