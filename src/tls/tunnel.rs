//! The tunnel of an upgraded TLS client connection (a WebSocket over https, after its 101):
//! what the client sends is decrypted on its way upstream and what the upstream sends is
//! encrypted on its way back, both directions at once on two halves of the socket, which
//! share the connection's rustls state (borrowed only between awaits).

use super::stream::TlsClient;
use crate::proxy::state::WorkerCtx;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Canceller, Splitable};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::net::TcpStream;
use rustls::ServerConnection;
use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// One TLS record and its header: what one receive asks for.
const CIPHER_BUF: usize = 16 * 1024 + 5;
const PLAIN_BUF: usize = 16 * 1024;

/// Relays between the TLS client `c` and `upstream` until both directions end or neither
/// moved for `idle`; returns the bytes the client was sent (before encryption).
pub async fn tunnel(
    c: &mut TlsClient,
    upstream: TcpStream,
    _worker: &WorkerCtx,
    idle: Duration,
) -> u64 {
    let Some(tcp) = crate::proxy::upgrade::dup_socket(c) else {
        return 0;
    };
    let (mut cr, mut cw) = tcp.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    // Ciphertext received before the tunnel that rustls has not taken yet.
    let (pending, eof) = c.take_unread();
    let conn = RefCell::new(c.connection());
    let activity = Cell::new(Instant::now());
    let sent = Cell::new(0);
    let both = async {
        monoio::join!(
            from_client(&conn, &mut cr, &mut uw, pending, eof, &activity),
            to_client(&conn, &mut ur, &mut cw, &activity, &sent),
        );
    };
    // Nothing here to cancel when quiet: the watchdog only keeps the idle time.
    let quiet = RefCell::new(Canceller::new());
    monoio::select! {
        _ = both => {}
        _ = crate::l4::watchdog(&activity, idle, &quiet) => {}
    }
    sent.get()
}

/// Client to upstream: receives ciphertext, lets rustls decrypt it, writes the plaintext.
/// Ends at the client's close_notify or EOF (then half-closes the upstream) or an error.
async fn from_client(
    conn: &RefCell<&mut ServerConnection>,
    r: &mut TcpOwnedReadHalf,
    w: &mut TcpOwnedWriteHalf,
    mut cipher: Vec<u8>,
    mut eof: bool,
    activity: &Cell<Instant>,
) {
    let mut plain = vec![0u8; PLAIN_BUF];
    // Bytes of `cipher` rustls has taken.
    let mut taken = 0;
    'relay: loop {
        let got = conn.borrow_mut().reader().read(&mut plain);
        match got {
            Ok(0) => break,
            Ok(n) => {
                // Written as a whole Vec, not a slice of one: the plain path's response write
                // is the only caller of the socket's write for slices, and keeps it inlined.
                plain.truncate(n);
                let (res, b) = w.write_all(plain).await;
                plain = b;
                plain.resize(PLAIN_BUF, 0);
                if res.is_err() {
                    break;
                }
                activity.set(Instant::now());
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !eof => {}
            // Closed without close_notify, a protocol error, or EOF with nothing left.
            Err(_) => break,
        }
        if taken == cipher.len() {
            cipher.clear();
            cipher.reserve(CIPHER_BUF);
            taken = 0;
            let (res, b) = r.read(cipher).await;
            cipher = b;
            match res {
                Ok(0) => {
                    eof = true;
                    let mut c = conn.borrow_mut();
                    // Tells rustls the stream ended, so its reader says whether cleanly.
                    if c.read_tls(&mut io::empty()).is_err() || c.process_new_packets().is_err() {
                        break;
                    }
                    continue;
                }
                Ok(_) => activity.set(Instant::now()),
                Err(_) => break,
            }
        }
        let mut c = conn.borrow_mut();
        while taken < cipher.len() && c.wants_read() {
            let mut rest = &cipher[taken..];
            match c.read_tls(&mut rest) {
                Ok(n) => taken += n,
                Err(_) => break 'relay,
            }
            if c.process_new_packets().is_err() {
                break 'relay;
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Upstream to client: reads plaintext, has rustls encrypt it, sends the records. At the
/// upstream's EOF it sends close_notify, then the FIN; after an upstream error only the FIN,
/// so the client can tell the truncation.
async fn to_client(
    conn: &RefCell<&mut ServerConnection>,
    r: &mut TcpOwnedReadHalf,
    w: &mut TcpOwnedWriteHalf,
    activity: &Cell<Instant>,
    sent: &Cell<u64>,
) {
    let mut plain = Vec::with_capacity(PLAIN_BUF);
    let mut records = Vec::new();
    loop {
        plain.clear();
        let (res, b) = r.read(plain).await;
        plain = b;
        let n = match res {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
        };
        activity.set(Instant::now());
        if encrypt(conn, &plain[..n], &mut records).is_err() {
            return;
        }
        let (res, b) = w.write_all(std::mem::take(&mut records)).await;
        records = b;
        records.clear();
        if res.is_err() {
            return;
        }
        sent.set(sent.get() + n as u64);
        activity.set(Instant::now());
    }
    {
        let mut c = conn.borrow_mut();
        c.send_close_notify();
        while c.wants_write() {
            if c.write_tls(&mut records).is_err() {
                break;
            }
        }
    }
    if !records.is_empty() {
        let _ = w.write_all(records).await;
    }
    let _ = w.shutdown().await;
}

/// Frames `plain` into records appended to `out`, with anything rustls had queued before
/// (a reply to a key update the other direction read).
fn encrypt(
    conn: &RefCell<&mut ServerConnection>,
    mut plain: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut c = conn.borrow_mut();
    loop {
        // rustls takes up to its buffer limit; what it took is drained into `out` before
        // the rest is offered.
        let n = io::Write::write(&mut c.writer(), plain)?;
        plain = &plain[n..];
        while c.wants_write() {
            c.write_tls(out)?;
        }
        if plain.is_empty() {
            return Ok(());
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
}
