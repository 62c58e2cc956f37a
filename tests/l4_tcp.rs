//! The L4 relay (`protocol = "tcp"`) through the real binary: 64 MiB each way at once, intact
//! (SHA-256), with the client's half-close passed on while the other direction keeps flowing;
//! connections balanced round-robin; a dead server skipped without failing a connection; a
//! relay gone quiet gives its buffers back and still relays.

mod lb_common;

use lb_common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

const SIZE: usize = 64 << 20;
const TRAILER: &[u8] = b"sent-after-your-eof";

fn l4_config(servers: &[SocketAddr]) -> String {
    format!(
        "[runtime]\nworkers = 1\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nupstream = \"tcp\"\n\n\
         [upstream.tcp]\nservers = {}\nbalance = \"round_robin\"\n\n\
         [[route]]\nrespond = {{ status = 200 }}\n",
        server_list(servers)
    )
}

/// Writes `len` pseudo-random bytes (seeded) to `w`; returns their SHA-256.
fn write_pattern(w: &mut impl Write, len: usize, seed: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    h.finalize().to_vec()
}

/// Reads to EOF; returns (SHA-256 of the first `len` bytes, what came after them).
fn read_all(r: &mut impl Read, len: usize) -> (Vec<u8>, usize, Vec<u8>) {
    let mut h = Sha256::new();
    let mut total = 0;
    let mut rest = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let in_body = n.min(len.saturating_sub(total));
        h.update(&buf[..in_body]);
        rest.extend_from_slice(&buf[in_body..n]);
        total += n;
    }
    (h.finalize().to_vec(), total, rest)
}

#[test]
fn relays_64_mib_both_ways_intact_with_half_close() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    // The server sends 64 MiB while it reads the client's 64 MiB; only after the client's EOF
    // has come through does it send a trailer and close.
    let server = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        let reader = thread::spawn(move || read_all(&mut r, SIZE));
        let mut w = s;
        let sent = write_pattern(&mut w, SIZE, 2);
        let got = reader.join().unwrap();
        w.write_all(TRAILER).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        tx.send((sent, got)).unwrap();
    });
    let rw = Ringway::start(&l4_config(&[up]), 2);
    let s = TcpStream::connect(rw.listener(1)).unwrap();
    s.set_read_timeout(Some(DEADLINE * 4)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let h = write_pattern(&mut w, SIZE, 1);
        // Half-close: no more from the client, but it keeps reading.
        w.shutdown(Shutdown::Write).unwrap();
        h
    });
    let mut r = s;
    let (client_got, client_len, after) = read_all(&mut r, SIZE);
    let client_sent = writer.join().unwrap();
    let (server_sent, (server_got, server_len, server_after)) = rx.recv().unwrap();
    server.join().unwrap();

    assert_eq!(server_len, SIZE);
    assert!(server_after.is_empty());
    assert_eq!(server_got, client_sent, "client -> server bytes differ");
    assert_eq!(client_len, SIZE + TRAILER.len());
    assert_eq!(client_got, server_sent, "server -> client bytes differ");
    // The trailer was written after the server saw the client's EOF: the half-closed
    // connection still carried the other direction.
    assert_eq!(after, TRAILER);
}

/// TCP servers that write their name and close; counts connections.
fn name_server(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(name.as_bytes());
        }
    });
    (addr, n)
}

fn who(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn balances_connections_round_robin() {
    let servers = [name_server("a"), name_server("b"), name_server("c")];
    let rw = Ringway::start(
        &l4_config(&servers.iter().map(|s| s.0).collect::<Vec<_>>()),
        2,
    );
    let seq: Vec<String> = (0..30).map(|_| who(rw.listener(1))).collect();
    for w in seq.windows(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, ["a", "b", "c"], "{seq:?}");
    }
    for (_, n) in &servers {
        assert_eq!(n.load(Ordering::SeqCst), 10);
    }
}

#[test]
fn dead_server_is_skipped_without_failing_a_connection() {
    let (a, na) = name_server("a");
    let (b, nb) = name_server("b");
    let dead: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    let rw = Ringway::start(&l4_config(&[a, dead, b]), 2);
    for _ in 0..20 {
        let got = who(rw.listener(1));
        assert!(got == "a" || got == "b", "connection got {got:?}");
    }
    assert_eq!(na.load(Ordering::SeqCst) + nb.load(Ordering::SeqCst), 20);
}

