//! Builds a worker's monoio runtime: io_uring with cooperative task running (measured 1.75x
//! faster for a minimal responder than monoio's defaults), else the legacy epoll driver.
//! `RINGWAY_URING=defer|plain` picks DEFER_TASKRUN or monoio's own flags instead, for A/B runs
//! (`bench/ab.sh defer|ring`).

use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

pub type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Which driver a runtime ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Legacy,
}

pub fn force_legacy() -> bool {
    std::env::var_os("RINGWAY_FORCE_LEGACY").is_some_and(|v| v != "0" && !v.is_empty())
}

pub fn build(entries: u32) -> std::io::Result<(Runtime, Driver)> {
    if !force_legacy() {
        let mut urb = io_uring::IoUring::builder();
        match std::env::var("RINGWAY_URING").as_deref() {
            Ok("plain") => {}
            Ok("defer") => {
                urb.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            _ => {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
        }
        let tuned = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(urb)
            .enable_timer()
            .build();
        match tuned {
            Ok(rt) => return Ok((rt.into(), Driver::IoUring)),
            Err(_) => {
                // Kernels before 5.19 lack COOP_TASKRUN/TASKRUN_FLAG: plain io_uring still beats epoll.
                if let Ok(rt) = RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .enable_timer()
                    .build()
                {
                    return Ok((rt.into(), Driver::IoUring));
                }
            }
        }
    }
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok((rt.into(), Driver::Legacy))
}
