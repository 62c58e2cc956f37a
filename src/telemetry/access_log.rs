//! The access log's two halves off the request path: each worker's `Sink` (a reused buffer of
//! whole lines, with the clock rendered once a second) and the one writer thread that appends
//! what the workers hand over, so no worker ever waits on a file.

use crate::config::{LogEscape, LogTarget};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the writer thread is asked to do.
pub enum Msg {
    /// Whole lines from one worker.
    Lines(Vec<u8>),
    /// Open the current file again (log rotation: SIGUSR1).
    Reopen,
    /// Write to this target from now on (a reload that moved the log); opened by the caller,
    /// so a path that cannot be opened refuses the reload instead.
    Switch(LogTarget, Output),
    /// Answer once everything sent before is written (the process is about to exit).
    Sync(Sender<()>),
}

/// Where the writer writes.
pub enum Output {
    File(File),
    Stdout,
}

impl Output {
    /// Opens `target` for appending: the error names the path, for the config error.
    pub fn open(target: &LogTarget) -> Result<Output, String> {
        match target {
            LogTarget::Stdout => Ok(Output::Stdout),
            LogTarget::File(p) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(Output::File)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.write_all(b),
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(b)?;
                out.flush()
            }
        }
    }
}

/// Bytes handed over but not yet written past which workers drop their lines instead: a
/// stalled disk must not grow the process without bound (nginx would block its worker).
const MAX_QUEUED: usize = 64 * 1024 * 1024;

/// The way to the writer thread: its channel, and the bytes waiting in it.
#[derive(Clone)]
pub struct LogTx {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl LogTx {
    pub fn send(&self, m: Msg) -> bool {
        self.tx.send(m).is_ok()
    }
}

/// Starts the writer thread on an opened output; workers hand their lines to what it returns.
pub fn start(target: LogTarget, output: Output) -> Result<LogTx, String> {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (q, d) = (queued.clone(), dropped.clone());
    std::thread::Builder::new()
        .name("ringway-log".into())
        .spawn(move || write_loop(rx, target, output, &q, &d))
        .map_err(|e| format!("cannot start the access log writer: {e}"))?;
    Ok(LogTx {
        tx,
        queued,
        dropped,
    })
}

fn write_loop(
    rx: Receiver<Msg>,
    mut target: LogTarget,
    mut out: Output,
    queued: &AtomicUsize,
    dropped: &AtomicU64,
) {
    // A full disk must not flood stderr: one complaint per quarter hour at most.
    let mut complained: Option<Instant> = None;
    for msg in rx {
        match msg {
            Msg::Lines(buf) => {
                let res = out.write_all(&buf);
                queued.fetch_sub(buf.capacity(), Ordering::Relaxed);
                let lost = dropped.swap(0, Ordering::Relaxed);
                let why = match res {
                    Err(e) => Some(format!("{e}; lines are being lost")),
                    Ok(()) if lost > 0 => {
                        Some(format!("writes fell behind; {lost} bytes of lines dropped"))
                    }
                    Ok(()) => None,
                };
                if let Some(why) = why {
                    if complained.is_none_or(|t| t.elapsed() > Duration::from_secs(900)) {
                        complained = Some(Instant::now());
                        eprintln!("ringway: access log {target}: {why}");
                    }
                }
            }
            Msg::Reopen => match Output::open(&target) {
                Ok(o) => out = o,
                Err(e) => {
                    eprintln!("ringway: access log: cannot reopen {e}; still writing the old file")
                }
            },
            Msg::Switch(t, o) => {
                target = t;
                out = o;
            }
            Msg::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// One worker's lines waiting for the writer, and its clock rendered for the current second.
pub struct Sink {
    pub buf: Vec<u8>,
    tx: Option<LogTx>,
    /// The worker's coarse clock when the wall clock was last read, and what it read.
    coarse: u64,
    wall_ms: u64,
    second: u64,
    /// `01/Dec/2026:06:31:22 +0000`
    local: [u8; 26],
    /// `2026-12-01T06:31:22+00:00`
    iso: [u8; 25],
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            buf: Vec::new(),
            tx: None,
            coarse: u64::MAX,
            wall_ms: 0,
            second: u64::MAX,
            local: [b' '; 26],
            iso: [b' '; 25],
        }
    }
}

impl Sink {
    /// The writer's sender, once there is a writer (set on the worker's tick).
    pub fn connect(&mut self, tx: &LogTx) {
        if self.tx.is_none() {
            self.tx = Some(tx.clone());
        }
    }

    /// Hands the gathered lines to the writer; with no writer (yet) they wait.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            // What the queue holds is the buffers' memory, not just their lines.
            let n = self.buf.capacity();
            if tx.queued.fetch_add(n, Ordering::Relaxed) + n > MAX_QUEUED {
                tx.queued.fetch_sub(n, Ordering::Relaxed);
                tx.dropped
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                self.buf.clear();
                return;
            }
            let lines = std::mem::take(&mut self.buf);
            // The writer ends only with the process.
            tx.send(Msg::Lines(lines));
        }
    }