/// A relayed connection that goes quiet gives its buffers back: the watchdog cancels both
/// pending reads after a second without traffic, and each direction then waits for readability
/// with no buffer. Traffic in either direction after such a spell, server first or client
/// first, must come through whole, cycle after cycle.
#[test]
fn a_quiet_connection_relays_whatever_comes_after_the_quiet() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let (go, push) = mpsc::channel::<Vec<u8>>();
    // The server echoes whatever it reads, and writes on its own when the test says so.
    let server = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        thread::spawn(move || {
            for msg in push {
                w.write_all(&msg).unwrap();
            }
        });
        let mut r = s;
        let mut echo = r.try_clone().unwrap();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            echo.write_all(&buf[..n]).unwrap();
        }
    });
    // A short body_timeout makes the relay's watchdog look every 500 ms; the quiet threshold
    // is one second.
    let cfg = l4_config(&[up]).replace(
        "balance = \"round_robin\"",
        "balance = \"round_robin\"\nbody_timeout = \"2s\"",
    );
    let rw = Ringway::start(&cfg, 2);
    let mut c = TcpStream::connect(rw.listener(1)).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let expect = |c: &mut TcpStream, want: &[u8]| {
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == want, "relayed bytes differ");
    };
    // The quiet spell is the input here, not a synchronisation: it must outlast the threshold
    // and a watchdog step, but stay under body_timeout, which would end the relay.
    let quiet = || thread::sleep(std::time::Duration::from_millis(1700));
    for round in 0..2u8 {
        c.write_all(b"hello").unwrap();
        expect(&mut c, b"hello");
        quiet();
        // The server speaks first after the quiet.
        let pushed: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 ^ round).collect();
        go.send(pushed.clone()).unwrap();
        expect(&mut c, &pushed);
        quiet();
        // Then the client: more than one buffer's worth, echoed back.
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8 ^ round).collect();
        c.write_all(&sent).unwrap();
        expect(&mut c, &sent);
    }
    // The client's EOF reaches the server, which ends; its close comes back as ours.
    drop(go);
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.join().unwrap();
}

/// A relay that has gone quiet holds no buffers: its RSS falls far below the two 32 KiB
/// buffers a busy one holds (69 KB each here, 4.3 KB once the worker has trimmed its free list), and
/// every relay still carries bytes afterwards.
#[test]
fn quiet_relays_give_their_buffers_back() {
    const N: usize = 1000;
    const QUIET_RELAY_BYTES_MAX: u64 = 12 * 1024;
    let legacy = std::env::var_os("RINGWAY_FORCE_LEGACY").is_some();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    // More than a relay buffer each way, so every page of both buffers is touched.
    const BURST: usize = 40 * 1024;
    // The server speaks first on every connection and keeps it; it never reads, so what the
    // clients send waits in its socket.
    let server = thread::spawn(move || {
        (0..=N)
            .map(|_| {
                let (mut s, _) = l.accept().unwrap();
                s.write_all(&[b'u'; BURST]).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    // THP off, so RSS moves in 4 KiB pages rather than in 2 MiB ones.
    let rw = Ringway::start_env(&l4_config(&[up]), 2, &[("MIMALLOC_ALLOW_THP", "0")]);
    let open = || {
        let mut c = TcpStream::connect(rw.listener(1)).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c.write_all(&[b'c'; BURST]).unwrap();
        let mut got = vec![0u8; BURST];
        c.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == b'u'));
        c
    };
    // Warm: the worker's heap and free list are in place before counting.
    let warm = open();
    let before = rw.rss_kib();
    let mut conns: Vec<TcpStream> = (0..N).map(|_| open()).collect();
    conns.push(warm);
    let busy = rw.rss_kib();
    let per_conn = |kib: u64| kib.saturating_sub(before) * 1024 / N as u64;
    eprintln!("RSS {before} kB -> {busy} kB with {N} relays just used");
    if !legacy {
        // The quiet spell is what is tested: the relays give their buffers back after a
        // second without bytes, the worker returns freed pages on its next trim tick.
        let quiet = wait_for(DEADLINE, "quiet relays to give their buffers back", || {
            let kib = rw.rss_kib();
            (per_conn(kib) < QUIET_RELAY_BYTES_MAX).then_some(kib)
        });
        eprintln!(
            "RSS {quiet} kB once quiet: {} bytes per relay",
            per_conn(quiet)
        );
    }
    // Every relay is still there and carries what comes after the quiet.
    let mut ups = server.join().unwrap();
    for s in &mut ups {
        s.write_all(b"later").unwrap();
    }
    for c in &mut conns {
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"later");
    }
}
