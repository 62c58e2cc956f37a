//! Closed loop against real sockets: `-n` is exact as the origin counts it, with and without
//! pipelining and threads, and the interval log holds every measured response.

mod common;

use common::{run_json, u, CountingOrigin, Serve};
use std::net::SocketAddr;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn exact_count_matches_what_the_origin_saw() {
    for (conns, threads, pipeline, n) in [(8, 1, 1, 1000), (7, 2, 4, 1001), (3, 1, 16, 50)] {
        let origin = CountingOrigin::start(OK);
        let r = run_json(&[
            "-c",
            &conns.to_string(),
            "--threads",
            &threads.to_string(),
            "--pipeline",
            &pipeline.to_string(),
            "-n",
            &n.to_string(),
            &origin.url(),
        ]);
        let case = format!("c={conns} threads={threads} pipeline={pipeline} n={n}");
        assert_eq!(origin.seen(), n, "{case}: origin count");
        assert_eq!(u(&r, &["requests"]), n, "{case}");
        assert_eq!(u(&r, &["responses"]), n, "{case}");
        assert_eq!(u(&r, &["bytes_read"]), n * OK.len() as u64, "{case}");
        assert_eq!(r["mode"], "closed");
        assert_eq!(
            r["errors"].as_object().map(|e| e.values().all(|v| v == 0)),
            Some(true)
        );
    }
}

#[test]
fn exact_count_against_serve_with_weighted_urls_and_bodies() {
    let s = Serve::start(&["--body-size", "100000"]);
    let a = format!("http://{}/a@3", s.addr);
    let b = format!("http://{}/b", s.addr);
    let r = run_json(&[
        "-c", "4", "-n", "400", "-m", "POST", "--body", "hello", &a, &b,
    ]);
    assert_eq!(u(&r, &["responses"]), 400);
    assert_eq!(u(&r, &["bytes_read"]) % 400, 0);
    assert!(u(&r, &["bytes_read"]) >= 400 * 100_000);
    assert_eq!(r["url"].as_array().map(Vec::len), Some(2));
}

#[test]
fn interval_log_holds_every_measured_response() {
    let s = Serve::start(&[]);
    let log = common::scratch("intervals.hlog");
    let r = run_json(&[
        "-c",
        "4",
        "-d",
        "2s",
        "--hdr-log",
        log.to_str().unwrap_or_default(),
        &s.url(),
    ]);
    let text = std::fs::read(&log).expect("log written");
    let _ = std::fs::remove_file(&log);
    let mut total = 0;
    let mut intervals = 0;
    for item in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&text) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(h)) = item {
            let bytes = base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                hdrhistogram::serialization::Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .expect("decodable histogram");
            total += hist.len();
            intervals += 1;
        }
    }
    assert!(intervals >= 2, "one histogram per second, got {intervals}");
    assert_eq!(total, u(&r, &["responses"]));
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).expect("base64 character") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn head_responses_carry_no_body_even_pipelined() {
    let s = Serve::start(&["--body-size", "1000"]);
    let r = run_json(&[
        "-c",
        "2",
        "-n",
        "50",
        "--pipeline",
        "5",
        "-m",
        "HEAD",
        &s.url(),
    ]);
    assert_eq!(u(&r, &["responses"]), 50);
    assert_eq!(u(&r, &["errors", "parse"]), 0);
    // "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" and nothing else, per response.
    assert_eq!(u(&r, &["bytes_read"]), 50 * 41);
}

#[test]
fn serve_counts_what_it_answered() {
    let s = Serve::start(&["--count"]);
    let r = run_json(&["-c", "3", "--pipeline", "4", "-n", "1234", &s.url()]);
    assert_eq!(u(&r, &["responses"]), 1234);
    assert_eq!(s.terminate().trim(), "served 1234 requests");
}

#[test]
fn relay_passes_every_exchange_through_to_its_upstreams() {
    passes_every_exchange_through(Serve::relay);
}

#[test]
fn raw_relay_passes_every_exchange_through_to_its_upstreams() {
    passes_every_exchange_through(Serve::raw_relay);
}

/// 2,000 requests through a relay in front of two upstreams: every byte comes back, and client
/// connections take the upstreams in turn, so both see traffic.
fn passes_every_exchange_through(start: fn(&[SocketAddr]) -> Serve) {
    let a = Serve::start(&["--count", "--body-size", "1000"]);
    let b = Serve::start(&["--count", "--body-size", "1000"]);
    let relay = start(&[a.addr, b.addr]);
    let r = run_json(&["-c", "4", "-n", "2000", &relay.url()]);
    assert_eq!(u(&r, &["responses"]), 2000);
    assert_eq!(u(&r, &["bytes_read"]), 2000 * (head_len(1000) + 1000));
    let (sa, sb) = (served(a), served(b));
    assert_eq!(sa + sb, 2000);
    assert!(sa > 0 && sb > 0, "{sa} / {sb}");
}

/// What `loadgen serve --count` answered, read from its exit line.
fn served(s: Serve) -> u64 {
    let out = s.terminate();
    out.trim()
        .strip_prefix("served ")
        .and_then(|x| x.strip_suffix(" requests"))
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("unexpected {out:?}"))
}

/// `serve`'s response head for a Content-Length body of `n` bytes.
fn head_len(n: usize) -> u64 {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").len() as u64
}

#[test]
fn raw_relay_survives_clients_that_leave_mid_exchange() {
    use std::io::Write;
    use std::net::TcpStream;
    let a = Serve::start(&["--count", "--body-size", "100000"]);
    let mut relay = Serve::raw_relay(&[a.addr]);
    let r = run_json(&["-c", "4", "-n", "200", &relay.url()]);
    assert_eq!(u(&r, &["responses"]), 200);
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let leave = |bytes: &[u8], reset: bool| {
        let mut s = TcpStream::connect(relay.addr).expect("connect");
        s.write_all(bytes).expect("write");
        if reset {
            // An RST instead of a FIN, so the relay's send fails rather than just succeeding.
            let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
        }
        drop(s);
    };
    for reset in [false, true] {
        leave(b"", reset);
        leave(&req[..10], reset);
        // Gone before the (larger than any socket buffer) response is through.
        leave(req, reset);
        leave(&req.repeat(3), reset);
        // A body this relay cannot frame: it closes the connection, nothing else.
        leave(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", reset);
    }
    // No wait before the second run: a departure that took the relay down fails that run, and
    // one that did so later is caught by the check after it.
    let r = run_json(&["-c", "4", "-n", "300", &relay.url()]);
    assert_eq!(u(&r, &["responses"]), 300);
    assert_eq!(u(&r, &["bytes_read"]), 300 * (head_len(100_000) + 100_000));
    assert!(relay.running(), "raw-relay exited");
    assert!(served(a) >= 500);
}

#[test]
fn raw_relay_passes_responses_larger_than_its_buffer_whole_even_pipelined() {
    let a = Serve::start(&["--body-size", "100000"]);
    let relay = Serve::raw_relay(&[a.addr]);
    for pipeline in ["1", "4"] {
        let r = run_json(&["-c", "4", "--pipeline", pipeline, "-n", "400", &relay.url()]);
        assert_eq!(u(&r, &["responses"]), 400, "pipeline {pipeline}");
        assert_eq!(u(&r, &["errors", "parse"]), 0, "pipeline {pipeline}");
        assert_eq!(
            u(&r, &["bytes_read"]),
            400 * (head_len(100_000) + 100_000),
            "pipeline {pipeline}"
        );
    }
}