    /// Milliseconds since the epoch, as of the worker's last 25 ms sweep (as nginx's cached
    /// time is as of its last event loop turn): the wall clock is read once per sweep, not
    /// once per line. Renders the second's texts when it changed.
    pub fn now_ms(&mut self) -> u64 {
        let coarse = crate::deadline::coarse_ms();
        if coarse != self.coarse {
            self.coarse = coarse;
            self.wall_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
        }
        let s = self.wall_ms / 1000;
        if s != self.second {
            self.second = s;
            (self.local, self.iso) = clock_texts(s);
        }
        self.wall_ms
    }

    /// The buffer to write a line into, beside the second's two clock texts.
    pub fn parts(&mut self) -> (&mut Vec<u8>, &[u8], &[u8]) {
        (&mut self.buf, &self.local, &self.iso)
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `01/Dec/2026:06:31:22 +0000` and `2026-12-01T06:31:22+00:00` for a second since the
/// epoch, rearranged from httpdate's `Tue, 01 Dec 2026 06:31:22 GMT`.
fn clock_texts(secs: u64) -> ([u8; 26], [u8; 25]) {
    let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    let b = http.as_bytes();
    let (day, mon, year, hms) = (&b[5..7], &b[8..11], &b[12..16], &b[17..25]);
    let month = MONTHS.iter().position(|m| &m[..] == mon).unwrap_or(0) as u8 + 1;
    let mm = [b'0' + month / 10, b'0' + month % 10];
    let mut local = [b' '; 26];
    let mut iso = [b' '; 25];
    let _ = local
        .as_mut_slice()
        .write_all(&[day, b"/", mon, b"/", year, b":", hms, b" +0000"].concat());
    let _ = iso
        .as_mut_slice()
        .write_all(&[year, b"-", &mm, b"-", day, b"T", hms, b"+00:00"].concat());
    (local, iso)
}

/// Writes a value as the format's escape says; an empty one as `-` except in JSON.
pub fn push_value(out: &mut Vec<u8>, v: &[u8], esc: LogEscape) {
    if v.is_empty() {
        if esc != LogEscape::Json {
            out.push(b'-');
        }
        return;
    }
    // Most values need no escape at all: one scan (without an early exit, so it vectorises),
    // then one copy.
    let escapes = v.iter().fold(false, |any, &b| {
        any | !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\')
    });
    if esc == LogEscape::None || !escapes {
        out.extend_from_slice(v);
        return;
    }
    match esc {
        LogEscape::None => out.extend_from_slice(v),
        LogEscape::Default => {
            for &b in v {
                if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                    push_hex_escape(out, b"\\x", b);
                } else {
                    out.push(b);
                }
            }
        }
        LogEscape::Json => {
            for &b in v {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0..0x20 | 0x7f => push_hex_escape(out, b"\\u00", b),
                    // Non-ASCII bytes pass as they are: a UTF-8 header stays readable, and
                    // a JSON reader takes the line as the bytes it is.
                    _ => out.push(b),
                }
            }
        }
    }
}

fn push_hex_escape(out: &mut Vec<u8>, prefix: &[u8], b: u8) {
    // Upper case, as nginx writes its escapes.
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(prefix);
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 15)]);
}

/// Seconds with milliseconds, as nginx writes `$request_time`: `0.003`.
pub fn push_seconds(out: &mut Vec<u8>, d: Duration) {
    let ms = d.as_millis();
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_texts_as_nginx_writes_them() {
        let (l, i) = clock_texts(0);
        assert_eq!(
            (&l[..], &i[..]),
            (
                &b"01/Jan/1970:00:00:00 +0000"[..],
                &b"1970-01-01T00:00:00+00:00"[..]
            )
        );
        let (l, i) = clock_texts(1_796_106_682);
        assert_eq!(&l[..], b"01/Dec/2026:06:31:22 +0000");
        assert_eq!(&i[..], b"2026-12-01T06:31:22+00:00");
        // A leap day.
        let (l, i) = clock_texts(951_782_400);
        assert_eq!(&l[..], b"29/Feb/2000:00:00:00 +0000");
        assert_eq!(&i[..], b"2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn escapes() {
        let mut o = Vec::new();
        push_value(&mut o, b"a\"b\\c\x01\xc3", LogEscape::Default);
        assert_eq!(o, b"a\\x22b\\x5Cc\\x01\\xC3");
        o.clear();
        push_value(&mut o, b"a\"b\\c\n\x01", LogEscape::Json);
        assert_eq!(o, b"a\\\"b\\\\c\\n\\u0001");
        o.clear();
        push_value(&mut o, b"", LogEscape::Default);
        push_value(&mut o, b"", LogEscape::Json);
        assert_eq!(o, b"-");
        o.clear();
        push_seconds(&mut o, Duration::from_micros(3_400));
        assert_eq!(o, b"0.003");
    }
}
