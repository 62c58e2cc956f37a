//! The admin endpoint: `GET /metrics` (Prometheus text), `GET /healthz` and
//! `POST /cache/purge`, on a listener of its own served by one plain thread, away from the
//! workers and their request path.

use crate::telemetry::{Board, Purge};
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
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let head_only = method == b"HEAD";
    match (method, path) {
        (b"POST", b"/cache/purge") => {
            let (status, text) = purge(board, query);
            answer(&mut conn, status, "text/plain", &text, false)
        }
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

/// `cache=NAME` (required) and `url=scheme://host/target` (percent-encoded; without it the
/// whole zone goes), queued for every worker.
fn purge(board: &Board, query: &[u8]) -> (u16, String) {
    let mut cache = None;
    let mut url = None;
    for pair in query.split(|b| *b == b'&') {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let Some(v) = percent_decode(v) else {
            return (400, "bad percent-encoding\n".into());
        };
        match k {
            b"cache" => cache = Some(v),
            b"url" => url = Some(v),
            _ => return (400, "expected cache=NAME and optionally url=URL\n".into()),
        }
    }
    let Some(cache) = cache else {
        return (400, "expected cache=NAME and optionally url=URL\n".into());
    };
    if !board.has_cache(&cache) {
        return (404, format!("no cache named {cache:?}\n"));
    }
    if url.as_deref().is_some_and(|u| !u.contains("://")) {
        return (
            400,
            "url must be scheme://host/target, as clients ask for it\n".into(),
        );
    }
    let what = url.clone().unwrap_or_else(|| "everything".into());
    let workers = board.purge(Purge { cache, url });
    // Each worker applies it on its next tick (25 ms).
    (202, format!("purging {what} on {workers} worker(s)\n"))
}

/// `%XX` decoded and `+` as a space, as a query string is written; None if malformed or not
/// UTF-8.
fn percent_decode(v: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' => {
                let hex = std::str::from_utf8(v.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
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

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_values_decode() {
        assert_eq!(
            percent_decode(b"http%3A%2F%2Fa.test%2Fp%3Fq%3D1").as_deref(),
            Some("http://a.test/p?q=1")
        );
        assert_eq!(percent_decode(b"a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%4"), None);
        assert_eq!(percent_decode(b"%ff"), None, "not UTF-8");
    }
}
