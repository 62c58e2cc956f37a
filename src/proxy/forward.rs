//! One proxied exchange: pick a server, check out (or open) a connection, send the head and
//! stream the body, read the response head, stream the response back, and return the
//! connection to the pool only when its state is certain.

use super::body::{self, BodyError, Deadlines, Encode, Failure, Side};
use super::head::{write_response, OutFraming};
use super::state::CoreState;
use super::{Next, Plan};
use crate::http::buf::{write_all_keep, write_all_reuse, ConnBuf};
use crate::http::request::{Body, Version};
use crate::http::response;
use crate::http::status::{write_error, CONTINUE_100};
use crate::upstream::{Cluster, ConnectError, UpstreamConn};
use monoio::net::TcpStream;
use monoio::time::timeout;
use std::mem::MaybeUninit;

/// Upstream response heads larger than this are refused (502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const RESPONSE_HEADER_SLOTS: usize = 128;

/// What the response head told us, kept after the head's bytes are consumed.
struct ResponsePlan {
    /// How the upstream delimits the body.
    body: Body,
    framing: OutFraming,
    encode: Encode,
    /// The upstream connection may serve another request once the body is read.
    reusable: bool,
    /// The client connection stays open after this response.
    keep: bool,
}

enum HeadError {
    /// Closed or reset before a single byte of response: a stale pooled connection looks so.
    Empty,
    Io,
    Timeout,
    Bad(&'static str),
}

/// Runs the exchange; `out` holds the upstream request head on entry and is reused.
pub async fn forward(
    state: &CoreState,
    cluster_idx: usize,
    client: &mut TcpStream,
    rbuf: &mut ConnBuf,
    out: &mut Vec<u8>,
    plan: &Plan,
) -> Next {
    let cluster = &state.clusters[cluster_idx];
    let mut body_left = plan.body;
    // A body already received in full travels in the same write as the head and can be resent.
    if let Body::Length(n) = plan.body {
        if rbuf.len() as u64 >= n {
            out.extend_from_slice(&rbuf.data()[..n as usize]);
            rbuf.consume(n as usize);
            body_left = Body::None;
        }
    }
    let resendable = body_left == Body::None;
    let mut ubuf = ConnBuf::from_vec(state.worker.take_buf(16 * 1024));
    let next = exchange(
        state, cluster, client, rbuf, &mut ubuf, out, plan, body_left, resendable,
    )
    .await;
    state.worker.give_buf(ubuf.into_vec());
    next
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    state: &CoreState,
    cluster: &Cluster,
    client: &mut TcpStream,
    rbuf: &mut ConnBuf,
    ubuf: &mut ConnBuf,
    out: &mut Vec<u8>,
    plan: &Plan,
    body_left: Body,
    resendable: bool,
) -> Next {
    let cfg = &cluster.cfg;
    let mut attempt = 0;
    let (mut conn, resp) = loop {
        attempt += 1;
        // A retry always takes a fresh connection: the pooled one just proved stale.
        let Some(server) = cluster.pick() else {
            return local_error(client, out, 503, "no upstream server available").await;
        };
        let mut conn = match cluster.connect(server, attempt == 1).await {
            Ok(c) => c,
            Err(ConnectError::Timeout) => {
                return local_error(client, out, 504, "upstream connect timed out").await
            }
            Err(ConnectError::Refused(_)) | Err(ConnectError::NoServer) => {
                return local_error(client, out, 502, "upstream connect failed").await
            }
        };
        let retry_ok = conn.reused && attempt == 1 && resendable;
        if write_all_keep(&mut conn.stream, out).await.is_err() {
            // Nothing reached a live upstream: any method may be sent again.
            if retry_ok {
                continue;
            }
            return local_error(client, out, 502, "upstream write failed").await;
        }
        if body_left != Body::None {
            if let Some(next) = send_body(
                state,
                cfg.body_timeout,
                client,
                rbuf,
                &mut conn,
                out,
                plan,
                body_left,
            )
            .await
            {
                return next;
            }
        }
        ubuf.clear();
        let keep_wanted = plan.keep_alive && !state.worker.draining.get();
        match read_response_head(
            ubuf,
            &mut conn,
            plan,
            cfg.response_timeout,
            out,
            keep_wanted,
        )
        .await
        {
            Ok(resp) => break (conn, resp),
            // `out` still holds the request: read_response_head replaces it only on success.
            Err(HeadError::Empty) if retry_ok && plan.idempotent => continue,
            Err(HeadError::Timeout) => {
                return local_error(client, out, 504, "upstream response timed out").await
            }
            Err(HeadError::Empty) | Err(HeadError::Io) => {
                return local_error(client, out, 502, "upstream closed without a response").await
            }
            Err(HeadError::Bad(why)) => return local_error(client, out, 502, why).await,
        }
    };

    let http = &state.config.http;

    let client_deadlines = Deadlines {
        read: cfg.body_timeout,
        write: http.send_timeout,
    };
    let body_result = match resp.framing {
        OutFraming::NoBody => write_client(client, out, http.send_timeout).await,
        OutFraming::Length(n) if ubuf.len() as u64 >= n => {
            // The whole body is here: one write for head and body.
            out.extend_from_slice(&ubuf.data()[..n as usize]);
            ubuf.consume(n as usize);
            write_client(client, out, http.send_timeout).await
        }
        OutFraming::Length(n) => match write_client(client, out, http.send_timeout).await {
            Ok(()) => body::copy_length(&mut conn.stream, ubuf, client, n, &client_deadlines).await,
            Err(e) => Err(e),
        },
        OutFraming::Chunked | OutFraming::Close => {
            match write_client(client, out, http.send_timeout).await {
                Ok(()) if resp.body == Body::Chunked => {
                    body::copy_chunked(
                        &mut conn.stream,
                        ubuf,
                        client,
                        resp.encode,
                        out,
                        u64::MAX,
                        &client_deadlines,
                    )
                    .await
                }
                Ok(()) => {
                    body::copy_to_eof(
                        &mut conn.stream,
                        ubuf,
                        client,
                        resp.encode,
                        out,
                        &client_deadlines,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        }
    };
    match body_result {
        Ok(()) => {
            if resp.reusable && ubuf.is_empty() {
                cluster.checkin(conn);
            }
            if resp.keep {
                Next::KeepAlive
            } else {
                Next::Close
            }
        }
        // Head already sent: the only honest signal left is closing the client connection.
        Err(_) => Next::Close,
    }
}

/// Streams the rest of the request body upstream. `Some(next)` means the exchange ended here.
#[allow(clippy::too_many_arguments)]
async fn send_body(
    state: &CoreState,
    upstream_write_timeout: std::time::Duration,
    client: &mut TcpStream,
    rbuf: &mut ConnBuf,
    conn: &mut UpstreamConn,
    out: &mut Vec<u8>,
    plan: &Plan,
    body_left: Body,
) -> Option<Next> {
    let http = &state.config.http;
    if plan.expect_continue && rbuf.is_empty() {
        out.clear();
        out.extend_from_slice(CONTINUE_100);
        if write_client(client, out, http.send_timeout).await.is_err() {
            return Some(Next::Close);
        }
    }
    let deadlines = Deadlines {
        read: http.body_timeout,
        write: upstream_write_timeout,
    };
    out.clear();
    let res = match body_left {
        Body::Length(n) => body::copy_length(client, rbuf, &mut conn.stream, n, &deadlines).await,
        Body::Chunked => {
            body::copy_chunked(
                client,
                rbuf,
                &mut conn.stream,
                Encode::Chunked,
                out,
                http.max_body_size,
                &deadlines,
            )
            .await
        }
        Body::None => Ok(()),
    };
    match res {
        Ok(()) => None,
        Err(BodyError {
            side: Side::Src,
            failure: Failure::TooLarge,
        }) => Some(local_error(client, out, 413, "request body too large").await),
        Err(BodyError {
            side: Side::Src,
            failure: Failure::Framing(why),
        }) => Some(local_error(client, out, 400, why).await),
        Err(BodyError {
            side: Side::Src,
            failure: Failure::Timeout,
        }) => Some(local_error(client, out, 408, "request body timed out").await),
        // The client went away mid-body: nobody is left to answer.
        Err(BodyError {
            side: Side::Src, ..
        }) => Some(Next::Close),
        Err(BodyError {
            side: Side::Dst, ..
        }) => Some(
            local_error(
                client,
                out,
                502,
                "upstream stopped reading the request body",
            )
            .await,
        ),
    }
}

/// Reads the upstream's final (non-1xx) response head, consumes it from `ubuf` and writes the
/// client's response head into `out` (which held the request until then, for a retry).
async fn read_response_head(
    ubuf: &mut ConnBuf,
    conn: &mut UpstreamConn,
    plan: &Plan,
    wait: std::time::Duration,
    out: &mut Vec<u8>,
    keep_wanted: bool,
) -> Result<ResponsePlan, HeadError> {
    let deadline = monoio::time::Instant::now() + wait;
    let mut received_any = false;
    loop {
        if !ubuf.is_empty() {
            let mut slots = [MaybeUninit::uninit(); RESPONSE_HEADER_SLOTS];
            match response::parse(
                ubuf.data(),
                &mut slots,
                plan.head_request,
                MAX_RESPONSE_HEAD,
            ) {
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    // Interim responses (100 Continue, 103 Early Hints) are not relayed: Ringway
                    // answers Expect itself.
                    let n = head.head_len;
                    ubuf.consume(n);
                    continue;
                }
                Ok(Some(head)) if head.status == 101 => {
                    return Err(HeadError::Bad("upstream switched protocols unasked"))
                }
                Ok(Some(head)) => {
                    let mut keep = keep_wanted;
                    let (framing, encode) = match (head.body, head.close_delimited, plan.version) {
                        (Body::Length(n), _, _) => (OutFraming::Length(n), Encode::Raw),
                        (Body::Chunked, _, Version::Http11)
                        | (Body::None, true, Version::Http11) => {
                            (OutFraming::Chunked, Encode::Chunked)
                        }
                        // An HTTP/1.0 client cannot take chunked: the close delimits the body.
                        (Body::Chunked, _, Version::Http10)
                        | (Body::None, true, Version::Http10) => {
                            keep = false;
                            (OutFraming::Close, Encode::Raw)
                        }
                        (Body::None, false, _) => (OutFraming::NoBody, Encode::Raw),
                    };
                    out.clear();
                    write_response(out, &head, framing, keep, plan.version);
                    let plan = ResponsePlan {
                        body: head.body,
                        framing,
                        encode,
                        reusable: head.reusable,
                        keep,
                    };
                    let n = head.head_len;
                    ubuf.consume(n);
                    return Ok(plan);
                }
                Ok(None) => {}
                Err(e) => return Err(HeadError::Bad(e.0)),
            }
        }
        match monoio::time::timeout_at(deadline, ubuf.fill(&mut conn.stream, MAX_RESPONSE_HEAD))
            .await
        {
            Ok(Ok(0)) if !received_any => return Err(HeadError::Empty),
            Ok(Ok(0)) => return Err(HeadError::Bad("upstream closed inside the response head")),
            Ok(Ok(_)) => received_any = true,
            Ok(Err(_)) if !received_any => return Err(HeadError::Empty),
            Ok(Err(_)) => return Err(HeadError::Io),
            Err(_) => return Err(HeadError::Timeout),
        }
    }
}

async fn write_client(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    send_timeout: std::time::Duration,
) -> Result<(), BodyError> {
    match timeout(send_timeout, write_all_reuse(client, out)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(BodyError {
            side: Side::Dst,
            failure: Failure::Io,
        }),
        Err(_) => Err(BodyError {
            side: Side::Dst,
            failure: Failure::Timeout,
        }),
    }
}

/// Answers the client with an error of Ringway's own and closes: after a failed exchange the
/// request body may be half-read, so the connection's framing is no longer certain.
pub async fn local_error(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    why: &str,
) -> Next {
    out.clear();
    write_error(out, status, why, true);
    let _ = timeout(
        std::time::Duration::from_secs(5),
        write_all_reuse(client, out),
    )
    .await;
    Next::Close
}
