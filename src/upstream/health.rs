//! Active health checks: one probe thread per checked upstream for the whole process (not one
//! per core), using blocking sockets with timeouts, off the workers. Verdicts go to the
//! published table, where every worker sees them on its next pick.

use super::published::{now_ms, Published, PublishedUpstream};
use crate::config::{Config, HealthCheck, HealthKind};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The probe threads of one config generation; dropping it stops them.
pub struct Probes {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Probes {
    pub fn start(config: &Config, published: &Published) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (u, p) in config.upstreams.iter().zip(&published.upstreams) {
            let Some(check) = u.health_check.clone() else {
                continue;
            };
            let p = p.clone();
            let stop = stop.clone();
            let addrs: Vec<SocketAddr> = u.servers.iter().map(|s| s.addr).collect();
            let proxy_header = u.send_proxy_protocol;
            let spawned = std::thread::Builder::new()
                .name(format!("ringway-hc-{}", u.name))
                .spawn(move || probe_loop(&check, proxy_header, &addrs, &p, &stop));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => eprintln!("ringway: cannot start health checks for {}: {e}", u.name),
            }
        }
        Self { stop, threads }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn probe_loop(
    check: &HealthCheck,
    proxy_header: Option<u8>,
    addrs: &[SocketAddr],
    published: &PublishedUpstream,
    stop: &AtomicBool,
) {
    // Consecutive results per server, counted here: only this thread writes the verdicts.
    let mut ok_streak = vec![0u32; addrs.len()];
    let mut fail_streak = vec![0u32; addrs.len()];
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        for (i, addr) in addrs.iter().enumerate() {
            let server = &published.servers[i];
            let ok = probe(check, proxy_header, *addr);
            if ok {
                ok_streak[i] += 1;
                fail_streak[i] = 0;
                if !server.is_healthy() && ok_streak[i] >= check.healthy_threshold {
                    let now = now_ms();
                    server.back_since_ms.store(now, Ordering::Relaxed);
                    // Seen down and up again: an ejection from that same outage would only
                    // keep a verified server idle (Envoy unejects on a passing check too).
                    server.ejected_until_ms.fetch_min(now, Ordering::Relaxed);
                    server.healthy.store(true, Ordering::Release);
                    eprintln!(
                        "ringway: upstream {} server {addr} is healthy again",
                        published.name
                    );
                }
            } else {
                server.probes_failed.fetch_add(1, Ordering::Relaxed);
                fail_streak[i] += 1;
                ok_streak[i] = 0;
                if server.is_healthy() && fail_streak[i] >= check.unhealthy_threshold {
                    server.healthy.store(false, Ordering::Release);
                    eprintln!(
                        "ringway: upstream {} server {addr} failed its health check",
                        published.name
                    );
                }
            }
        }
        // Sleep in short steps so a reload or shutdown does not wait a whole interval.
        let next = started + check.interval;
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
    }
}

/// One probe: a TCP connect, or an HTTP/1.1 GET whose status must fall in the expected range.
/// `proxy_header` is the upstream's `send_proxy_protocol`: a GET then opens with a header that
/// names no client (v1 UNKNOWN, v2 LOCAL), as HAProxy's check-send-proxy does.
pub fn probe(check: &HealthCheck, proxy_header: Option<u8>, addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, check.timeout) else {
        return false;
    };
    let HealthKind::Http { path, host, status } = &check.kind else {
        return true;
    };
    let deadline = Instant::now() + check.timeout;
    let _ = s.set_write_timeout(Some(check.timeout));
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let mut req = Vec::with_capacity(128);
    if let Some(version) = proxy_header {
        crate::server::proxy_protocol::encode_local(version, &mut req);
    }
    let _ = write!(req, "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: ringway-health\r\nconnection: close\r\n\r\n");
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    let mut n = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                n += k;
                if memchr::memchr(b'\n', &buf[..n]).is_some() || n == buf.len() {
                    break;
                }
            }
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..n]) {
        Ok(_) => resp.code.is_some_and(|c| c >= status.0 && c <= status.1),
        // A partial head is enough once the status line is in.
        Err(_) => false,
    }
}
