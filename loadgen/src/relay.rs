//! `loadgen relay`: the floor a proxy cannot go below on this machine. A featureless HTTP/1.1
//! relay on the same runtime and ring setup as Ringway: one upstream connection per client
//! connection, request and response heads forwarded byte for byte, the response framed by
//! Content-Length only. No routing, no header rewriting, no pool, no timeouts, no limits: it
//! exists so `bench` can show how much of a proxy's CPU per request is the machine's, not the
//! proxy's. Body-less requests only (what `bench` sends); anything else closes the connection.

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::runtime;

const BUF: usize = 16 * 1024;

/// Runs `relay` (on monoio) or, with `raw`, `raw-relay` (io_uring by hand, `crate::raw_relay`,
/// with its kernel variants) until killed.
pub fn relay(
    raw: Option<crate::raw_relay::Knobs>,
    bind: SocketAddr,
    upstreams: Vec<SocketAddr>,
    threads: usize,
    cpus: Option<Vec<usize>>,
) -> Result<(), String> {
    let listener = crate::serve::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener: {e}"))?;
    let handles = if let Some(knobs) = raw {
        crate::raw_relay::spawn(listener, upstreams, threads, cpus.as_deref(), knobs)?
    } else {
        // The same ring setup as Ringway's workers, so the floor is comparable. Set before any
        // thread starts.
        if std::env::var_os("LOADGEN_URING").is_none() {
            std::env::set_var("LOADGEN_URING", "coop");
        }
        let upstreams: &'static [SocketAddr] = Vec::leak(upstreams);
        crate::serve::spawn_accepters(
            listener,
            threads,
            cpus.as_deref(),
            "relay",
            move |l, cpu| runtime::run_pinned(cpu, 1024, || accept_loop(l, upstreams)),
        )?
    };
    crate::serve::announce(local);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

async fn accept_loop(l: std::net::TcpListener, upstreams: &'static [SocketAddr]) {
    let Ok(listener) = TcpListener::from_std(l) else {
        eprintln!("error: listener");
        return;
    };
    let mut next = 0;
    while let Ok((s, _)) = listener.accept().await {
        let _ = s.set_nodelay(true);
        monoio::spawn(connection(s, upstreams[next % upstreams.len()]));
        next += 1;
    }
}

/// End of a head (after its blank line) in `buf`, searching from `from`.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| from + p + 4)
}

/// Where a response ends, as both floor relays find it: Content-Length only.
pub(crate) enum Framing {
    Partial,
    /// No usable Content-Length: a relay cannot find the end of the response.
    Unframed,
    /// Head plus body, in bytes.
    Length(u64),
}

/// Framing of the response starting at `buf[0]` (both relays read it so).
pub(crate) fn response_len(buf: &[u8]) -> Framing {
    let mut slots = [MaybeUninit::uninit(); 64];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(head)) => {
            let body = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()
                });
            match body.and_then(|b| b.checked_add(head as u64)) {
                Some(total) => Framing::Length(total),
                None => Framing::Unframed,
            }
        }
        Ok(httparse::Status::Partial) => Framing::Partial,
        Err(_) => Framing::Unframed,
    }
}

/// Appends one read's worth to `buf`; false on end of stream or error.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let len = buf.len();
    let (res, b) = s.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = b.into_inner();
    matches!(res, Ok(n) if n > 0)
}

async fn connection(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut up) = TcpStream::connect_addr(upstream).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let mut cbuf: Vec<u8> = Vec::with_capacity(BUF);
    let mut ubuf: Vec<u8> = Vec::with_capacity(BUF);
    loop {
        // One request head from the client, forwarded as is.
        let req_len = loop {
            if let Some(n) = head_end(&cbuf, 0) {
                break n;
            }
            if cbuf.len() == cbuf.capacity() || !read_more(&mut client, &mut cbuf).await {
                return;
            }
        };
        let rest = cbuf.split_off(req_len);
        let (res, sent) = up.write_all(cbuf).await;
        cbuf = sent;
        cbuf.clear();
        cbuf.extend_from_slice(&rest);
        if res.is_err() {
            return;
        }
        // The response: head plus Content-Length body, relayed as is.
        let total = loop {
            match response_len(&ubuf) {
                Framing::Length(n) => match usize::try_from(n) {
                    Ok(n) => break n,
                    Err(_) => return,
                },
                Framing::Unframed => return,
                Framing::Partial => {}
            }
            if ubuf.len() == ubuf.capacity() || !read_more(&mut up, &mut ubuf).await {
                return;
            }
        };
        while ubuf.len() < total {
            if ubuf.len() == ubuf.capacity() {
                ubuf.reserve(total - ubuf.len());
            }
            if !read_more(&mut up, &mut ubuf).await {
                return;
            }
        }
        if ubuf.len() != total {
            return;
        }
        let (res, sent) = client.write_all(ubuf).await;
        ubuf = sent;
        ubuf.clear();
        if res.is_err() {
            return;
        }
    }
}
