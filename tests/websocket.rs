//! WebSocket (HTTP/1.1 Upgrade) through the real binary, with tungstenite as both the client
//! and a real upstream: the handshake reaches the upstream with its offer, messages pass both
//! ways (one larger than any buffer), closes pass on in both directions, over TLS too; bytes
//! sent in the same write as either side's head cross the tunnel; only `websocket` is offered
//! upstream and only its 101 tunnelled; an upstream that declines answers as a plain request
//! on a client connection that stays usable (its own is not reused); an idle tunnel closes after
//! `tunnel_timeout`; a gateway route's auth checks the handshake; the access log records the
//! 101; and a broken `tunnel_timeout` is refused by key.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

/// A tungstenite echo server: greets each connection with a text frame right after its 101,
/// echoes every message, and closes when told "bye". Keeps each handshake's headers.
struct WsUpstream {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Headers>>>,
}

type Headers = Vec<(String, String)>;

impl WsUpstream {
    fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                thread::spawn(move || {
                    // tungstenite's callback type, whose error is a whole response.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &Request, resp: Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        seen.lock().unwrap().push(headers);
                        Ok(resp)
                    };
                    let Ok(mut ws) = tungstenite::accept_hdr(stream, record) else {
                        return;
                    };
                    if ws.send(Message::text("hello from upstream")).is_err() {
                        return;
                    }
                    while let Ok(msg) = ws.read() {
                        let echo = match &msg {
                            Message::Text(t) if t.as_str() == "bye" => {
                                let _ = ws.close(None);
                                false
                            }
                            Message::Text(_) | Message::Binary(_) => true,
                            _ => false,
                        };
                        if echo && ws.send(msg).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsUpstream { addr, handshakes }
    }

    fn handshake(&self, i: usize) -> Headers {
        wait_for(Duration::from_secs(10), "the upstream's handshake", || {
            self.handshakes.lock().unwrap().get(i).cloned()
        })
    }
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The client's side of a conversation with `WsUpstream` through Ringway: the greeting, an
/// echo of a text and of a binary message larger than any of Ringway's buffers, then a close
/// the upstream starts, which must reach the client and end the connection.
fn converse<S: Read + Write>(ws: &mut WebSocket<S>) {
    assert_eq!(
        ws.read().unwrap(),
        Message::text("hello from upstream"),
        "the frame right behind the 101"
    );
    ws.send(Message::text("ping through ringway")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("ping through ringway"));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "the 3 MB echo differs"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    ws.send(Message::text("bye")).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("expected the upstream's close, got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the close did not end cleanly: {e}"),
        }
    }
}

#[test]
fn websocket_messages_pass_both_ways_and_the_upstream_sees_the_offer() {
    let up = WsUpstream::start();
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let mut rw = Ringway::start(&simple_config(
        &[up.addr],
        "",
        &format!("[access_log]\npath = {:?}\n", log.display().to_string()),
    ));
    let stream = connect(rw.addr());
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut ws, resp) =
        tungstenite::client(format!("ws://{}/chat?room=1", rw.addr()), stream).unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()
            .get("upgrade")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    converse(&mut ws);

    let seen = up.handshake(0);
    assert_eq!(value(&seen, "upgrade"), Some("websocket"), "{seen:?}");
    assert!(
        value(&seen, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{seen:?}"
    );
    assert!(value(&seen, "sec-websocket-key").is_some(), "{seen:?}");
    assert_eq!(value(&seen, "x-forwarded-for"), Some("127.0.0.1"));

    // The client leaves too, which ends the tunnel's other direction and the exchange. Its
    // line is written then: status 101, and the bytes the client was sent, the 3 MB echo
    // among them.
    drop(ws);
    rw.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("GET /chat?room=1 HTTP/1.1"))
        .unwrap_or_else(|| panic!("no line for the handshake in {text:?}"));
    let after = line.split("HTTP/1.1\" ").nth(1).unwrap();
    let mut fields = after.split(' ');
    assert_eq!(fields.next(), Some("101"), "{line}");
    let bytes: u64 = fields.next().unwrap().parse().unwrap();
    assert!(bytes > 3_000_000, "{line}");
}

