//! Process orchestration: binds listeners, starts one pinned worker thread per core, and runs
//! the control loop on the main thread (SIGHUP reload, SIGTERM/SIGINT drain, SIGQUIT fast stop).

mod listener;
mod memory;
pub mod proxy_protocol;
mod runtime;
mod stop;
mod worker;

use crate::config::{self, Config};
use crate::telemetry::access_log::{self, Output};
use crate::upstream::health::Probes;
use crate::upstream::published::Published;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What workers read from other threads. The mutex is touched only on reload and at a
/// worker's start, never per request.
pub struct Shared {
    pub shutdown: AtomicBool,
    pub generation: AtomicU64,
    snapshot: Mutex<Snapshot>,
    /// Each worker's counters, published on its control tick for the admin endpoint.
    pub board: Arc<crate::telemetry::Board>,
    /// The access log's writer thread, once a config has asked for one (it then stays).
    pub access_log: OnceLock<access_log::LogTx>,
}

/// One config generation: the validated config and its published upstream state.
#[derive(Clone)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub published: Arc<Published>,
}

impl Shared {
    pub fn current(&self) -> Snapshot {
        match self.snapshot.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn current_config(&self) -> Arc<Config> {
        self.current().config
    }

    fn publish(&self, s: Snapshot) {
        match self.snapshot.lock() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs Ringway until it is told to stop. `path` is re-read on SIGHUP (None: built-in config).
pub fn run(config: Config, path: Option<PathBuf>) -> Result<(), String> {
    let config = Arc::new(config);
    memory::apply(config.runtime.transparent_huge_pages);
    let workers = config.runtime.workers;
    let (sockets, bound) = listener::bind_all(&config.listeners, workers)?;
    // A plain socket (no SO_REUSEPORT): an address another process holds is refused here.
    let admin = match config.admin {
        None => None,
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("{}: admin.bind: {addr}: {e}", config.source))?,
        ),
    };
    // Registered before workers start so that no signal finds the default (fatal) action.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])
        .map_err(|e| format!("signals: {e}"))?;
    let published = Published::build(&config, None);
    // Kept alive (and replaced on reload) so the probe threads run; dropping stops them.
    let mut _probes = Probes::start(&config, &published);
    let board = Arc::new(crate::telemetry::Board::new(workers));
    board.follow(&config, published.clone());
    let shared = Arc::new(Shared {
        shutdown: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        snapshot: Mutex::new(Snapshot {
            config: config.clone(),
            published,
        }),
        board,
        access_log: OnceLock::new(),
    });
    open_access_log(&shared, None, &config)?;
    let mut handles = Vec::new();
    for (id, socks) in sockets.into_iter().enumerate() {
        let cpu = config.runtime.cpus.get(id).copied();
        let shared = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("ringway-w{id}"))
            .spawn(move || worker::run(id, cpu, socks, shared))
            .map_err(|e| format!("cannot start worker {id}: {e}"))?;
        handles.push(h);
    }
    for (l, addr) in config.listeners.iter().zip(&bound) {
        let tls = if l.tls.is_some() { ", TLS" } else { "" };
        println!(
            "ringway: listening on {addr} ({}), {workers} worker(s){tls}",
            l.name
        );
    }
    if let Some(l) = admin {
        let addr = l.local_addr().map_err(|e| format!("admin listener: {e}"))?;
        crate::admin::start(l, shared.board.clone())
            .map_err(|e| format!("cannot start the admin endpoint: {e}"))?;
        println!("ringway: listening on {addr} (admin), metrics and health");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // A worker that dies (runtime build failure) must not leave a half-up process behind.
    let watcher_shared = shared.clone();
    let joiner = std::thread::spawn(move || {
        let mut failed = false;
        let log_shared = watcher_shared.clone();
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => eprintln!(
                    "ringway: worker {}: requests={} upstream connections opened={} reused={}{}{}",
                    r.id,
                    r.requests,
                    r.upstream_opened,
                    r.upstream_reused,
                    if r.abandoned > 0 {
                        format!(" abandoned_in_flight={}", r.abandoned)
                    } else {
                        String::new()
                    },
                    match r.cache {
                        Some([hits, misses, revalidated, stale, stores, evictions]) => format!(
                            " cache hits={hits} misses={misses} revalidated={revalidated} stale={stale} stores={stores} evictions={evictions}"
                        ),
                        None => String::new(),
                    }
                ),
                Ok(Err(e)) => {
                    eprintln!("ringway: {e}");
                    failed = true;
                    watcher_shared.shutdown.store(true, Ordering::Release);
                }
                Err(_) => {
                    eprintln!("ringway: a worker panicked");
                    failed = true;
                    watcher_shared.shutdown.store(true, Ordering::Release);
                }
            }
        }
        // The workers handed over their last lines; they are written before the exit.
        if let Some(tx) = log_shared.access_log.get() {
            let (done, wait) = std::sync::mpsc::channel();
            if tx.send(access_log::Msg::Sync(done)) {
                let _ = wait.recv_timeout(std::time::Duration::from_secs(5));
            }
        }
        std::process::exit(if failed { 1 } else { 0 });
    });

    for sig in signals.forever() {
        match sig {
            SIGTERM | SIGINT => {
                if shared.shutdown.swap(true, Ordering::AcqRel) {
                    // Second request while draining: stop now.
                    std::process::exit(0);
                }
                eprintln!(
                    "ringway: draining (up to {:?})",
                    shared.current_config().runtime.drain_timeout
                );
            }
            SIGQUIT => std::process::exit(0),
            SIGHUP => {
                if let Some(p) = reload(&shared, path.as_deref(), &bound) {
                    _probes = p;
                }
            }
            // Log rotation: the file was moved away; open the path again.
            SIGUSR1 => {
                if let Some(tx) = shared.access_log.get() {
                    tx.send(access_log::Msg::Reopen);
                }
            }
            _ => {}
        }
    }
    let _ = joiner.join();
    Ok(())
}

