//! The load generator run: one pinned runtime per thread, connections spread over them, a common
//! start instant, per-second interval reports to the main thread, and the merged result.

mod conn;
mod dial;
mod schedule;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use monoio_rustls::TlsConnector;

pub use dial::{server_name, tls_config};
use dial::{Dial, PlainDial, TlsDial};
use schedule::{Budget, Dispatch, Timetable};

use crate::runtime;
use crate::stats::{new_histogram, Counters, ThreadStats};
use crate::target::{smooth_wheel, Origin};

/// Everything a run needs, fixed before the first thread starts.
pub struct RunConfig {
    pub origins: Vec<Origin>,
    pub connections: usize,
    pub threads: usize,
    pub cpus: Option<Vec<usize>>,
    pub pipeline: usize,
    /// Open loop at this many requests per second; closed loop when None.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a runtime thread's connections share. Single-threaded: `Rc`, `Cell`, `RefCell`.
pub struct ThreadCtx {
    pub cfg: &'static RunConfig,
    /// Open loop only: this thread's queue of due requests.
    pub queue: Option<Rc<Dispatch>>,
    /// Open loop only: when this thread last sent a request.
    pub last_send: Cell<Option<Instant>>,
    pub stats: RefCell<ThreadStats>,
    pub budget: Budget,
    pub warmup_end: Instant,
    pub end: Option<Instant>,
}

/// One closed interval of one thread (or, merged, of all threads).
pub struct Interval {
    pub index: u64,
    pub start: Duration,
    pub length: Duration,
    pub hist: Histogram<u64>,
    pub counts: Counters,
}

enum Msg {
    Interval(Interval),
    Done(usize, Box<ThreadDone>),
}

struct ThreadDone {
    total: Histogram<u64>,
    counts: Counters,
    finished: Instant,
    /// Open loop: when the last request left; past the planned end means it fell behind.
    last_send: Option<Instant>,
}

/// The merged outcome of a run.
pub struct RunResult {
    pub hist: Histogram<u64>,
    pub counts: Counters,
    /// Length of the measured window (after warmup).
    pub duration: Duration,
    /// Per-second intervals over the whole run, warmup included (empty there), in order.
    pub intervals: Vec<Interval>,
    /// Wall-clock time of the run's start, for the interval log.
    pub started: SystemTime,
    /// Offset of the measured window from the start.
    pub warmup: Duration,
}

const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Room between the start barrier and the first due request, so no connection starts late.
const START_MARGIN: Duration = Duration::from_millis(5);

/// Runs the load; `progress` is called with each merged one-second interval as it closes.
pub fn run(cfg: &'static RunConfig, mut progress: impl FnMut(&Interval)) -> RunResult {
    let threads = cfg.threads.max(1);
    let barrier = Arc::new(Barrier::new(threads));
    let t0cell: Arc<OnceLock<(Instant, SystemTime)>> = Arc::new(OnceLock::new());
    let (tx, rx) = channel();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (barrier, t0cell, tx) = (barrier.clone(), t0cell.clone(), tx.clone());
        let cpu = cfg.cpus.as_ref().map(|c| c[t % c.len()]);
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                let conns = cfg.connections / threads + usize::from(t < cfg.connections % threads);
                let entries = (conns as u32 * 2).clamp(1024, 32768);
                let res = runtime::run_pinned(cpu, entries, || {
                    thread_main(cfg, t, threads, barrier, t0cell, tx.clone())
                });
                if let Err(e) = res {
                    eprintln!("error: thread {t}: {e}");
                    // Unblock the others and the collector.
                    let _ = tx.send(Msg::Done(
                        t,
                        Box::new(ThreadDone {
                            total: new_histogram(),
                            counts: Counters::default(),
                            finished: Instant::now(),
                            last_send: None,
                        }),
                    ));
                }
            })
            .expect("spawning a thread");
        handles.push(h);
    }
    drop(tx);
    let result = collect(cfg, threads, &rx, &t0cell, &mut progress);
    for h in handles {
        let _ = h.join();
    }
    result
}

