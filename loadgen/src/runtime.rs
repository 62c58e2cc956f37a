//! Builds one pinned monoio runtime per thread: io_uring with deferred (else cooperative) task
//! running, falling back to plain io_uring and then to epoll when the kernel refuses a setup.

use std::future::Future;
use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// Pins the calling thread to `cpu` (when given) and runs `f` to completion on a fresh runtime.
pub fn run_pinned<F, Fut, R>(cpu: Option<usize>, entries: u32, f: F) -> io::Result<R>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("warning: could not pin thread to CPU {id}");
        }
    }
    let mut rt = None;
    let mut why = Vec::new();
    for setup in Setup::preferred() {
        match setup.build(entries) {
            Ok(r) => {
                rt = Some(r);
                break;
            }
            Err(e) => why.push(format!("{setup:?}: {e}")),
        }
    }
    let Some(mut rt) = rt else {
        eprintln!(
            "warning: io_uring unavailable ({}); using epoll",
            why.join("; ")
        );
        let mut rt = RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?;
        return Ok(rt.block_on(f()));
    };
    Ok(rt.block_on(f()))
}

/// io_uring setups, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// DEFER_TASKRUN + SINGLE_ISSUER: completion work runs only when the thread waits, in one
    /// batch, never as an interrupt to a running task. Safe with monoio because its park always
    /// enters with GETEVENTS; each ring is used only by the thread that built it.
    Defer,
    /// COOP_TASKRUN + TASKRUN_FLAG: completion work waits for the next ring entry instead of
    /// interrupting; a minimal responder measured 1.75x faster than with no flags.
    Coop,
    Plain,
}

impl Setup {
    /// `LOADGEN_URING=defer|coop|plain` forces one setup (for A/B measurements).
    fn preferred() -> Vec<Setup> {
        match std::env::var("LOADGEN_URING").as_deref() {
            Ok("defer") => vec![Setup::Defer],
            Ok("coop") => vec![Setup::Coop],
            Ok("plain") => vec![Setup::Plain],
            _ => vec![Setup::Defer, Setup::Coop, Setup::Plain],
        }
    }

    fn build(
        self,
        entries: u32,
    ) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>> {
        let mut urb = io_uring::IoUring::builder();
        match self {
            Setup::Defer => {
                urb.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            Setup::Coop => {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
            Setup::Plain => {}
        }
        RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(urb)
            .with_entries(entries)
            .enable_timer()
            .build()
    }
}
