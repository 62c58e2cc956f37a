//! Bodies through the real binary: a 64 MiB chunked upload and 64 MiB downloads (Content-Length
//! and chunked) checked by SHA-256 at the far end while the proxy's peak RSS stays far below the
//! body size (so bodies are streamed, not buffered); `Expect: 100-continue` with curl; HEAD,
//! 204 and 304 carrying no body.

mod common;

use common::*;
use std::io::{BufReader, Write};

const BIG: u64 = 64 * 1024 * 1024;
/// Peak resident memory the proxy may reach while moving 64 MiB (it idles at a few MiB).
const RSS_LIMIT_KIB: u64 = 40 * 1024;

fn assert_rss_bounded(rw: &Ringway, what: &str) {
    let hwm = rw.proc_status_kib("VmHWM");
    let rss = rw.proc_status_kib("VmRSS");
    eprintln!("{what}: proxy VmHWM {hwm} KiB, VmRSS {rss} KiB");
    assert!(
        hwm < RSS_LIMIT_KIB,
        "{what}: proxy peak RSS {hwm} KiB (now {rss} KiB): the body was buffered"
    );
}

#[test]
fn upload_64mib_chunked_streams_and_arrives_intact() {
    let up = Upstream::with(|r| Reply::ok(format!("{} {}", r.body_len, r.body_sha256)));
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let before = rw.proc_status_kib("VmRSS");
    // ureq sends a reader without a known length as Transfer-Encoding: chunked.
    let (code, resp) = ureq_result(
        agent()
            .post(&rw.url("/upload"))
            .send(PatternReader::new(BIG, 42)),
    );
    assert_eq!(code, 200);
    let expected = pattern_sha256(BIG, 42);
    assert_eq!(resp.into_string().unwrap(), format!("{BIG} {expected}"));
    let rec = up.last();
    assert!(
        rec.chunked,
        "upstream did not get a chunked body:\n{}",
        rec.raw_head
    );
    assert_eq!(rec.body_len, BIG);
    assert_eq!(rec.body_sha256, expected);
    assert_rss_bounded(&rw, &format!("upload (RSS before {before} KiB)"));
}

#[test]
fn upload_64mib_content_length_with_curl_and_expect_continue() {
    let up = HyperUpstream::start();
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let dir = TempDir::new();
    let path = dir.0.join("body.bin");
    {
        let mut f = std::fs::File::create(&path).unwrap();
        std::io::copy(&mut PatternReader::new(BIG, 9), &mut f).unwrap();
    }
    let (code, body, err) = curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "30",
        "--data-binary",
        &format!("@{}", path.display()),
        &rw.url("/big-post"),
    ]);
    assert_eq!(code, 200, "{err}");
    assert!(
        err.contains("100 Continue"),
        "curl never saw 100 Continue:\n{err}"
    );
    let (first, h) = parse_echo(&String::from_utf8(body).unwrap());
    assert_eq!(first, "POST /big-post");
    assert_eq!(echo_header(&h, "body-len"), Some(BIG.to_string().as_str()));
    assert_eq!(
        echo_header(&h, "body-sha256"),
        Some(pattern_sha256(BIG, 9).as_str())
    );
    assert_rss_bounded(&rw, "content-length upload");
}

#[test]
fn expect_continue_small_body_raw() {
    let up = Upstream::with(|r| Reply::ok(format!("got {}", String::from_utf8_lossy(&r.body))));
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let mut s = connect(rw.addr());
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    // The client waits for the interim response before sending the body.
    let interim = read_response(&mut r, false).unwrap();
    assert_eq!(interim.status, 100, "{interim:?}");
    s.write_all(b"hello").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "got hello");
}

#[test]
fn download_64mib_content_length_streams() {
    let up = Upstream::with(|_| {
        let mut r = Reply::ok("");
        r.body = ReplyBody::Pattern { len: BIG, seed: 5 };
        r
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let (code, resp) = ureq_result(agent().get(&rw.url("/big")).call());
    assert_eq!(code, 200);
    assert_eq!(
        resp.header("content-length"),
        Some(BIG.to_string().as_str())
    );
    let (sha, len) = sha256_reader(resp.into_reader());
    assert_eq!(len, BIG);
    assert_eq!(sha, pattern_sha256(BIG, 5));
    assert_rss_bounded(&rw, "content-length download");
}

#[test]
fn download_64mib_chunked_streams_to_curl() {
    let up = Upstream::with(|_| {
        let mut r = Reply::ok("").chunked();
        r.body = ReplyBody::Pattern { len: BIG, seed: 6 };
        r
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let dir = TempDir::new();
    let out = dir.0.join("down.bin");
    let (code, _, err) = curl(&["-o", out.to_str().unwrap(), &rw.url("/big")]);
    assert_eq!(code, 200, "{err}");
    let (sha, len) = sha256_reader(std::fs::File::open(&out).unwrap());
    assert_eq!(len, BIG);
    assert_eq!(sha, pattern_sha256(BIG, 6));
    assert_rss_bounded(&rw, "chunked download");
}

#[test]
fn head_204_304_carry_no_body_on_a_keepalive_connection() {
    let up = Upstream::with(|r| match r.path.as_str() {
        "/head" => Reply::ok("this body must not be sent for HEAD"),
        "/204" => {
            let mut x = Reply::ok("").status(204);
            x.no_length = true;
            x
        }
        "/304" => Reply::ok("").status(304).header("ETag", "\"v1\""),
        _ => Reply::ok("final"),
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let mut s = connect(rw.addr());
    // All four on one connection: any stray body byte would corrupt the next response.
    s.write_all(
        b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /204 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\n\r\n\
          GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    // HEAD keeps the length the GET would have had.
    assert_eq!(head.header("content-length"), Some("35"));
    let no_content = read_response(&mut r, false).unwrap();
    assert_eq!(no_content.status, 204);
    assert!(!no_content.has("transfer-encoding"));
    let not_modified = read_response(&mut r, false).unwrap();
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(!not_modified.has("transfer-encoding"));
    let last = read_response(&mut r, false).unwrap();
    assert_eq!(last.status, 200);
    assert_eq!(last.text(), "final");
    // And nothing else follows.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "stray bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn head_with_curl_gets_headers_only() {
    let up = Upstream::with(|_| Reply::ok("0123456789"));
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let (code, body, err) = curl(&["-I", &rw.url("/h")]);
    assert_eq!(code, 200, "{err}");
    let text = String::from_utf8(body).unwrap().to_ascii_lowercase();
    assert!(text.contains("content-length: 10"), "{text}");
    assert!(!text.contains("0123456789"));
    assert_eq!(up.last().method, "HEAD");
}

#[test]
fn close_delimited_upstream_body_reaches_an_http11_client_intact() {
    let up = Upstream::with(|_| {
        let mut r = Reply::ok("");
        r.body = ReplyBody::Pattern {
            len: 300_000,
            seed: 3,
        };
        r.no_length = true;
        r.silent_close = true;
        r
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let mut s = connect(rw.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"GET /eof HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 300_000);
    assert_eq!(sha256_hex(&resp.body), pattern_sha256(300_000, 3));
    // The body had its own framing towards the client, so the connection is still usable.
    s.write_all(b"GET /eof HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().body.len(), 300_000);
}

#[test]
fn chunked_upload_with_trailers_arrives_intact() {
    let up = Upstream::with(|r| Reply::ok(String::from_utf8_lossy(&r.body).into_owned()));
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let resp = raw_exchange(
        rw.addr(),
        b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello world");
}
