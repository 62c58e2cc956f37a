//! The cache's part in an exchange: look a request up when it is planned, answer from a stored
//! entry, and store a response on its way to the client. Only routes with `cache = "NAME"`
//! come here; every other route pays one branch.

use super::body::{self, write_result};
use super::client::ClientStream;
use super::head::{connection_line, write_response, OutFraming};
use super::state::CoreState;
use super::{Answer, Next, Plan, PlanAction};
use crate::cache::lock::{collapse, Collapse};
use crate::cache::store::request_value;
use crate::cache::{self, Cache, Entry, Freshness, LockGuard, Lookup, Pending, RequestUse};
use crate::deadline::{Phase, Watch};
use crate::gateway::ResponseEdits;
use crate::http::buf::ConnBuf;
use crate::http::chunked::ChunkedDecoder;
use crate::http::fmt::push_dec;
use crate::http::request::{Body, RequestHead, Version};
use crate::http::response::{self, ResponseHead};
use crate::telemetry::bump;
use crate::upstream::UpstreamConn;
use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Duration;

/// A body up to this size leaves in the same write as its head (copied); a larger one is sent
/// from the entry itself.
const COPY_BODY_MAX: usize = 64 * 1024;
/// Slots to parse a stored head with (an upstream head has at most 128 headers).
const HEAD_SLOTS: usize = 128;

/// A request's use of its route's cache, boxed so that a plan without one stays a null
/// pointer; dropped out of line (see `Drop`).
#[derive(Default)]
pub struct CacheSlot(Option<Box<CacheUse>>);

enum CacheUse {
    /// A fresh entry answers; `not_modified`: the client's validators match it (304).
    Hit {
        entry: Rc<Entry>,
        not_modified: bool,
    },
    /// Boxed on its own: a hit's slot, allocated on every hit, stays a few words.
    Upstream(Box<CacheCtx>),
}

impl CacheSlot {
    /// The request is on a cached route (one load and test: the response path asks it).
    #[inline(always)]
    pub(super) fn is_used(&self) -> bool {
        self.0.is_some()
    }

    /// `CacheCtx::plan_store` for a request that went upstream; out of line.
    #[cold]
    #[inline(never)]
    pub(super) fn plan_store(&self, head: &ResponseHead<'_>) -> Result<(), u16> {
        self.ctx().map_or(Ok(()), |c| c.plan_store(head))
    }

    /// What the request carries upstream, if it goes there from a cached route.
    pub(super) fn ctx(&self) -> Option<&CacheCtx> {
        match self.0.as_deref() {
            Some(CacheUse::Upstream(c)) => Some(c),
            _ => None,
        }
    }
}

