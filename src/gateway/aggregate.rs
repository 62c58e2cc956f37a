//! Response aggregation: one client request becomes several upstream requests, sent concurrently
//! on the worker's own runtime (one future per part, polled together on the connection's task),
//! each with its own path template, deadline and size bound; the answers are merged into one JSON
//! object keyed by part name. A part that fails or times out is reported under `"errors"`, or
//! fails the whole response when the part is `required`.
//!
//! Parts use the worker's per-core cluster pools like forwarded requests (`connect`/`checkin`),
//! so aggregated calls reuse keep-alive connections too; a pooled connection found closed is
//! retried once on a fresh one (parts are idempotent reads by default).

use crate::config::{Aggregate, Part};
use crate::deadline::Watchdog;
use crate::gateway::counters::{bump, FilterCounters};
use crate::http::buf::{write_all_keep, ConnBuf};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::Body;
use crate::http::response;
use crate::upstream::{Cluster, ConnectError, Outcome as UpOutcome};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

const MAX_HEAD: usize = 64 * 1024;

/// The sub-requests of one aggregated request, heads already rendered.
pub struct Job {
    /// Route index, to find the `Aggregate` config again.
    pub route: usize,
    /// One complete request head per part, in `Aggregate::parts` order.
    pub heads: Vec<Vec<u8>>,
}

/// Why a part has no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartError {
    Timeout,
    Connect,
    /// Broken or oversized response, or the connection failed midway.
    Bad(&'static str),
    /// The upstream answered, with a non-2xx status.
    Status(u16),
}

impl PartError {
    fn describe(&self) -> Value {
        match self {
            PartError::Timeout => json!({"error": "timeout"}),
            PartError::Connect => json!({"error": "upstream connect failed"}),
            PartError::Bad(why) => json!({"error": why}),
            PartError::Status(s) => json!({"error": "upstream status", "status": s}),
        }
    }
}

/// A part's successful answer.
pub struct PartBody {
    pub body: Vec<u8>,
}

/// The merged answer: status and JSON body.
pub struct Merged {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Runs every part concurrently and merges the results.
pub async fn run(
    agg: &Aggregate,
    job: &Job,
    clusters: &[Cluster],
    counters: &FilterCounters,
    dog: &Watchdog,
) -> Merged {
    let futs: Vec<_> = agg
        .parts
        .iter()
        .zip(&job.heads)
        .map(|(part, head)| fetch_part(part, &clusters[part.upstream], head, dog))
        .collect();
    let results = join_all(futs).await;
    bump(&counters.aggregated);
    merge(&agg.parts, results, counters)
}

/// Builds the JSON document (pure, unit-tested).
pub fn merge(
    parts: &[Part],
    results: Vec<Result<PartBody, PartError>>,
    counters: &FilterCounters,
) -> Merged {
    let mut doc = Map::new();
    let mut errors = Map::new();
    for (part, res) in parts.iter().zip(results) {
        match res {
            Ok(b) => {
                // JSON parts are embedded as JSON; anything else as a string.
                let v = serde_json::from_slice::<Value>(&b.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&b.body).into_owned())
                });
                doc.insert(part.name.clone(), v);
            }
            Err(e) => {
                if e == PartError::Timeout {
                    bump(&counters.part_timeouts);
                } else {
                    bump(&counters.part_errors);
                }
                if part.required {
                    let status = if e == PartError::Timeout { 504 } else { 502 };
                    let mut d = e.describe();
                    d["part"] = Value::String(part.name.clone());
                    return Merged {
                        status,
                        body: serde_json::to_vec(&json!({ "error": d })).unwrap_or_default(),
                    };
                }
                doc.insert(part.name.clone(), Value::Null);
                errors.insert(part.name.clone(), e.describe());
            }
        }
    }
    if !errors.is_empty() {
        doc.insert("errors".to_string(), Value::Object(errors));
    }
    Merged {
        status: 200,
        body: serde_json::to_vec(&Value::Object(doc)).unwrap_or_default(),
    }
}

