//! The admin endpoint: `GET /metrics` (Prometheus text) and `GET /healthz`, on a listener of
//! its own served by one plain thread, away from the workers and their request path.

use crate::telemetry::Board;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// How long a scraper may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger request heads are refused: a scrape is one short line and a few headers.
const MAX_HEAD: usize = 8192;

/// Serves the admin endpoint on `listener` for the life of the process.
pub fn start(listener: TcpListener, board: Arc<Board>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            // One at a time: a scrape is small, and a slow one only delays the next.
            loop {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve(conn, &board);
                    }
                    // Out of descriptors, say: wait instead of spinning on the error.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map(|_| ())
}

fn serve(mut conn: TcpStream, board: &Board) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return answer(&mut conn, 400, "text/plain", "bad request\n", false);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => answer(
            &mut conn,
            200,
            "text/plain; version=0.0.4",
            &board.render(),
            head_only,
        ),
        (b"GET" | b"HEAD", b"/healthz") => answer(&mut conn, 200, "text/plain", "ok\n", head_only),
        (b"GET" | b"HEAD", _) => answer(&mut conn, 404, "text/plain", "not found\n", head_only),
        _ => answer(&mut conn, 405, "text/plain", "method not allowed\n", false),
    }
}

fn answer(
    conn: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = crate::http::status::reason(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&out)
}