impl Drop for CacheSlot {
    /// Every plan is dropped, and nearly all hold no cache use: the test stays inline and the
    /// drop of one goes out of line (the compiler's own drop glue, outlined, cost every
    /// request a call).
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(u) = self.0.take() {
            drop_use(u);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_use(u: Box<CacheUse>) {
    drop(u);
}

/// What planning did with a request on a cached route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A fresh entry answers it.
    Answered,
    /// It goes upstream.
    Forward,
    /// It goes upstream once its planned forwarding is adjusted (`adjust`): it waits for
    /// another request's fetch of its key first, or asks the upstream to validate an expired
    /// entry.
    Adjust,
}

impl Step {
    /// Adjusts the forwarding planned (`plan.action`, and the upstream head in `out`) when
    /// planning asked for it; one test on every other request.
    #[inline(always)]
    pub(super) fn apply(self, plan: &mut Plan, out: &mut Vec<u8>) {
        if self == Step::Adjust {
            adjust(plan, out);
        }
    }
}

#[cold]
#[inline(never)]
fn adjust(plan: &mut Plan, out: &mut Vec<u8>) {
    let Some(c) = plan.cache.ctx() else {
        return;
    };
    // A bodiless GET: the head ends the buffer, and the validators go before its blank line.
    if let Some(e) = &c.revalidating {
        if out.ends_with(b"\r\n\r\n") {
            let mut lines = Vec::new();
            if let Some(etag) = e.header(b"etag") {
                push_line(&mut lines, b"if-none-match", etag);
            }
            if let Some(date) = e.header(b"last-modified") {
                push_line(&mut lines, b"if-modified-since", date);
            }
            let at = out.len() - 2;
            out.splice(at..at, lines);
        }
    }
    if c.wait.is_some() {
        if let PlanAction::Forward(cluster) = plan.action {
            plan.action = Answer::CacheWait(cluster).into();
        }
    }
}

/// What a request on a cached route carries through its exchange when it goes upstream.
pub struct CacheCtx {
    cache: Rc<RefCell<Cache>>,
    key: Box<[u8]>,
    /// A GET whose response may be stored.
    store: bool,
    /// The request carried `Authorization`.
    authorized: bool,
    /// The request head as received: the values of the headers a response varies on.
    request: Box<[u8]>,
    /// The expired entry, kept to answer if the upstream fails within `use_stale`.
    stale: Option<Rc<Entry>>,
    /// Bytes of the route's own lines in `response_edits.extra`, when the status header
    /// follows them.
    own_extra: Option<usize>,
    /// Another request is fetching this key: wait for its answer first.
    wait: Option<Rc<Pending>>,
    /// This request fetches the key for the others waiting on it.
    lock: Option<LockGuard>,
    /// The expired entry whose validators went upstream (`revalidate`): a 304 refreshes it.
    revalidating: Option<Rc<Entry>>,
    /// Set when the response head allows storing (`plan_store`), taken to store it.
    store_plan: RefCell<Option<Stored>>,
}

/// What the cache does with the response head just read.
pub enum Stored {
    /// Store the response once its body is read.
    Body(StorePlan),
    /// The upstream validated the expired entry (304): answer with it, refreshed.
    Revalidated(Rc<Entry>),
}

/// What a response's head allowed to be stored, once its body is read.
pub struct StorePlan {
    status: u16,
    /// Head as stored, without `content-length` (added once the body's length is known) and
    /// without the final blank line.
    head: Vec<u8>,
    age: u64,
    lifetime: u64,
    vary: Vec<String>,
    stale_window: u64,
}

/// Looks a request on a cached route up: a fresh entry answers it (the plan says so).
/// Otherwise it goes upstream with a `CacheCtx`, marked MISS or EXPIRED (or BYPASS) for the
/// client, and the caller plans the forwarding (`Step::apply`).
#[inline(never)]
pub(super) fn plan_request(
    state: &CoreState,
    zone: usize,
    head: &RequestHead<'_>,
    tls: bool,
    plan: &mut Plan,
) -> Step {
    let cache_rc = &state.caches[zone];
    let mut c = cache_rc.borrow_mut();
    // Built in the cache's own buffer: a hit allocates nothing. The route's name leads it:
    // two routes that share a zone and tell requests for one URL apart (by a header, a method)
    // may send them to different upstreams, and one's answer must not serve the other.
    let mut key = std::mem::take(&mut c.key_buf);
    cache::write_key(
        &mut key,
        &state.config.routes[plan.route].name,
        if tls { "https" } else { "http" },
        head.host,
        head.path,
    );
    let step = plan_with_key(cache_rc, &mut c, &key, head, plan);
    c.key_buf = key;
    step
}

fn plan_with_key(
    cache_rc: &Rc<RefCell<Cache>>,
    c: &mut Cache,
    key: &[u8],
    head: &RequestHead<'_>,
    plan: &mut Plan,
) -> Step {
    let store = match cache::request_use(head.method, head.body != Body::None, head.headers) {
        RequestUse::Lookup { store } if !cache::policy::bypassed(&c.zone, head.headers) => {
            Some(store)
        }
        RequestUse::Invalidate => {
            c.remove(key);
            None
        }
        RequestUse::Lookup { .. } | RequestUse::Bypass => None,
    };
    let Some(store) = store else {
        mark(plan, c, "BYPASS");
        return Step::Forward;
    };
    let now = cache::now_s();
    let stale = match c.lookup(key, head.headers, now) {
        Lookup::Fresh(entry) => {
            bump(&c.stats.hits);
            let not_modified = cache::policy::not_modified(head.headers, &entry);
            plan.cache = CacheSlot(Some(Box::new(CacheUse::Hit {
                entry,
                not_modified,
            })));
            plan.action = Answer::Cached.into();
            return Step::Answered;
        }
        Lookup::Expired(e) => Some(e),
        Lookup::Miss => None,
    };
    bump(&c.stats.misses);
    let (mut wait, mut lock) = (None, None);
    if store && !c.zone.lock_timeout.is_zero() {
        match collapse(cache_rc, c, key) {
            Collapse::Wait(p) => wait = Some(p),
            Collapse::Fetch(g) => lock = Some(g),
        }
    }
    let own_extra = mark(plan, c, if stale.is_some() { "EXPIRED" } else { "MISS" });
    // Validators of our own only when the client sent none: its own go up as they are, and
    // the upstream's 304 to them is the client's.
    let client_validates = [&b"if-none-match"[..], b"if-modified-since"]
        .iter()
        .any(|n| {
            cache::policy::header_values(head.headers, n)
                .next()
                .is_some()
        });
    let revalidating = stale
        .as_ref()
        .filter(|_| store && c.zone.revalidate && !client_validates)
        .filter(|e| e.header(b"etag").is_some() || e.header(b"last-modified").is_some())
        .cloned();
    let step = if wait.is_some() || revalidating.is_some() {
        Step::Adjust
    } else {
        Step::Forward
    };
    plan.cache = CacheSlot(Some(Box::new(CacheUse::Upstream(Box::new(CacheCtx {
        cache: cache_rc.clone(),
        key: key.into(),
        store,
        authorized: cache::policy::header_values(head.headers, b"authorization")
            .next()
            .is_some(),
        request: head.raw.into(),
        stale: stale.filter(|e| e.freshness(now) == Freshness::StaleUsable),
        own_extra,
        wait,
        lock,
        revalidating,
        store_plan: RefCell::new(None),
    })))));
    step
}

/// Adds the status header to the response edits of a request going upstream; returns how
/// many bytes of `extra` were the route's own (None: the zone sends no status header).
fn mark(plan: &mut Plan, c: &Cache, word: &str) -> Option<usize> {
    let name = c.zone.status_header.as_ref()?;
    let edits = plan.response_edits.get_or_insert_with(|| {
        Box::new(ResponseEdits {
            drop: Rc::new([]),
            extra: Vec::new(),
        })
    });
    let own = edits.extra.len();
    push_line(&mut edits.extra, name.as_bytes(), word.as_bytes());
    Some(own)
}

fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Answers a planned hit.
pub(super) async fn answer_hit<C: ClientStream>(
    state: &CoreState,
    client: &mut C,
    cw: &Watch,
    out: &mut Vec<u8>,
    plan: &Plan,
    keep: bool,
) -> Next {
    let Some(CacheUse::Hit {
        entry,
        not_modified,
    }) = plan.cache.0.as_deref()
    else {
        return super::forward::local_error(state, client, cw, out, 500, "cache hit without entry")
            .await;
    };
    let not_modified = *not_modified;
    let reply = Reply {
        entry,
        status_name: status_header(state, plan),
        word: "HIT",
        edits: plan.response_edits.as_deref(),
        not_modified,
        keep,
    };
    serve(state, client, cw, out, plan, reply).await
}

/// The cache's status header on this request's route, read from the config the state was built
/// from (a zone carried across a reload has the same settings).
fn status_header<'s>(state: &'s CoreState, plan: &Plan) -> Option<&'s str> {
    let zone = state.config.routes[plan.route].cache?;
    state.config.caches[zone].status_header.as_deref()
}