async fn fetch_part(
    part: &Part,
    cluster: &Cluster,
    head: &[u8],
    dog: &Watchdog,
) -> Result<PartBody, PartError> {
    // One timer per part (not per operation): aggregation is rare next to plain forwarding.
    match monoio::time::timeout(part.timeout, fetch_retry(part, cluster, head, dog)).await {
        Ok(r) => r,
        Err(_) => Err(PartError::Timeout),
    }
}

async fn fetch_retry(
    part: &Part,
    cluster: &Cluster,
    head: &[u8],
    dog: &Watchdog,
) -> Result<PartBody, PartError> {
    for attempt in 0..2 {
        match fetch_once(part, cluster, head, attempt == 0, dog).await {
            // Closed before any byte on a pooled connection: the pool held a dead one.
            Err(Attempt::Stale) if attempt == 0 => continue,
            Err(Attempt::Stale) => {
                return Err(PartError::Bad("upstream closed without a response"))
            }
            Err(Attempt::Failed(e)) => return Err(e),
            Ok(b) => return Ok(b),
        }
    }
    Err(PartError::Bad("upstream closed without a response"))
}

enum Attempt {
    Stale,
    Failed(PartError),
}

async fn fetch_once(
    part: &Part,
    cluster: &Cluster,
    head: &[u8],
    pooled: bool,
    dog: &Watchdog,
) -> Result<PartBody, Attempt> {
    // The same balancing, health and capacity rules as forwarded requests.
    let server = cluster
        .select(0, 0)
        .map_err(|_| Attempt::Failed(PartError::Connect))?;
    let Some(_inflight) = cluster.begin(server) else {
        return Err(Attempt::Failed(PartError::Connect));
    };
    let started = std::time::Instant::now();
    // Idempotent parts are retried on a stale pooled connection; others check it first.
    let verify = !matches!(
        part.method.as_str(),
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
    );
    let mut conn = match cluster.connect(server, pooled, verify, dog).await {
        Ok(c) => c,
        Err(ConnectError::Saturated) => return Err(Attempt::Failed(PartError::Connect)),
        Err(_) => {
            cluster.record(server, UpOutcome::Failure);
            return Err(Attempt::Failed(PartError::Connect));
        }
    };
    let reused = conn.reused;
    let mut req = head.to_vec();
    if write_all_keep(&mut conn.stream, &mut req).await.is_err() {
        return Err(if reused {
            Attempt::Stale
        } else {
            Attempt::Failed(PartError::Bad("upstream write failed"))
        });
    }
    let mut buf = ConnBuf::with_capacity(8192);
    let head_request = part.method == "HEAD";
    // Read the head.
    let (status, body, reusable) = loop {
        if !buf.is_empty() {
            let mut slots = [MaybeUninit::uninit(); 64];
            match response::parse(buf.data(), &mut slots, head_request, MAX_HEAD) {
                Ok(Some(h)) if h.status < 200 => {
                    let n = h.head_len;
                    buf.consume(n);
                    continue;
                }
                Ok(Some(h)) => {
                    let body = if h.close_delimited {
                        None
                    } else {
                        Some(h.body)
                    };
                    let r = (h.status, body, h.reusable);
                    let n = h.head_len;
                    buf.consume(n);
                    break r;
                }
                Ok(None) => {}
                Err(e) => return Err(Attempt::Failed(PartError::Bad(e.0))),
            }
        }
        let was_empty = buf.is_empty();
        match buf.fill(&mut conn.stream, MAX_HEAD).await {
            Ok(0) | Err(_) if was_empty && reused => return Err(Attempt::Stale),
            Ok(0) | Err(_) => {
                return Err(Attempt::Failed(PartError::Bad(
                    "upstream closed inside the response head",
                )))
            }
            Ok(_) => {}
        }
    };
    let max = part.max_size;
    let too_large = Attempt::Failed(PartError::Bad("part response too large"));
    let broken = || Attempt::Failed(PartError::Bad("upstream closed inside the body"));
    let mut out = Vec::new();
    let complete = match body {
        Some(Body::None) => true,
        Some(Body::Length(n)) => {
            if n > max as u64 {
                return Err(too_large);
            }
            let n = n as usize;
            while buf.len() < n {
                match buf.fill(&mut conn.stream, n).await {
                    Ok(0) | Err(_) => return Err(broken()),
                    Ok(_) => {}
                }
            }
            out.extend_from_slice(&buf.data()[..n]);
            buf.consume(n);
            true
        }
        Some(Body::Chunked) => {
            let mut dec = ChunkedDecoder::new(1024, 8 * 1024);
            loop {
                let mut over = false;
                let used = dec
                    .decode(buf.data(), |d| {
                        if out.len() + d.len() > max {
                            over = true;
                        } else {
                            out.extend_from_slice(d);
                        }
                    })
                    .map_err(|e| Attempt::Failed(PartError::Bad(e.0)))?;
                if over {
                    return Err(too_large);
                }
                buf.consume(used);
                if dec.is_done() {
                    break;
                }
                match buf.fill(&mut conn.stream, 64 * 1024).await {
                    Ok(0) | Err(_) => return Err(broken()),
                    Ok(_) => {}
                }
            }
            true
        }
        None => {
            // Delimited by close: read to the end, within the bound.
            loop {
                match buf.fill(&mut conn.stream, max + 1).await {
                    Ok(0) => break,
                    Err(_) => return Err(broken()),
                    Ok(_) if buf.len() > max => return Err(too_large),
                    Ok(_) => {}
                }
            }
            out.extend_from_slice(buf.data());
            false
        }
    };
    if complete && reusable && buf.is_empty() {
        cluster.checkin(conn);
    }
    let rtt = started.elapsed();
    cluster.record(
        server,
        if status >= 500 {
            UpOutcome::ServerError(rtt)
        } else {
            UpOutcome::Success(rtt)
        },
    );
    if !(200..300).contains(&status) {
        return Err(Attempt::Failed(PartError::Status(status)));
    }
    Ok(PartBody { body: out })
}