fn collect(
    cfg: &RunConfig,
    threads: usize,
    rx: &Receiver<Msg>,
    t0cell: &OnceLock<(Instant, SystemTime)>,
    progress: &mut impl FnMut(&Interval),
) -> RunResult {
    let mut pending: std::collections::BTreeMap<u64, (usize, Interval)> = Default::default();
    let mut intervals = Vec::new();
    let mut done: Vec<Option<Box<ThreadDone>>> = (0..threads).map(|_| None).collect();
    let mut next = 0u64;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Interval(iv) => {
                let e = pending.entry(iv.index).or_insert_with(|| {
                    (
                        0,
                        Interval {
                            index: iv.index,
                            start: iv.start,
                            length: iv.length,
                            hist: new_histogram(),
                            counts: Counters::default(),
                        },
                    )
                });
                e.0 += 1;
                let _ = e.1.hist.add(&iv.hist);
                e.1.counts.add(&iv.counts);
                e.1.length = e.1.length.max(iv.length);
            }
            Msg::Done(t, d) => done[t] = Some(d),
        }
        // An interval is complete once every thread still running has reported it.
        let alive = done.iter().filter(|d| d.is_none()).count();
        while let Some((count, _)) = pending.get(&next) {
            if *count < alive && alive > 0 {
                break;
            }
            if let Some((_, iv)) = pending.remove(&next) {
                progress(&iv);
                intervals.push(iv);
            }
            next += 1;
        }
        if alive == 0 {
            break;
        }
    }
    intervals.extend(pending.into_values().map(|(_, iv)| iv));
    let mut hist = new_histogram();
    let mut counts = Counters::default();
    let mut finished = None::<Instant>;
    let mut last_send = None::<Instant>;
    for d in done.into_iter().flatten() {
        let _ = hist.add(&d.total);
        counts.add(&d.counts);
        finished = Some(finished.map_or(d.finished, |f| f.max(d.finished)));
        last_send = last_send.max(d.last_send);
    }
    let (t0, started) = t0cell
        .get()
        .copied()
        .unwrap_or((Instant::now(), SystemTime::now()));
    let warmup_end = t0 + cfg.warmup;
    let duration = match cfg.duration {
        // An open loop that fell behind sent its last requests after the planned end: the
        // achieved rate is over the time it really took, so the shortfall shows.
        Some(d) => last_send.map_or(d, |l| d.max(l.saturating_duration_since(warmup_end))),
        None => finished.map_or(Duration::ZERO, |f| f.saturating_duration_since(warmup_end)),
    };
    RunResult {
        hist,
        counts,
        duration,
        intervals,
        started,
        warmup: cfg.warmup,
    }
}

