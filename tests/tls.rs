//! TLS termination through the real binary: curl and a rustls client over HTTPS to real
//! upstreams, keep-alive and pipelining inside one TLS session, large bodies both ways, SNI
//! certificate choice, the handshake deadline, close_notify, certificate reload on SIGHUP, the
//! oldest-version switch, and broken certificate configs refused with their key.

mod common;

use common::*;
use rustls::pki_types::CertificateDer;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// Ringway terminating TLS for "localhost" in front of `up`, with `tls_extra` in its `tls`
/// table; the certificate's folder lives as long as it does.
struct Site {
    rw: Ringway,
    cert: Cert,
    up: Upstream,
    _dir: TempDir,
}

impl Site {
    fn start(up: Upstream, tls_extra: &str) -> Site {
        let dir = TempDir::new();
        let cert = make_cert(&dir.0, "site", &["localhost"]);
        let rw = Ringway::start(&tls_config(&[up.addr], &cert, tls_extra));
        Site {
            rw,
            cert,
            up,
            _dir: dir,
        }
    }
}

fn peer_cert(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[test]
fn curl_gets_and_posts_over_https_and_the_upstream_sees_the_scheme() {
    let Site { rw, cert, up, _dir } = Site::start(Upstream::start("a"), "");
    let port = rw.addr().port();
    let url = format!("https://localhost:{port}/hello?x=1");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cacert = cert.cert.to_str().unwrap();
    let (code, body, err) = curl(&["--cacert", cacert, "--resolve", &resolve, &url]);
    assert_eq!(
        (code, String::from_utf8_lossy(&body).as_ref()),
        (200, "a GET /hello?x=1"),
        "{err}"
    );
    let rec = up.last();
    assert_eq!(
        rec.header("x-forwarded-proto"),
        Some("https"),
        "{}",
        rec.raw_head
    );

    // A POST, over TLS 1.2 this time.
    let (code, body, err) = curl(&[
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "-d",
        "posted body",
        &url,
    ]);
    assert_eq!(
        (code, String::from_utf8_lossy(&body).as_ref()),
        (200, "a POST /hello?x=1"),
        "{err}"
    );
    assert_eq!(up.last().body, b"posted body");

    // The plain-HTTP listener of the same build still says http.
    let plain = Ringway::start(&simple_config(&[up.addr], "", ""));
    assert_eq!(get(&plain.url("/p")).0, 200);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
}

#[test]
fn keep_alive_and_pipelined_requests_share_one_session_which_ends_with_close_notify() {
    let Site { rw, cert, up, _dir } = Site::start(Upstream::start("a"), "");
    let mut tls = tls_connect(rw.addr(), "localhost", &[&cert]).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Two requests in one write, a third after their answers, the last asking to close.
    tls.write_all(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(tls);
    for i in 1..=2 {
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!((resp.status, resp.text()), (200, format!("a GET /{i}")));
    }
    r.get_mut()
        .write_all(b"GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.status, resp.text()), (200, "a GET /3".to_string()));
    // A clean end: rustls reads 0 only after the server's close_notify (a bare TCP close is
    // an UnexpectedEof error).
    let mut rest = Vec::new();
    let n = r
        .read_to_end(&mut rest)
        .expect("the session ends with close_notify");
    assert_eq!(n, 0);
    assert_eq!(up.count(), 3);
}

#[test]
fn large_bodies_stream_both_ways_over_tls() {
    const LEN: u64 = 16 << 20;
    let up = Upstream::with(|r| {
        if r.method == "GET" {
            let mut reply = Reply::ok("");
            reply.body = ReplyBody::Pattern { len: LEN, seed: 3 };
            reply
        } else {
            Reply::ok(format!("{} {}", r.body_len, r.body_sha256))
        }
    });
    let Site {
        rw,
        cert,
        up: _up,
        _dir,
    } = Site::start(up, "");
    let mut tls = tls_connect(rw.addr(), "localhost", &[&cert]).unwrap();
    // Upload, chunked, in pieces the size a client writes.
    tls.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let mut src = PatternReader::new(LEN, 9);
    let mut piece = vec![0u8; 100_000];
    loop {
        let n = src.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        tls.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
        tls.write_all(&piece[..n]).unwrap();
        tls.write_all(b"\r\n").unwrap();
    }
    tls.write_all(b"0\r\n\r\n").unwrap();
    let mut r = BufReader::new(tls);
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), format!("{LEN} {}", pattern_sha256(LEN, 9)));
    // Download on the same session.
    r.get_mut()
        .write_all(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (status, headers) = read_head(&mut r).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let len: u64 = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert_eq!(len, LEN);
    let (sha, got) = sha256_reader((&mut r).take(LEN));
    assert_eq!((got, sha), (LEN, pattern_sha256(LEN, 3)));
}

#[test]
fn sni_picks_the_certificate_by_name_exact_then_wildcard_then_default() {
    let dir = TempDir::new();
    let default = make_cert(&dir.0, "default", &["localhost"]);
    let api = make_cert(&dir.0, "api", &["api.test"]);
    let wild = make_cert(&dir.0, "wild", &["*.wild.test"]);
    let up = Upstream::start("a");
    let sni = format!(
        "[[listener.tls.sni]]\nserver_names = [\"API.test\"]\ncert = {:?}\nkey = {:?}\n\
         [[listener.tls.sni]]\nserver_names = [\"*.wild.test\"]\ncert = {:?}\nkey = {:?}\n",
        api.cert, api.key, wild.cert, wild.key
    );
    let rw = Ringway::start(&tls_config(&[up.addr], &default, &sni));
    let all = [&default, &api, &wild];
    for (name, expected) in [
        ("api.test", &api),
        ("x.wild.test", &wild),
        ("localhost", &default),
    ] {
        let mut tls = tls_connect(rw.addr(), name, &all).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            peer_cert(&tls) == expected.der,
            "{name} got another certificate"
        );
        tls.write_all(b"GET /sni HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut BufReader::new(tls), false).unwrap();
        assert_eq!(resp.status, 200, "{name}");
    }
    // A name no certificate covers gets the default one, which the client then refuses.
    let Err(err) = tls_connect(rw.addr(), "other.test", &all) else {
        panic!("a name no certificate covers was accepted");
    };
    assert!(
        err.to_string()
            .contains("only valid for DnsName(\"localhost\")"),
        "{err}"
    );
}

#[test]
fn a_stalled_handshake_is_closed_and_plain_http_gets_a_400() {
    let Site { rw, cert, up, _dir } =
        Site::start(Upstream::start("a"), "handshake_timeout = \"300ms\"");
    // Connected, silent: closed at the handshake deadline (the read would fail the test at
    // DEADLINE otherwise).
    let mut silent = connect(rw.addr());
    let mut buf = [0u8; 64];
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "a silent client was not closed"
    );
    // Plain HTTP on the TLS port: a 400 that says so, as nginx answers, and the close.
    let mut plain = connect(rw.addr());
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    plain.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("plain HTTP sent to the HTTPS port"), "{text}");
    // Neither reached the upstream, and the listener still serves.
    let tls = tls_connect(rw.addr(), "localhost", &[&cert]).unwrap();
    drop(tls);
    assert_eq!(up.count(), 0);
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client() {
    let Site {
        rw,
        cert,
        up: _up,
        _dir,
    } = Site::start(Upstream::start("a"), "min_version = \"1.3\"");
    let tls12 = client_config(&[&cert], &[&rustls::version::TLS12]);
    assert!(tls_connect_with(rw.addr(), "localhost", tls12).is_err());
    let tls13 = client_config(&[&cert], &[&rustls::version::TLS13]);
    let tls = tls_connect_with(rw.addr(), "localhost", tls13).unwrap();
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn sighup_renews_the_certificate_for_new_connections() {
    let dir = TempDir::new();
    let old = make_cert(&dir.0, "site", &["localhost"]);
    let up = Upstream::start("a");
    let rw = Ringway::start(&tls_config(&[up.addr], &old, ""));
    let kept = tls_connect(rw.addr(), "localhost", &[&old]).unwrap();
    assert!(peer_cert(&kept) == old.der);
    // New files under the same names, then a reload that keeps the bound port.
    let new = make_cert(&dir.0, "site", &["localhost"]);
    let path = rw.config_path.clone().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("127.0.0.1:0", &rw.addr().to_string())).unwrap();
    rw.signal("HUP");
    wait_for(DEADLINE, "the reload", || {
        rw.stderr().contains("reloaded").then_some(())
    });
    // Workers take the new config at their next tick; until then a handshake may still get
    // the old certificate, which both roots accept.
    wait_for(DEADLINE, "a handshake with the new certificate", || {
        let fresh = tls_connect(rw.addr(), "localhost", &[&old, &new]).ok()?;
        (peer_cert(&fresh) == new.der).then_some(())
    });
    // The session opened before the reload still works.
    let mut r = BufReader::new(kept);
    r.get_mut()
        .write_all(b"GET /old HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().text(), "a GET /old");
}

#[test]
fn broken_tls_configs_are_refused_naming_the_key() {
    let dir = TempDir::new();
    let a = make_cert(&dir.0, "a", &["localhost"]);
    let b = make_cert(&dir.0, "b", &["localhost"]);
    std::fs::write(dir.0.join("empty.pem"), "not pem\n").unwrap();
    let check = |tls: &str, key_and_reason: &[&str]| {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\n{tls}\n\
             [[route]]\nrespond = {{ status = 200 }}\n"
        );
        let path = dir.write("broken.toml", &text);
        let (code, err) = ringway_check(&path);
        assert_eq!(code, Some(1), "{tls}\n{err}");
        for part in key_and_reason {
            assert!(err.contains(part), "{tls}: {part:?} not in\n{err}");
        }
    };
    let pair = |c: &Path, k: &Path| format!("cert = {c:?}\nkey = {k:?}");
    check(
        &pair(&dir.0.join("missing.pem"), &a.key),
        &["listener[0].tls.cert:", "missing.pem", "cannot read"],
    );
    check(
        &pair(&dir.0.join("empty.pem"), &a.key),
        &["listener[0].tls.cert:", "empty.pem"],
    );
    check(
        &pair(&a.cert, &b.key),
        &["listener[0].tls.key:", "does not match the certificate"],
    );
    check(
        &format!(
            "{}\n[[listener.tls.sni]]\nserver_names = [\"bad name\"]\ncert = {:?}\nkey = {:?}",
            pair(&a.cert, &a.key),
            b.cert,
            b.key
        ),
        &["listener[0].tls.sni[0].server_names:", "\"bad name\""],
    );
    check(
        &format!(
            "{}\n[[listener.tls.sni]]\nserver_names = [\"b.test\"]\ncert = {:?}\nkey = {:?}",
            pair(&a.cert, &a.key),
            b.cert,
            a.key
        ),
        &["listener[0].tls.sni[0].key:", "does not match"],
    );
    check(
        &format!("{}\nmin_version = \"1.1\"", pair(&a.cert, &a.key)),
        &["listener[0].tls.min_version:", "unknown version"],
    );
    check(
        &format!("{}\nciphers = \"all\"", pair(&a.cert, &a.key)),
        &["listener[0].tls", "ciphers"],
    );
    // And a good one passes.
    let path = dir.write(
        "good.toml",
        &format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\n{}\n[[route]]\nrespond = {{ status = 200 }}\n",
            pair(&a.cert, &a.key)
        ),
    );
    let (code, err) = ringway_check(&path);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_tcp_listener_cannot_terminate_tls() {
    let dir = TempDir::new();
    let a = make_cert(&dir.0, "a", &["localhost"]);
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nupstream = \"db\"\n\
         [listener.tls]\ncert = {:?}\nkey = {:?}\n[upstream.db]\nservers = [\"127.0.0.1:1\"]\n",
        a.cert, a.key
    );
    let path = dir.write("tcp.toml", &text);
    let (code, err) = ringway_check(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("listener[0].tls:") && err.contains("HTTP listeners only"),
        "{err}"
    );
}