#[test]
fn websocket_over_tls_passes_messages_and_closes() {
    let up = WsUpstream::start();
    let dir = TempDir::new();
    let cert = make_cert(&dir.0, "site", &["localhost"]);
    let rw = Ringway::start(&tls_config(&[up.addr], &cert, ""));
    let tls = tls_connect(rw.addr(), "localhost", &[&cert]).unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut ws, resp) = tungstenite::client("wss://localhost/secure", tls).unwrap();
    assert_eq!(resp.status(), 101);
    converse(&mut ws);
    let seen = up.handshake(0);
    assert_eq!(value(&seen, "x-forwarded-proto"), Some("https"), "{seen:?}");
}

#[test]
fn an_upstream_that_declines_answers_a_plain_response_on_a_connection_that_stays_open() {
    let up = Upstream::start("plain");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let mut s = connect(rw.addr());
    let offer = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(offer.as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    let seen = up.wait_requests(1);
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(
        seen[0].header("connection").map(str::to_ascii_lowercase),
        Some("upgrade".to_string())
    );
    // No tunnel: the next request on the same connection is an ordinary one.
    s.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    let seen = up.wait_requests(2);
    assert_eq!(seen[1].header("upgrade"), None);
    // Nor is the upstream connection that declined trusted with it: it may have half switched.
    assert_ne!(seen[0].conn, seen[1].conn);
}

#[test]
fn an_offer_with_a_body_or_from_http_1_0_is_not_passed_on() {
    let up = Upstream::start("plain");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let with_body = "POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
                     Content-Length: 2\r\n\r\nhi";
    assert_eq!(raw_exchange(rw.addr(), with_body.as_bytes()).status, 200);
    let old = "GET /ws HTTP/1.0\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(raw_exchange(rw.addr(), old.as_bytes()).status, 200);
    for r in up.wait_requests(2) {
        assert_eq!(r.header("upgrade"), None, "{}", r.raw_head);
    }
}

#[test]
fn an_idle_tunnel_closes_after_tunnel_timeout() {
    let up = WsUpstream::start();
    let rw = Ringway::start(&simple_config(&[up.addr], "tunnel_timeout = \"300ms\"", ""));
    let stream = connect(rw.addr());
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{}/idle", rw.addr()), stream).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello from upstream"));
    // Nothing more is sent either way: Ringway ends the tunnel (not the read timeout above).
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed)
        | Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => {}
        other => panic!("expected the tunnel to close, got {other:?}"),
    }
}

#[test]
fn a_101_without_an_offer_is_a_502() {
    // An upstream that switches protocols unasked: Ringway cannot tunnel what the client never
    // asked for.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            );
        }
    });
    let rw = Ringway::start(&simple_config(&[addr], "", ""));
    let resp = raw_exchange(rw.addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(resp.status, 502);
}

#[test]
fn a_gateway_route_checks_the_handshake_before_the_tunnel() {
    // Browsers cannot set headers on a WebSocket handshake: the key comes as a parameter.
    let up = WsUpstream::start();
    let auth = "[auth.keys]\ntype = \"api_key\"\nquery = \"api_key\"\n\
                keys = [{ name = \"acme\", key = \"acme-5f2b9c1e7d\" }]\n";
    // The route is the config's last table: the line joins it.
    let rw = Ringway::start(&(simple_config(&[up.addr], "", auth) + "auth = \"keys\"\n"));
    match tungstenite::client(format!("ws://{}/feed", rw.addr()), connect(rw.addr())) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status(), 401)
        }
        Err(e) => panic!("expected a 401, got {e}"),
        Ok(_) => panic!("a handshake without a key was let through"),
    }
    let url = format!("ws://{}/feed?api_key=acme-5f2b9c1e7d", rw.addr());
    let (mut ws, resp) = tungstenite::client(url, connect(rw.addr())).unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(ws.read().unwrap(), Message::text("hello from upstream"));
    let seen = up.handshake(0);
    assert_eq!(value(&seen, "x-consumer"), Some("acme"), "{seen:?}");
}

