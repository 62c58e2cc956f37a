//! The `ringway` process under test, shared by every integration suite (each includes this
//! file): start the real binary on a temporary config, wait for its "listening on" lines, keep
//! its stderr, signal it, and kill it by its PID on drop; plus the small waiting helpers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "soon"; only ever a failure deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test: cargo's build of this checkout, or `RINGWAY_TEST_BIN` to run the
/// same suite against another build of it (the PGO one from `bench/pgo-build`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RINGWAY_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringway").into())
    })
}

/// Polls `f` until it returns `Some`, or panics with `what` after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `ringway check FILE`: its exit code and what it printed (stderr, then stdout).
pub fn ringway_check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("check")
        .arg(path)
        .output()
        .expect("run ringway check");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), text)
}

/// A port that was free a moment ago and has nothing listening on it now.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "ringway-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ringway` process; killed (by its PID) and reaped on drop.
pub struct Ringway {
    child: Option<Child>,
    /// Listener name -> bound address, from the "listening on" lines.
    pub addrs: HashMap<String, SocketAddr>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Arc<(Mutex<bool>, Condvar)>,
    /// The config file it was started with (rewrite it and send SIGHUP to reload).
    pub config_path: Option<PathBuf>,
    _dir: Option<TempDir>,
}

/// Spawns `cmd` with piped output and waits until it printed `listeners` "listening on" lines.
/// Err carries the exit status and stderr when it exited first.
pub fn spawn_ringway(
    mut cmd: Command,
    listeners: usize,
    dir: Option<TempDir>,
) -> Result<Ringway, (ExitStatus, String)> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn ringway");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_text = Arc::new(Mutex::new(String::new()));
    let stderr_done = Arc::new((Mutex::new(false), Condvar::new()));
    {
        let err_text = err_text.clone();
        let done = stderr_done.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while let Ok(n) = r.read_line(&mut line) {
                if n == 0 {
                    break;
                }
                err_text.lock().unwrap().push_str(&line);
                line.clear();
            }
            *done.0.lock().unwrap() = true;
            done.1.notify_all();
        });
    }
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut rw = Ringway {
        child: Some(child),
        addrs: HashMap::new(),
        stderr: err_text,
        stderr_done,
        config_path: dir.as_ref().map(|d| d.0.join("ringway.toml")),
        _dir: dir,
    };
    let end = Instant::now() + DEADLINE;
    while rw.addrs.len() < listeners {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                if let Some((addr, name)) = parse_listening(&line) {
                    rw.addrs.insert(name, addr);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is exiting; fall through to try_wait below.
                thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(status) = rw.child.as_mut().unwrap().try_wait().unwrap() {
            let text = rw.wait_stderr_eof();
            return Err((status, text));
        }
        assert!(
            Instant::now() < end,
            "ringway did not report listening; stderr:\n{}",
            rw.stderr()
        );
    }
    Ok(rw)
}

fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    // "ringway: listening on 127.0.0.1:PORT (NAME), N worker(s)"
    let rest = line.strip_prefix("ringway: listening on ")?;
    let (addr, rest) = rest.split_once(' ')?;
    let name = rest.strip_prefix('(')?.split_once(')')?.0;
    Some((addr.parse().ok()?, name.to_string()))
}

impl Ringway {
    /// Starts ringway with `config` written to a temporary file; expects one listener.
    pub fn start(config: &str) -> Ringway {
        Self::start_n(config, 1, &[])
    }

    /// Starts with `listeners` listeners and extra environment variables.
    pub fn start_n(config: &str, listeners: usize, env: &[(&str, &str)]) -> Ringway {
        match Self::try_start(config, listeners, env) {
            Ok(r) => r,
            Err((status, err)) => panic!("ringway exited at start ({status}):\n{err}"),
        }
    }

    pub fn try_start(
        config: &str,
        listeners: usize,
        env: &[(&str, &str)],
    ) -> Result<Ringway, (ExitStatus, String)> {
        let dir = TempDir::new();
        let path = dir.write("ringway.toml", config);
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        spawn_ringway(cmd, listeners, Some(dir))
    }

    /// The single listener's address.
    pub fn addr(&self) -> SocketAddr {
        assert_eq!(self.addrs.len(), 1, "more than one listener: name it");
        *self.addrs.values().next().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until stderr is closed, which happens when the process has exited.
    fn wait_stderr_eof(&self) -> String {
        let (lock, cv) = &*self.stderr_done;
        let mut done = lock.lock().unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        while !*done && Instant::now() < end {
            done = cv.wait_timeout(done, Duration::from_millis(50)).unwrap().0;
        }
        self.stderr()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed");
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits for the process to exit within `within`; returns its status and full stderr.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, String) {
        let status = wait_for(within, "ringway to exit", || self.try_wait());
        (status, self.wait_stderr_eof())
    }

    /// SIGTERM, then the exit status and stderr (per-worker statistics are printed there).
    pub fn stop(&mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        self.wait_exit(DEADLINE)
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let v = proc_status(&self.pid().to_string(), field);
        v.trim_end_matches("kB").trim().parse().unwrap()
    }
}

/// A field of /proc/PID/status as written, trimmed (`pid` may be "self").
pub fn proc_status(pid: &str, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status:\n{text}"))
}

impl Drop for Ringway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}
