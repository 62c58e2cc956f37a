//! Issue 6 §4 from the outside: slow clients. A head trickled in (slowloris) gets 408 and a close
//! once the whole-head deadline passes, however steadily it trickles; a stalled request body
//! gets 408; a client that stops reading a large response is dropped after send_timeout (and
//! the upstream connection with it) while other clients are served; an idle keep-alive
//! connection is closed; and many slow clients cost little memory and no worker.

mod h1_common;

use h1_common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SLOW_HTTP: &str = r#"
header_timeout = "1s"
body_timeout = "1s"
send_timeout = "1s"
keepalive_timeout = "1s"
"#;

/// Bytes of the large response in the slow-read test: far more than the socket buffers on
/// both sides of the client connection hold.
const BIG: usize = 96 << 20;

fn upstream() -> Upstream {
    Upstream::spawn(|c| {
        while let Some(req) = c.read_request() {
            let target = req.target();
            if target == "/big" {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                if c.stream.write_all(head.as_bytes()).is_err() {
                    break;
                }
                let block = vec![b'x'; 64 << 10];
                let mut sent = 0;
                while sent < BIG {
                    if c.stream.write_all(&block).is_err() {
                        break;
                    }
                    sent += block.len();
                }
                if sent < BIG {
                    // Ringway dropped us mid-body.
                    c.drain_to_eof();
                    return;
                }
            } else {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}",
                    target.len()
                );
                if c.stream.write_all(resp.as_bytes()).is_err() {
                    break;
                }
            }
        }
    })
}

#[test]
fn slowloris_head_gets_408_after_the_whole_head_deadline() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, SLOW_HTTP, ""));
    let mut c = Client::new(rw.addr);
    let started = Instant::now();
    c.send(b"GET / HTTP/1.1\r\n");
    // Trickle a header line every 100 ms: every read is "recent", only a deadline on the whole
    // head can stop this.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let mut s = c.stream.try_clone().unwrap();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 400 {
                if s.write_all(format!("X-{i}: b\r\n").as_bytes()).is_err() {
                    break;
                }
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Meanwhile the (single) worker serves others.
    assert_eq!(get(rw.addr, "/other").status, 200);
    let r = c.response().expect("a 408");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(r.status, 408, "{}", r.head);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "408 before the deadline"
    );
    c.expect_closed();
    trickler.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&up.all_received()).contains("X-1:"),
        "a partial head went upstream"
    );
}

#[test]
fn silent_connection_is_closed_without_an_answer() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, SLOW_HTTP, ""));
    let mut c = Client::new(rw.addr);
    // Nothing sent: closed after header_timeout, with nothing to say.
    c.expect_closed();
}

#[test]
fn slow_post_body_gets_408() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, SLOW_HTTP, ""));
    let mut c = Client::new(rw.addr);
    c.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    let r = c.response().expect("a 408");
    assert_eq!(r.status, 408, "{}", r.head);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    c.expect_closed();
    // The upstream got the head and the ten bytes, then its connection was dropped: the half
    // request is never completed by anything else.
    let got = up.wait_received(0, 1);
    up.wait_closed(0);
    assert!(up.received(0).ends_with(b"\r\n\r\n0123456789"), "{got:?}");
}

#[test]
fn chunked_body_stall_gets_408() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, SLOW_HTTP, ""));
    let mut c = Client::new(rw.addr);
    c.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    let r = c.response().expect("a 408");
    assert_eq!(r.status, 408, "{}", r.head);
    c.expect_closed();
}

#[test]
fn client_that_never_reads_is_dropped_after_send_timeout() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, SLOW_HTTP, ""));
    let mut lazy = Client::new(rw.addr);
    lazy.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    // The response starts flowing and then blocks on the client. Others are served meanwhile.
    up.wait_received(0, 1);
    for i in 0..5 {
        assert_eq!(get(rw.addr, &format!("/probe{i}")).status, 200);
    }
    // Ringway gives up on the lazy client and drops the upstream connection feeding it.
    up.wait_closed(0);
    // The lazy client finally reads: a truncated body, then the close.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        use std::io::Read;
        match lazy.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(total < BIG, "the whole body arrived: {total} bytes");
    assert_eq!(get(rw.addr, "/after").status, 200);
}

#[test]
fn idle_keepalive_connection_is_closed() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, SLOW_HTTP, ""));
    let mut c = Client::new(rw.addr);
    c.send(b"GET /once HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().expect("answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None, "kept alive");
    // No further request: keepalive_timeout closes it, silently.
    c.expect_closed();
}

#[test]
fn many_slow_clients_cost_little_and_block_nobody() {
    let up = upstream();
    let rw = Ringway::start(&config(up.addr, r#"header_timeout = "30s""#, ""));
    assert_eq!(get(rw.addr, "/warm").status, 200);
    let rss = || rw.rss_kib();
    let before = rss();
    const N: u64 = 400;
    let mut slow = Vec::new();
    for i in 0..N {
        let mut c = Client::new(rw.addr);
        c.send(format!("GET /slow{i} HTTP/1.1\r\nHost: t\r\nX-Partial: ").as_bytes());
        slow.push(c);
    }
    // Every one of them is held open by the single worker, which still serves a normal client.
    assert_eq!(get(rw.addr, "/fast").status, 200);
    let after = rss();
    let per_conn = after.saturating_sub(before) * 1024 / N;
    eprintln!("RSS {before} kB -> {after} kB with {N} slow clients: {per_conn} bytes each");
    assert!(
        per_conn < 32 * 1024,
        "a slow client costs {per_conn} bytes of RSS"
    );
    for c in &mut slow {
        assert!(!c.closed_within(Duration::from_millis(1)));
    }
}
