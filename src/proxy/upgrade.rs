//! WebSockets (the HTTP/1.1 Upgrade to `websocket`): the request's offer goes upstream, and
//! after the upstream's 101 Switching Protocols the two connections become a tunnel that
//! passes bytes both ways until both sides end it or it idles past the upstream's
//! `tunnel_timeout`. No other protocol is offered upstream: a tunnel to anything else (h2c
//! above all) would carry requests that no route, auth or rate limit of Ringway's ever sees.

use super::body;
use super::client::ClientStream;
use super::state::CoreState;
use super::{Next, Plan, PlanAction};
use crate::deadline::Watch;
use crate::http::buf::ConnBuf;
use crate::http::request::{Body, RequestHead, Version};
use crate::upstream::UpstreamConn;
use httparse::Header;

/// Offers the client's upgrade upstream when it is a WebSocket handshake (RFC 6455 §4.1: a
/// bodiless HTTP/1.1 GET offering `websocket`), forwarded, and not on a cached route. `out`
/// holds the upstream head, which loses `Upgrade` and `Connection` like every hop-by-hop
/// header; they are put back here. Otherwise the offer is dropped and the upstream answers the
/// request as a plain one, as it must when an intermediary does not pass the offer on (RFC
/// 9110 §7.8).
#[cold]
#[inline(never)]
pub(super) fn offer(plan: &mut Plan, head: &RequestHead<'_>, out: &mut Vec<u8>) {
    if !matches!(plan.action, PlanAction::Forward(_))
        || plan.cache.is_used()
        || head.version != Version::Http11
        || head.body != Body::None
        || head.method != "GET"
        || !names_websocket(head.headers)
    {
        return;
    }
    // `out` ends with the head's blank line.
    out.truncate(out.len() - 2);
    out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
    plan.upgrade = true;
}

/// The head's Upgrade header offers (or, in a 101, names) exactly `websocket`.
pub(super) fn names_websocket(headers: &[Header<'_>]) -> bool {
    let mut upgrades = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"));
    matches!(
        (upgrades.next(), upgrades.next()),
        (Some(h), None) if h.value.trim_ascii().eq_ignore_ascii_case(b"websocket")
    )
}

/// After the upstream's 101: sends the client the 101 head and whatever the upstream sent
/// after it (`ubuf`), sends the upstream whatever the client sent after its request head
/// (`rbuf`), then relays both ways until the tunnel ends. The client connection closes after.
pub(super) async fn tunnel<C: ClientStream>(
    state: &CoreState,
    client: &mut C,
    cw: &Watch,
    ubuf: &mut ConnBuf,
    rbuf: &mut ConnBuf,
    conn: UpstreamConn,
    cfg: &crate::config::Upstream,
) -> Next {
    // Through `body::write`, as every other answer here: a call of monoio's `write_all` of
    // its own would cost the plain path that function's inlining.
    let mut to_client = ubuf.data().to_vec();
    // The exchange's buffer goes back now: a tunnel may last hours, and keeps its own.
    let ubuf = std::mem::replace(ubuf, ConnBuf::from_vec(Vec::new()));
    state.worker.give_buf(ubuf.into_vec());
    if body::write(client, &mut to_client, cw, state.config.http.send_timeout)
        .await
        .is_err()
    {
        return Next::Close;
    }
    let UpstreamConn {
        mut stream, watch, ..
    } = conn;
    if !rbuf.is_empty() {
        let mut early = rbuf.data().to_vec();
        rbuf.clear();
        if body::write(&mut stream, &mut early, &watch, cfg.body_timeout)
            .await
            .is_err()
        {
            return Next::Close;
        }
    }
    // From here the tunnel keeps its own idle time; no deadline may shut either socket.
    drop(watch);
    client
        .tunnel(stream, &state.worker, cfg.tunnel_timeout)
        .await;
    Next::Close
}

/// A second descriptor of the client's socket, as a stream of its own (a tunnel takes its
/// streams by value; the connection's task keeps the first). None if the process is out of
/// descriptors: the tunnel then ends at once.
pub(crate) fn dup_socket(tcp: &impl std::os::fd::AsRawFd) -> Option<monoio::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup(2) of a descriptor the caller keeps open; the result is checked.
    let fd = unsafe { libc::fcntl(tcp.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor of a connected TCP socket, owned by nothing else.
    let std = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    monoio::net::TcpStream::from_std(std).ok()
}