/// Waits, without blocking the runtime, until `cell` is set.
async fn wait_for(cell: &Cell<Option<Instant>>) -> Instant {
    loop {
        if let Some(t) = cell.get() {
            return t;
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn thread_main(
    cfg: &'static RunConfig,
    t: usize,
    threads: usize,
    barrier: Arc<Barrier>,
    t0cell: Arc<OnceLock<(Instant, SystemTime)>>,
    tx: Sender<Msg>,
) {
    let per_thread = cfg.requests.map(|n| {
        if cfg.rate.is_some() {
            n // the open-loop timetable counts globally
        } else {
            n / threads as u64 + u64::from((t as u64) < n % threads as u64)
        }
    });
    // Dial everything first so connection setup is not measured; start together afterwards.
    let start: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
    let ctx_cell: Rc<RefCell<Option<Rc<ThreadCtx>>>> = Rc::new(RefCell::new(None));
    let dialed = Rc::new(Cell::new(0usize));
    let origin_wheel = smooth_wheel(&cfg.origins.iter().map(|o| o.weight).collect::<Vec<_>>());
    let mut tasks = Vec::new();
    let mut mine = 0;
    for id in (t..cfg.connections).step_by(threads) {
        mine += 1;
        let origin = &cfg.origins[usize::from(origin_wheel[id % origin_wheel.len()])];
        let (start, ctx_cell, dialed) = (start.clone(), ctx_cell.clone(), dialed.clone());
        let task = async move {
            if origin.tls {
                let dial = TlsDial {
                    addr: origin.addr,
                    connector: TlsConnector::from(cfg.tls.clone().expect("TLS config for https")),
                    name: dial::server_name(&origin.host).expect("validated before the run"),
                };
                drive(dial, origin, id, &start, &ctx_cell, &dialed).await;
            } else {
                let dial = PlainDial { addr: origin.addr };
                drive(dial, origin, id, &start, &ctx_cell, &dialed).await;
            }
        };
        tasks.push(monoio::spawn(task));
    }
    while dialed.get() < mine {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every thread has dialed; the first one through fixes the common start.
    barrier.wait();
    let (t0, _) = *t0cell.get_or_init(|| (Instant::now() + START_MARGIN, SystemTime::now()));
    let warmup_end = t0 + cfg.warmup;
    let end = cfg.duration.map(|d| warmup_end + d);
    let queue = cfg.rate.map(|rate| {
        let tt = Timetable::new(
            t0,
            rate,
            cfg.connections as u64,
            cfg.warmup,
            cfg.requests,
            end,
        );
        let ids = (t..cfg.connections).step_by(threads).map(|i| i as u64);
        Rc::new(Dispatch::new(tt, ids.collect()))
    });
    let ctx = Rc::new(ThreadCtx {
        cfg,
        queue,
        last_send: Cell::new(None),
        stats: RefCell::new(ThreadStats::new()),
        budget: Budget::new(per_thread),
        warmup_end,
        end,
    });
    *ctx_cell.borrow_mut() = Some(ctx.clone());
    start.set(Some(t0));

    let finished = Rc::new(Cell::new(false));
    // The interval being filled; the final flush closes this one, whatever the clock says.
    let current = Rc::new(Cell::new(0u64));
    let reporter = {
        let (ctx, tx, finished, current) =
            (ctx.clone(), tx.clone(), finished.clone(), current.clone());
        async move {
            loop {
                let index = current.get();
                let at = t0 + REPORT_EVERY * (index as u32 + 1);
                monoio::time::sleep_until(at.into()).await;
                if finished.get() {
                    break;
                }
                let (hist, counts) = ctx.stats.borrow_mut().take_interval();
                let iv = Interval {
                    index,
                    start: REPORT_EVERY * index as u32,
                    length: REPORT_EVERY,
                    hist,
                    counts,
                };
                let _ = tx.send(Msg::Interval(iv));
                current.set(index + 1);
            }
        }
    };
    let _reporter = monoio::spawn(reporter);
    for task in tasks {
        task.await;
    }
    finished.set(true);
    let now = Instant::now();
    let since = now.saturating_duration_since(t0);
    let index = current.get();
    let (hist, counts) = ctx.stats.borrow_mut().take_interval();
    let start_off = REPORT_EVERY * index as u32;
    let _ = tx.send(Msg::Interval(Interval {
        index,
        start: start_off,
        length: since.saturating_sub(start_off),
        hist,
        counts,
    }));
    let st = ctx.stats.borrow();
    let _ = tx.send(Msg::Done(
        t,
        Box::new(ThreadDone {
            total: st.total.clone(),
            counts: st.total_counts,
            finished: now,
            last_send: ctx.last_send.get(),
        }),
    ));
}

/// A connection task's whole life: dial, wait for the common start, then run its loop.
async fn drive<D: Dial>(
    dial: D,
    origin: &'static Origin,
    id: usize,
    start: &Cell<Option<Instant>>,
    ctx_cell: &RefCell<Option<Rc<ThreadCtx>>>,
    dialed: &Cell<usize>,
) {
    let first = monoio::time::timeout(Duration::from_secs(10), dial.dial())
        .await
        .ok()
        .and_then(Result::ok);
    dialed.set(dialed.get() + 1);
    let t0 = wait_for(start).await;
    if t0 > Instant::now() {
        monoio::time::sleep_until(t0.into()).await;
    }
    let Some(ctx) = ctx_cell.borrow().clone() else {
        return;
    };
    let conn = conn::Conn::new(ctx.clone(), Rc::new(dial), origin, id);
    match ctx.queue.clone() {
        None => conn.run_closed(first).await,
        Some(queue) => conn.run_open(first, queue).await,
    }
}
