//! The PROXY protocol through the real binary. Read on listeners: the client a v1 or v2 header
//! names is the one upstreams see in X-Forwarded-For (for every request of the connection, and
//! over TLS); curl's own header is accepted; a LOCAL header keeps the socket's address; a
//! connection without a valid header is closed unanswered; a tcp listener relays what follows
//! the header. Sent to L4 upstreams: each server connection opens with a header naming the
//! client (the one a listener's own header named, if any); HTTP probes send one naming none;
//! HTTP routes may not use such an upstream.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn config(up: SocketAddr, echo: SocketAddr, cert: &Cert) -> String {
    format!(
        r#"[runtime]
workers = 1

[[listener]]
name = "pp"
bind = "127.0.0.1:0"
proxy_protocol = true

[[listener]]
name = "pp-tls"
bind = "127.0.0.1:0"
proxy_protocol = true
[listener.tls]
cert = {:?}
key = {:?}

[[listener]]
name = "pp-tcp"
bind = "127.0.0.1:0"
protocol = "tcp"
upstream = "echo"
proxy_protocol = true

[[listener]]
name = "tcp-v1"
bind = "127.0.0.1:0"
protocol = "tcp"
upstream = "echo-v1"

[[listener]]
name = "pp-tcp-v2"
bind = "127.0.0.1:0"
protocol = "tcp"
upstream = "echo-v2"
proxy_protocol = true

[upstream.app]
servers = ["{up}"]

[upstream.echo]
servers = ["{echo}"]

[upstream.echo-v1]
servers = ["{echo}"]
send_proxy_protocol = "v1"

[upstream.echo-v2]
servers = ["{echo}"]
send_proxy_protocol = "v2"

[[route]]
upstream = "app"
"#,
        cert.cert, cert.key
    )
}

struct Setup {
    up: Upstream,
    rw: Ringway,
    cert: Cert,
    _dir: TempDir,
}

fn setup() -> Setup {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let cert = make_cert(&dir.0, "localhost", &["localhost"]);
    let rw = Ringway::start_n(&config(up.addr, echo_server(), &cert), 5, &[]);
    Setup {
        up,
        rw,
        cert,
        _dir: dir,
    }
}

/// A TCP server that sends back whatever it reads, connection by connection.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20 | command, family]);
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: pp.test\r\n\r\n")
}

#[test]
fn a_v1_header_names_the_client() {
    let s = setup();
    let mut c = connect(s.rw.addrs["pp"]);
    let first = format!(
        "PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n{}",
        get("/one")
    );
    c.write_all(first.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "app GET /one"));
    assert_eq!(s.up.last().header("x-forwarded-for"), Some("203.0.113.7"));
    // The header opens the connection once; its client stands for every request on it.
    r.get_mut().write_all(get("/two").as_bytes()).unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), "app GET /two");
    assert_eq!(s.up.last().header("x-forwarded-for"), Some("203.0.113.7"));
}

#[test]
fn a_v2_header_in_pieces_names_an_ipv6_client() {
    let s = setup();
    let mut addrs = [0u8; 36];
    addrs[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    addrs[32..34].copy_from_slice(&40000u16.to_be_bytes());
    // A TLV after the addresses, skipped with the header.
    let header = v2(1, 0x21, &[&addrs[..], &[0x04, 0, 2, 1, 2]].concat());
    let mut c = connect(s.rw.addrs["pp"]);
    c.set_nodelay(true).unwrap();
    // Sent in pieces: the header may reach Ringway in parts, and only its bytes are taken.
    for piece in [&header[..5], &header[5..20], &header[20..]] {
        c.write_all(piece).unwrap();
        c.flush().unwrap();
    }
    c.write_all(get("/six").as_bytes()).unwrap();
    let resp = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "app GET /six"));
    assert_eq!(s.up.last().header("x-forwarded-for"), Some("2001:db8::7"));
}