/// An answer from a stored entry, as it is to be written.
struct Reply<'a> {
    entry: &'a Entry,
    /// The status header's name, and what it says.
    status_name: Option<&'a str>,
    word: &'a str,
    edits: Option<&'a ResponseEdits>,
    /// 304 without a body (the client's validators match).
    not_modified: bool,
    keep: bool,
}

/// Writes `entry` as the response: its head (with `Age`, the status header and the route's
/// response edits) and, unless HEAD or 304, its body.
async fn serve<C: ClientStream>(
    state: &CoreState,
    client: &mut C,
    cw: &Watch,
    out: &mut Vec<u8>,
    plan: &Plan,
    reply: Reply<'_>,
) -> Next {
    let Reply {
        entry,
        not_modified,
        keep,
        ..
    } = reply;
    if !write_head(out, plan, &reply) {
        return super::forward::local_error(state, client, cw, out, 500, "cache entry unreadable")
            .await;
    }
    state.worker.count_head(out);
    let send_timeout = state.config.http.send_timeout;
    let with_body = !plan.head_request && !not_modified && !entry.body.is_empty();
    if with_body && entry.body.len() <= COPY_BODY_MAX {
        out.extend_from_slice(&entry.body);
    }
    let mut res = body::write(client, out, cw, send_timeout).await;
    if res.is_ok() && with_body && entry.body.len() > COPY_BODY_MAX {
        cw.arm(send_timeout, Phase::Write);
        let (r, _) = client.write_all(entry.body.clone()).await;
        cw.disarm();
        res = write_result(r.map(|_| ()), cw);
    }
    match res {
        Ok(()) if keep => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// Writes the head of the answer from `entry` into `out`; false if the stored head does not
/// parse (never expected: Ringway wrote it).
fn write_head(out: &mut Vec<u8>, plan: &Plan, reply: &Reply<'_>) -> bool {
    let &Reply {
        entry,
        status_name,
        word,
        edits,
        not_modified,
        keep,
    } = reply;
    out.clear();
    if not_modified {
        out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n");
        for name in [
            &b"cache-control"[..],
            b"content-location",
            b"date",
            b"etag",
            b"expires",
            b"last-modified",
            b"vary",
        ] {
            if let Some(v) = entry.header(name) {
                push_line(out, name, v);
            }
        }
        if let Some(e) = edits {
            out.extend_from_slice(&e.extra);
        }
        out.extend_from_slice(connection_line(keep, plan.version));
    } else if edits.is_none() && keep && plan.version == Version::Http11 {
        // The common case: the head as stored.
        out.extend_from_slice(&entry.head[..entry.head.len() - 2]);
    } else {
        let mut slots = [MaybeUninit::uninit(); HEAD_SLOTS];
        let Ok(Some(head)) = response::parse(&entry.head, &mut slots, false, usize::MAX) else {
            return false;
        };
        write_response(out, &head, framing(&head, entry), keep, plan.version, edits);
        out.truncate(out.len() - 2);
    }
    out.extend_from_slice(b"age: ");
    push_dec(out, entry.age(cache::now_s()));
    out.extend_from_slice(b"\r\n");
    if let Some(name) = status_name {
        push_line(out, name.as_bytes(), word.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    true
}

/// How a stored head's body is framed for the client: its length, or none for a 204.
fn framing(head: &ResponseHead<'_>, entry: &Entry) -> OutFraming {
    if head.status == 204 {
        OutFraming::NoBody
    } else {
        OutFraming::Length(entry.body.len() as u64)
    }
}

impl CacheCtx {
    /// An expired entry may answer if the upstream fails.
    pub(super) fn has_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// Waits for another request's fetch of this key, if there is one, and answers from what
    /// it stored. `None`: go upstream.
    pub(super) async fn await_other<C: ClientStream>(
        &self,
        state: &CoreState,
        client: &mut C,
        cw: &Watch,
        out: &mut Vec<u8>,
        plan: &Plan,
    ) -> Option<Next> {
        let pending = self.wait.as_ref()?;
        let timeout = self.cache.borrow().zone.lock_timeout;
        let _ = monoio::time::timeout(timeout, pending.done()).await;
        let entry = {
            let mut slots = [MaybeUninit::uninit(); super::MAX_HEADER_SLOTS];
            let request = parse_request_headers(&self.request, &mut slots);
            let mut c = self.cache.borrow_mut();
            match c.lookup(&self.key, request, cache::now_s()) {
                Lookup::Fresh(e) => {
                    bump(&c.stats.hits);
                    e
                }
                _ => return None,
            }
        };
        Some(
            self.answer_from(state, client, cw, out, plan, &entry, "HIT")
                .await,
        )
    }

    /// Answers with the expired entry instead of an upstream failure (`status`), when the
    /// zone's `use_stale` allows. `None`: no stale entry to use.
    pub(super) async fn serve_stale<C: ClientStream>(
        &self,
        state: &CoreState,
        client: &mut C,
        cw: &Watch,
        out: &mut Vec<u8>,
        plan: &Plan,
        status: u16,
    ) -> Option<Next> {
        let entry = self.stale.as_ref().filter(|_| stale_covers(status))?;
        bump(&self.cache.borrow().stats.stale);
        Some(
            self.answer_from(state, client, cw, out, plan, entry, "STALE")
                .await,
        )
    }

    /// Answers from `entry` a request that was planned to go upstream: the route's own
    /// response edits apply, not the status line `mark` added for the upstream's answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer_from<C: ClientStream>(
        &self,
        state: &CoreState,
        client: &mut C,
        cw: &Watch,
        out: &mut Vec<u8>,
        plan: &Plan,
        entry: &Entry,
        word: &str,
    ) -> Next {
        let keep = plan.keep_alive && !state.worker.draining.get();
        let edits = self.own_edits(plan);
        let reply = Reply {
            entry,
            status_name: status_header(state, plan),
            word,
            edits: edits.as_ref().or(plan.response_edits.as_deref()),
            not_modified: false,
            keep,
        };
        serve(state, client, cw, out, plan, reply).await
    }

    /// The route's own response edits without the status line `mark` added (`None` when there
    /// was nothing to cut).
    fn own_edits(&self, plan: &Plan) -> Option<ResponseEdits> {
        let own = self.own_extra?;
        plan.response_edits.as_deref().map(|e| ResponseEdits {
            drop: e.drop.clone(),
            extra: e.extra[..own].to_vec(),
        })
    }

    /// Whether a response with this head is stored, and how (`take_store_plan`): decided while
    /// the head is parsed. A stale entry turns a 5xx into a failure that it answers instead
    /// (`Err`).
    pub(super) fn plan_store(&self, head: &ResponseHead<'_>) -> Result<(), u16> {
        if self.stale.is_some() && stale_covers(head.status) {
            return Err(head.status);
        }
        if head.status == 304 {
            if let Some(e) = &self.revalidating {
                self.refresh(e, head);
                return Ok(());
            }
        }
        if !self.store || head.close_delimited {
            return Ok(());
        }
        let c = self.cache.borrow();
        if matches!(head.body, Body::Length(n) if n > c.zone.max_entry_size) {
            return Ok(());
        }
        let Some(s) = cache::storable(&c.zone, head.status, head.headers, self.authorized) else {
            return Ok(());
        };
        // The stored head: hop-by-hop fields, `Age` and our own status header left out.
        let mut drop = vec!["age".to_string()];
        drop.extend(c.zone.status_header.clone());
        let edits = ResponseEdits {
            drop: drop.into(),
            extra: Vec::new(),
        };
        let mut stored = Vec::with_capacity(head.head_len + 32);
        write_response(
            &mut stored,
            head,
            OutFraming::Close,
            true,
            Version::Http11,
            Some(&edits),
        );
        stored.truncate(stored.len() - 2);
        *self.store_plan.borrow_mut() = Some(Stored::Body(StorePlan {
            status: head.status,
            head: stored,
            age: s.age,
            lifetime: s.lifetime,
            vary: s.vary,
            stale_window: s.stale_window,
        }));
        Ok(())
    }

    /// The upstream's 304 validated the expired entry: it is fresh again (for as long as the
    /// 304 says, or as long as it was), and answers this request.
    fn refresh(&self, e: &Rc<Entry>, head: &ResponseHead<'_>) {
        self.refresh_entry(e, head);
        // After the borrow above has ended, so the lock can take its key out of the map.
        if let Some(lock) = &self.lock {
            lock.release();
        }
    }

    fn refresh_entry(&self, e: &Rc<Entry>, head: &ResponseHead<'_>) {
        let mut c = self.cache.borrow_mut();
        let fresh = cache::policy::revalidated(
            &c.zone,
            e.status,
            head.headers,
            self.authorized,
            e.lifetime(),
        );
        let entry = match fresh {
            Some((lifetime, age)) => {
                c.insert(&self.key, e.refreshed(cache::now_s(), age, lifetime))
            }
            // Valid, but not to be kept any longer.
            None => {
                c.remove(&self.key);
                Rc::new(e.refreshed(cache::now_s(), 0, 0))
            }
        };
        bump(&c.stats.revalidated);
        *self.store_plan.borrow_mut() = Some(Stored::Revalidated(entry));
    }

    /// What `plan_store` decided for the response head just read.
    pub(super) fn take_store_plan(&self) -> Option<Stored> {
        self.store_plan.borrow_mut().take()
    }

    /// Reads the whole body into `ubuf` (behind `offset` bytes of head) when it fits the zone's
    /// entry size, and stores the response; the body stays in `ubuf` for the client. Any
    /// failure just leaves the response unstored: the relay after it meets the failure itself.
    /// A chunked body is decoded under the same extension and trailer limits as the relay's.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fill_and_store(
        &self,
        plan: StorePlan,
        ubuf: &mut ConnBuf,
        conn: &mut UpstreamConn,
        offset: usize,
        body: Body,
        timeout: Duration,
        http: &crate::config::Http,
    ) {
        let max = self.cache.borrow().zone.max_entry_size as usize;
        let body = match body {
            Body::None => Bytes::new(),
            Body::Length(n) => {
                let end = offset + n as usize;
                while ubuf.len() < end {
                    if !fill(ubuf, conn, end, timeout).await {
                        return;
                    }
                }
                Bytes::copy_from_slice(&ubuf.data()[offset..end])
            }
            Body::Chunked => {
                // Room for the framing of a body of `max` bytes in small chunks.
                let limit = offset + max + max / 4 + 16 * 1024;
                let mut dec = ChunkedDecoder::new(http.max_chunk_extension, http.max_trailer_size);
                let mut decoded = Vec::new();
                let mut at = offset;
                loop {
                    let Ok(used) = dec.decode(&ubuf.data()[at..], |d| decoded.extend_from_slice(d))
                    else {
                        return;
                    };
                    at += used;
                    if dec.is_done() {
                        break;
                    }
                    if decoded.len() > max || !fill(ubuf, conn, limit, timeout).await {
                        return;
                    }
                }
                if decoded.len() > max {
                    return;
                }
                Bytes::from(decoded)
            }
        };
        let mut head = plan.head;
        if plan.status != 204 {
            head.extend_from_slice(b"content-length: ");
            push_dec(&mut head, body.len() as u64);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let vary = {
            let mut slots = [MaybeUninit::uninit(); super::MAX_HEADER_SLOTS];
            let request = parse_request_headers(&self.request, &mut slots);
            plan.vary
                .into_iter()
                .map(|name| {
                    let value = request_value(request, name.as_bytes());
                    (name.into_boxed_str(), value.into_boxed_slice())
                })
                .collect()
        };
        let entry = Entry::new(
            plan.status,
            head.into(),
            body,
            vary,
            cache::now_s(),
            plan.age,
            plan.lifetime,
            plan.stale_window,
        );
        self.cache.borrow_mut().insert(&self.key, entry);
        // Requests waiting for this key can take it now, before it reaches this client.
        if let Some(lock) = &self.lock {
            lock.release();
        }
    }
}

/// The failures an expired entry answers for (nginx's `proxy_cache_use_stale error timeout
/// http_500 http_502 http_503 http_504`): Ringway's own 502, 503 and 504, and those statuses
/// and 500 from the upstream.
fn stale_covers(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// One more read from the upstream, up to `limit` bytes held; false when nothing more came.
async fn fill(
    ubuf: &mut ConnBuf,
    conn: &mut UpstreamConn,
    limit: usize,
    timeout: Duration,
) -> bool {
    if ubuf.len() >= limit {
        return false;
    }
    conn.watch.arm(timeout, Phase::Write);
    let res = ubuf.fill(&mut conn.stream, limit).await;
    conn.watch.disarm();
    matches!(res, Ok(n) if n > 0)
}

/// The headers of a request head as received (for the values a response varies on). Through
/// the request parser itself: a second caller of httparse's own would cost the request path
/// its inlining.
fn parse_request_headers<'a>(
    raw: &'a [u8],
    slots: &'a mut [MaybeUninit<httparse::Header<'a>>],
) -> &'a [httparse::Header<'a>] {
    let unlimited = crate::http::request::Limits {
        max_request_line: usize::MAX,
        max_head_size: usize::MAX,
    };
    match crate::http::request::parse(raw, slots, &unlimited) {
        Ok(Some(head)) => head.headers,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values a stored entry varies on come from the request head as received, parsed
    /// again; they must be what a lookup reads from the live request.
    #[test]
    fn request_headers_parse_again_from_the_raw_head() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding:  gzip \r\nX-T: 1\r\naccept-encoding: br\r\n\r\n";
        let mut slots = [MaybeUninit::uninit(); 8];
        let parsed = parse_request_headers(raw, &mut slots);
        assert_eq!(request_value(parsed, b"accept-encoding"), b"gzip, br");
        assert_eq!(request_value(parsed, b"x-t"), b"1");
        assert_eq!(request_value(parsed, b"absent"), b"");
    }
}