#[test]
fn the_documented_tls_keys_in_the_example_config_are_the_real_ones() {
    // config/ringway.toml carries its TLS listener commented out (it needs certificate
    // files); uncommented, with real files in place of its paths, it must pass `check`.
    let example = std::fs::read_to_string(repo_path("config/ringway.toml")).unwrap();
    let start = example
        .find("#[[listener]]\n#name = \"public-tls\"")
        .expect("the TLS example block");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter(|l| !l.starts_with("##"))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    let dir = TempDir::new();
    let main = make_cert(&dir.0, "main", &["example.com"]);
    let api = make_cert(&dir.0, "api", &["api.example.com"]);
    let mut text = block;
    for (path, real) in [
        ("/etc/ringway/tls/example.com.pem", &main.cert),
        ("/etc/ringway/tls/example.com.key", &main.key),
        ("/etc/ringway/tls/api.example.com.pem", &api.cert),
        ("/etc/ringway/tls/api.example.com.key", &api.key),
    ] {
        assert!(text.contains(path), "{path} not in the example:\n{text}");
        text = text.replace(path, real.to_str().unwrap());
    }
    for key in [
        "cert",
        "key",
        "min_version",
        "handshake_timeout",
        "server_names",
    ] {
        assert!(
            text.contains(&format!("\n{key} = ")),
            "{key} not shown:\n{text}"
        );
    }
    text = text.replace("127.0.0.1:8443", "127.0.0.1:0");
    text.push_str("[[route]]\nrespond = { status = 200 }\n");
    let path = dir.write("example.toml", &text);
    let (code, err) = ringway_check(&path);
    assert_eq!(code, Some(0), "{text}\n{err}");
}