#[test]
fn a_v2_local_header_keeps_the_socket_address() {
    let s = setup();
    let mut c = connect(s.rw.addrs["pp"]);
    c.write_all(&[v2(0, 0x00, &[]), get("/local").into_bytes()].concat())
        .unwrap();
    let resp = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(s.up.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn curl_sends_a_header_ringway_reads() {
    let s = setup();
    let url = format!("http://{}/by-curl", s.rw.addrs["pp"]);
    let (code, body, err) = curl(&["--haproxy-protocol", &url]);
    assert_eq!(
        (code, body.as_slice()),
        (200, &b"app GET /by-curl"[..]),
        "{err}"
    );
    assert_eq!(s.up.last().header("x-forwarded-for"), Some("127.0.0.1"));
    // Without the header, the same request is refused: the connection closes unanswered
    // (curl's 52, or 56 when the unread request turns the close into a reset), at once rather
    // than at curl's own timeout.
    let (code, _, err) = curl(&[&url]);
    assert_eq!(code, 0);
    assert!(err.contains("(52)") || err.contains("(56)"), "{err}");
}

#[test]
fn a_connection_without_a_valid_header_is_closed_unanswered() {
    let s = setup();
    for opening in [
        get("/plain").into_bytes(),
        b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        [&V2_SIGNATURE[..], &[0x31, 0x11, 0, 12], &[0; 12]].concat(),
    ] {
        let mut c = connect(s.rw.addrs["pp"]);
        c.write_all(&opening).unwrap();
        // EOF or a reset, with nothing before it (and not this client's read timeout).
        assert!(
            closed_by_peer(&mut c),
            "{:?}",
            String::from_utf8_lossy(&opening)
        );
    }
    assert_eq!(s.up.count(), 0);
}

#[test]
fn the_header_comes_before_the_tls_handshake() {
    let s = setup();
    let mut sock = connect(s.rw.addrs["pp-tls"]);
    sock.write_all(b"PROXY TCP4 198.51.100.9 10.0.0.1 443 443\r\n")
        .unwrap();
    let conn = rustls::ClientConnection::new(
        client_config(&[&s.cert], rustls::DEFAULT_VERSIONS),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(get("/secure").as_bytes()).unwrap();
    let resp = read_response(&mut BufReader::new(tls), false).unwrap();
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "app GET /secure")
    );
    let seen = s.up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("198.51.100.9"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[test]
fn a_tcp_listener_relays_what_follows_the_header() {
    let s = setup();
    let mut c = connect(s.rw.addrs["pp-tcp"]);
    c.write_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\nhello, relay")
        .unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello, relay");
}

#[test]
fn a_header_that_stops_halfway_is_closed_at_the_header_timeout() {
    let up = Upstream::start("app");
    let rw = Ringway::start(&format!(
        "[http]\nheader_timeout = \"200ms\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         proxy_protocol = true\n\n[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        up.addr
    ));
    let mut c = connect(rw.addr());
    c.write_all(b"PROXY TCP4 203.0.113.7").unwrap();
    // Closed by Ringway (read returns 0), not left open until this client's own read timeout.
    let mut got = Vec::new();
    assert_eq!(c.read_to_end(&mut got).unwrap(), 0);
    assert_eq!(up.count(), 0);
}

/// What the echo server sends back for `payload` sent to `listener`, opened with `opening`.
fn echoed(listener: SocketAddr, opening: &[u8], payload: &[u8]) -> (Vec<u8>, SocketAddr) {
    let mut c = connect(listener);
    let me = c.local_addr().unwrap();
    c.write_all(&[opening, payload].concat()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    (back, me)
}

#[test]
fn a_tcp_upstream_is_told_the_client_in_v1() {
    let s = setup();
    let listener = s.rw.addrs["tcp-v1"];
    let (back, me) = echoed(listener, b"", b"ping");
    let want = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\nping",
        me.port(),
        listener.port()
    );
    assert_eq!(String::from_utf8_lossy(&back), want);
}

#[test]
fn a_tcp_upstream_is_told_in_v2_the_client_a_header_named() {
    let s = setup();
    let listener = s.rw.addrs["pp-tcp-v2"];
    let (back, _) = echoed(
        listener,
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\n",
        b"hi",
    );
    // One family per header: the listener's IPv4 address goes IPv4-mapped beside the client's.
    let mut addrs = Vec::new();
    addrs.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    addrs.extend_from_slice(&std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
    addrs.extend_from_slice(&1000u16.to_be_bytes());
    addrs.extend_from_slice(&listener.port().to_be_bytes());
    assert_eq!(back, [v2(1, 0x21, &addrs), b"hi".to_vec()].concat());
}

#[test]
fn http_probes_of_such_an_upstream_send_a_header_naming_no_client() {
    // A server that answers a probe only after a v1 UNKNOWN header, and counts those it got.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let ok = got.starts_with(b"PROXY UNKNOWN\r\nGET /healthz HTTP/1.1\r\n");
            let status = if ok { "200 OK" } else { "400 Bad Request" };
            let _ = write!(c, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if tx.send(ok).is_err() {
                break;
            }
        }
    });
    let rw = Ringway::start_n(
        &format!(
            r#"[[listener]]
name = "tcp"
bind = "127.0.0.1:0"
protocol = "tcp"
upstream = "db"

[admin]
bind = "127.0.0.1:0"

[upstream.db]
servers = ["{server}"]
send_proxy_protocol = "v1"
health_check = {{ type = "http", path = "/healthz", interval = "20ms", unhealthy_threshold = 1 }}
"#
        ),
        2,
        &[],
    );
    for _ in 0..3 {
        assert!(
            rx.recv_timeout(DEADLINE).unwrap(),
            "a probe without the header"
        );
    }
    let metrics = raw_exchange(
        rw.addrs["admin"],
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .text();
    for (series, value) in [
        ("ringway_upstream_server_healthy", 1),
        ("ringway_upstream_probe_failures_total", 0),
    ] {
        let row = format!("{series}{{upstream=\"db\",server=\"{server}\"}} {value}\n");
        assert!(metrics.contains(&row), "{row}: {metrics}");
    }
}

#[test]
fn an_http_route_may_not_use_an_upstream_that_sends_headers() {
    let dir = TempDir::new();
    let path = dir.write(
        "ringway.toml",
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[upstream.db]\nservers = [\"127.0.0.1:9\"]\n\
         send_proxy_protocol = \"v2\"\n\n[[route]]\nupstream = \"db\"\n",
    );
    let (code, text) = ringway_check(&path);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("route[0].upstream") && text.contains("send_proxy_protocol"),
        "{text}"
    );
    let bad = dir.write(
        "bad.toml",
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nupstream = \"db\"\n\n\
         [upstream.db]\nservers = [\"127.0.0.1:9\"]\nsend_proxy_protocol = \"v3\"\n",
    );
    let (code, text) = ringway_check(&bad);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("upstream.db.send_proxy_protocol"), "{text}");
}

#[test]
fn a_long_v2_header_is_read_whole() {
    let s = setup();
    let mut addrs = vec![203, 0, 113, 9, 10, 0, 0, 1, 0x9c, 0x40, 0, 80];
    // A 1,000-byte TLV (type 0xE0, a custom one), as balancers add.
    addrs.extend_from_slice(&[0xe0, 0x03, 0xe8]);
    addrs.extend_from_slice(&[b'x'; 1000]);
    let mut c = connect(s.rw.addrs["pp"]);
    c.write_all(&[v2(1, 0x11, &addrs), get("/long").into_bytes()].concat())
        .unwrap();
    let resp = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "app GET /long"));
    assert_eq!(s.up.last().header("x-forwarded-for"), Some("203.0.113.9"));
}

#[test]
fn connections_awaiting_their_header_count_toward_max_connections() {
    let up = Upstream::start("app");
    let rw = Ringway::start(&format!(
        "[runtime]\nworkers = 1\n\n[http]\nmax_connections = 1\n\n[[listener]]\n\
         bind = \"127.0.0.1:0\"\nproxy_protocol = true\n\n[upstream.app]\nservers = [\"{}\"]\n\n\
         [[route]]\nupstream = \"app\"\n",
        up.addr
    ));
    // Accepted in order: the first waits for its header and holds the worker's one place,
    // so the second is closed at accept.
    let mut first = connect(rw.addr());
    let mut second = connect(rw.addr());
    let opening = format!("PROXY TCP4 192.0.2.1 127.0.0.1 1 80\r\n{}", get("/x"));
    let _ = second.write_all(opening.as_bytes());
    assert!(closed_by_peer(&mut second));
    first.write_all(opening.as_bytes()).unwrap();
    let resp = read_response(&mut BufReader::new(first), false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(up.count(), 1);
}