/// Polls every future until all are done; the outputs keep the input order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// The longest a whole aggregation can take (the slowest part's deadline).
pub fn deadline(agg: &Aggregate) -> Duration {
    agg.parts
        .iter()
        .map(|p| p.timeout)
        .max()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Template;

    fn part(name: &str, required: bool) -> Part {
        Part {
            name: name.into(),
            upstream: 0,
            path: Template::parse("/").unwrap(),
            method: "GET".into(),
            timeout: Duration::from_secs(1),
            required,
            max_size: 1024,
        }
    }

    #[test]
    fn merges_and_reports() {
        let c = FilterCounters::default();
        let parts = [part("a", false), part("b", false), part("c", false)];
        let m = merge(
            &parts,
            vec![
                Ok(PartBody {
                    body: br#"{"x":1}"#.to_vec(),
                }),
                Ok(PartBody {
                    body: b"plain".to_vec(),
                }),
                Err(PartError::Timeout),
            ],
            &c,
        );
        assert_eq!(m.status, 200);
        let v: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(v["a"]["x"], 1);
        assert_eq!(v["b"], "plain");
        assert_eq!(v["c"], Value::Null);
        assert_eq!(v["errors"]["c"]["error"], "timeout");
        assert_eq!(c.part_timeouts.get(), 1);
    }

    #[test]
    fn required_part_fails_all() {
        let c = FilterCounters::default();
        let parts = [part("a", false), part("b", true)];
        let m = merge(
            &parts,
            vec![
                Ok(PartBody {
                    body: b"1".to_vec(),
                }),
                Err(PartError::Status(500)),
            ],
            &c,
        );
        assert_eq!(m.status, 502);
        let v: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(v["error"]["part"], "b");
        assert_eq!(v["error"]["status"], 500);
    }

    #[test]
    fn join_keeps_order() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let f = |ms: u64, v: u32| async move {
                monoio::time::sleep(Duration::from_millis(ms)).await;
                v
            };
            join_all(vec![f(30, 1), f(1, 2), f(10, 3)]).await
        });
        assert_eq!(out, vec![1, 2, 3]);
    }
}
