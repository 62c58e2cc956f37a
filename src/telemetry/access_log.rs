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

/// The wall clock as a line needs it.
pub struct Now {
    pub unix_ms: u64,
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

    /// The time now, as of the worker's last 25 ms sweep (as nginx's cached time is as of its
    /// last event loop turn): the wall clock is read once per sweep, not once per line.
    /// Renders the second's texts when it changed.
    pub fn now(&mut self) -> Now {
        let coarse = crate::deadline::coarse_ms();
        if coarse != self.coarse {
            self.coarse = coarse;
            self.wall_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
        }
        let unix_ms = self.wall_ms;
        let s = unix_ms / 1000;
        if s != self.second {
            self.second = s;
            let c = Civil::from_unix(s);
            let mut l = Vec::with_capacity(26);
            let _ = write!(
                l,
                "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
                c.day,
                MONTHS[c.month as usize - 1],
                c.year,
                c.hour,
                c.min,
                c.sec
            );
            self.local.copy_from_slice(&l);
            let mut i = Vec::with_capacity(25);
            let _ = write!(
                i,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
                c.year, c.month, c.day, c.hour, c.min, c.sec
            );
            self.iso.copy_from_slice(&i);
        }
        Now { unix_ms }
    }

    /// The buffer to write a line into, beside the second's two clock texts.
    pub fn parts(&mut self) -> (&mut Vec<u8>, &[u8], &[u8]) {
        (&mut self.buf, &self.local, &self.iso)
    }

    pub fn time_local(&self) -> &[u8] {
        &self.local
    }

    pub fn time_iso8601(&self) -> &[u8] {
        &self.iso
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC date and time (years 1970..=9999).
struct Civil {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
}

impl Civil {
    /// Howard Hinnant's `civil_from_days`.
    fn from_unix(secs: u64) -> Civil {
        let days = (secs / 86_400) as i64;
        let rem = (secs % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            min: rem / 60 % 60,
            sec: rem % 60,
        }
    }
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
    fn civil_dates() {
        let c = Civil::from_unix(0);
        assert_eq!((c.year, c.month, c.day), (1970, 1, 1));
        // 2026-12-01T06:31:22Z
        let c = Civil::from_unix(1_796_106_682);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.min, c.sec),
            (2026, 12, 1, 6, 31, 22)
        );
        // A leap day.
        let c = Civil::from_unix(951_782_400);
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
    }

    #[test]
    fn clock_texts() {
        let mut s = Sink::default();
        s.now();
        assert_eq!(s.time_local().len(), 26);
        assert!(s.time_local().ends_with(b" +0000"));
        assert_eq!(s.time_iso8601()[4], b'-');
        assert!(s.time_iso8601().ends_with(b"+00:00"));
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