/// Loads, validates and publishes the config file again; returns the new generation's probes.
/// `bound` is where each listener ended up (port 0 resolved).
fn reload(
    shared: &Shared,
    path: Option<&std::path::Path>,
    bound: &[std::net::SocketAddr],
) -> Option<Probes> {
    let Some(path) = path else {
        eprintln!("ringway: SIGHUP ignored: running the built-in config");
        return None;
    };
    match config::load(path) {
        Ok(new) => {
            let current = shared.current();
            let kept = restart_only_changes(&current.config, &new, bound);
            if !kept.is_empty() {
                eprintln!(
                    "ringway: reload: {} changed, but listener, admin, worker and huge-page changes need a restart; applying the rest",
                    kept.join(", ")
                );
            }
            if let Err(e) = open_access_log(shared, Some(&current.config), &new) {
                eprintln!("ringway: reload refused, still serving the old config: {e}");
                return None;
            }
            let published = Published::build(&new, Some(&current.published));
            let probes = Probes::start(&new, &published);
            shared.board.follow(&new, published.clone());
            shared.publish(Snapshot {
                config: Arc::new(new),
                published,
            });
            eprintln!("ringway: reloaded {}", path.display());
            Some(probes)
        }
        Err(e) => {
            eprintln!("ringway: reload refused, still serving the old config: {e}");
            None
        }
    }
}

/// Opens the access log `new` asks for, when it is not the one already open: the writer
/// starts with the first config that has a log, and a reload that moves it switches files.
/// A path that cannot be opened is a config error (`access_log.path`).
fn open_access_log(shared: &Shared, old: Option<&Config>, new: &Config) -> Result<(), String> {
    let Some(log) = &new.access_log else {
        return Ok(());
    };
    let writer = shared.access_log.get();
    let old_target = old.and_then(|c| c.access_log.as_ref()).map(|l| &l.target);
    if writer.is_some() && old_target == Some(&log.target) {
        return Ok(());
    }
    let output = Output::open(&log.target).map_err(|e| {
        config::ConfigError {
            file: new.source.clone(),
            key: "access_log.path".into(),
            reason: e,
        }
        .to_string()
    })?;
    match writer {
        Some(tx) => {
            tx.send(access_log::Msg::Switch(log.target.clone(), output));
        }
        None => {
            let tx = access_log::start(log.target.clone(), output)?;
            let _ = shared.access_log.set(tx);
        }
    }
    Ok(())
}

/// The keys whose change a reload cannot apply (the running process keeps the old value), by
/// name. A listener is unchanged when its new address is the old one as written or the one it
/// is bound to: a config that names the port a `:0` listener got moves nothing.
fn restart_only_changes(old: &Config, new: &Config, bound: &[std::net::SocketAddr]) -> Vec<String> {
    let mut changed = Vec::new();
    if new.listeners.len() != old.listeners.len() {
        changed.push("the number of listeners".to_string());
    }
    for (i, (n, o)) in new.listeners.iter().zip(&old.listeners).enumerate() {
        if n.bind != o.bind && bound.get(i) != Some(&n.bind) {
            changed.push(format!("listener[{i}].bind"));
        }
        if n.tls.is_some() != o.tls.is_some() {
            changed.push(format!("listener[{i}].tls"));
        }
        if n.proxy_protocol != o.proxy_protocol {
            changed.push(format!("listener[{i}].proxy_protocol"));
        }
    }
    if new.admin != old.admin {
        changed.push("admin.bind".to_string());
    }
    if new.runtime.workers != old.runtime.workers {
        changed.push("runtime.workers".to_string());
    }
    if new.runtime.transparent_huge_pages != old.runtime.transparent_huge_pages {
        changed.push("runtime.transparent_huge_pages".to_string());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, runtime: &str) -> Config {
        let text = format!(
            "[runtime]\n{runtime}\n[[listener]]\nbind = \"{listen}\"\n\n[[route]]\nrespond = {{ status = 200 }}\n"
        );
        config::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn a_reload_names_what_needs_a_restart() {
        let old = cfg("127.0.0.1:0", "workers = 1");
        let bound = ["127.0.0.1:43210".parse().unwrap()];
        // As written, or naming the port it got: nothing to restart for.
        assert!(restart_only_changes(&old, &cfg("127.0.0.1:0", "workers = 1"), &bound).is_empty());
        assert!(
            restart_only_changes(&old, &cfg("127.0.0.1:43210", "workers = 1"), &bound).is_empty()
        );
        assert_eq!(
            restart_only_changes(&old, &cfg("127.0.0.1:43211", "workers = 2"), &bound),
            ["listener[0].bind", "runtime.workers"]
        );
        assert_eq!(
            restart_only_changes(
                &old,
                &cfg("127.0.0.1:0", "workers = 1\ntransparent_huge_pages = false"),
                &bound
            ),
            ["runtime.transparent_huge_pages"]
        );
        let mut with_admin = cfg("127.0.0.1:0", "workers = 1");
        with_admin.admin = Some("127.0.0.1:9901".parse().unwrap());
        assert_eq!(
            restart_only_changes(&old, &with_admin, &bound),
            ["admin.bind"]
        );
    }
}