#[test]
fn a_broken_tunnel_timeout_is_refused_naming_the_key() {
    let dir = TempDir::new();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (value, why) in [
        ("\"forever\"", "does not start with a number"),
        ("30", "invalid type"),
    ] {
        let text = simple_config(&[addr], &format!("tunnel_timeout = {value}"), "");
        let path = dir.write("bad.toml", &text);
        let (code, out) = ringway_check(&path);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("upstream.app.tunnel_timeout"), "{out}");
        assert!(out.contains(why), "{why}: {out}");
    }
}

/// An upstream speaking bytes, not WebSocket frames: it records each request head, answers
/// `reply` (a 101 head) with `UPSTREAM-FIRST` behind it in the same write, then echoes every
/// byte it gets until the client half-closes.
fn raw_tunnel_upstream(reply: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let seen = seen.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let Ok((first, headers)) = read_head(&mut r) else {
                    return;
                };
                let head: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                seen.lock()
                    .unwrap()
                    .push(format!("{first}\n{}", head.join("\n")));
                if s.write_all(format!("{reply}UPSTREAM-FIRST").as_bytes())
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, heads)
}

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
const OFFER: &str = "GET /raw HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends the offer with `CLIENT-FIRST` behind it in one write, then checks that the bytes
/// each side sent with its head cross the tunnel (the upstream's first, then the client's,
/// echoed), that later bytes do too, and that the client's half-close ends it all.
fn early_bytes_cross<S: Read + Write>(mut s: S) {
    s.write_all(format!("{OFFER}CLIENT-FIRST").as_bytes())
        .unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let mut got = [0u8; 26];
    r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"UPSTREAM-FIRSTCLIENT-FIRST");
    r.get_mut().write_all(b"later").unwrap();
    let mut got = [0u8; 5];
    r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"later");
}

#[test]
fn bytes_sent_with_either_head_cross_the_tunnel() {
    let (addr, heads) = raw_tunnel_upstream(SWITCH);
    let rw = Ringway::start(&simple_config(&[addr], "", ""));
    let s = connect(rw.addr());
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    early_bytes_cross(s.try_clone().unwrap());
    // The client's half-close reaches the upstream, which closes: the client sees the end.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_peer(&mut &s));
    assert_eq!(heads.lock().unwrap().len(), 1);

    // The same over TLS.
    let dir = TempDir::new();
    let cert = make_cert(&dir.0, "site", &["localhost"]);
    let rw = Ringway::start(&tls_config(&[addr], &cert, ""));
    let tls = tls_connect(rw.addr(), "localhost", &[&cert]).unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    early_bytes_cross(tls);
}

#[test]
fn only_websocket_is_offered_upstream_and_only_its_101_is_tunnelled() {
    // h2c above all: a tunnel to it would carry requests no route or auth of Ringway sees.
    let up = Upstream::start("plain");
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    for offer in [
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
        "OPTIONS / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        assert_eq!(raw_exchange(rw.addr(), offer.as_bytes()).status, 200);
    }
    for r in up.wait_requests(3) {
        assert_eq!(r.header("upgrade"), None, "{}", r.raw_head);
        assert_eq!(r.header("http2-settings"), None, "{}", r.raw_head);
    }
    // An upstream switching to another protocol than the one offered is refused.
    let (addr, _) = raw_tunnel_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    );
    let rw = Ringway::start(&simple_config(&[addr], "", ""));
    assert_eq!(raw_exchange(rw.addr(), OFFER.as_bytes()).status, 502);
}
