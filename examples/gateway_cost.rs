//! What the gateway filters cost per request, in user-space CPU, measured in-process: the same
//! request head is planned for a plain route and for a route with API-key auth and a (never
//! reached) rate limit, interleaved, many times. This isolates the gateway's own work from the
//! kernel's share (two sends and two receives over loopback, ~7.5 µs per request on the
//! project's reference machine), which a throughput run on a shared machine cannot.
//!
//! Run: `cargo run --release --example gateway_cost`

use ringway::gateway::{CoreGateway, Outcome, Request};
use ringway::http::request::{self, Limits};
use ringway::proxy::head::{write_request, ClientInfo, UpstreamHead};
use ringway::proxy::state::WorkerCtx;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::time::Instant;

const CONFIG: &str = r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.origin]
servers = ["127.0.0.1:1"]
[auth.partners]
type = "api_key"
keys = [{ name = "acme", key = "acme-5f2b9c1e7d" }, { name = "globex", key = "globex-93a7e0c4b1" }]
[[route]]
match = { path_prefix = "/gw/" }
auth = "partners"
rate_limit = { rate = 100000000, per = "1s", key = "consumer" }
upstream = "origin"
[[route]]
upstream = "origin"
"#;

const HEAD: &[u8] = b"GET /gw/items?limit=10 HTTP/1.1\r\nHost: api.example.com\r\n\
User-Agent: wrk/4.2\r\nAccept: */*\r\nX-Api-Key: acme-5f2b9c1e7d\r\n\r\n";

fn main() {
    let config = ringway::config::parse(CONFIG, "<bench>").expect("valid config");
    let gateway = CoreGateway::new(&config);
    let gw = gateway.route(0).expect("route 0 has filters");
    let worker = WorkerCtx::new(0, false); // no forwarding here: the driver flag is unused
    let info = ClientInfo::new(std::net::Ipv4Addr::LOCALHOST.into(), false);
    let limits = Limits {
        max_request_line: 8192,
        max_head_size: 32 * 1024,
    };
    let mut slots = [MaybeUninit::uninit(); 64];
    let head = match request::parse(HEAD, &mut slots, &limits) {
        Ok(Some(h)) => h,
        _ => panic!("bench head does not parse"),
    };
    let target = UpstreamHead {
        path_prefix: "",
        path: head.path,
        host_override: None,
    };
    let mut out = Vec::with_capacity(4096);
    let id_header = config.proxy.request_id_header.as_deref();

    let plain = |out: &mut Vec<u8>| {
        out.clear();
        write_request(out, &head, &target, &config.proxy, &info, &worker, None);
    };
    let filtered = |out: &mut Vec<u8>| {
        let ip = info.ip();
        let req = Request {
            method: head.method,
            host: head.host,
            target: head.path,
            headers: head.headers,
            client_ip: ip.as_str(),
        };
        let passed = match gw.check(&req, id_header, |o| worker.push_request_id(o), out) {
            Outcome::Pass(p) => p,
            Outcome::Local { .. } => panic!("the bench request was refused"),
        };
        let edits = gw.upstream_edits(gw.vars(&req, &passed, id_header), &passed);
        out.clear();
        write_request(
            out,
            &head,
            &target,
            &config.proxy,
            &info,
            &worker,
            Some(&edits),
        );
    };

    const N: u32 = 200_000;
    let mut best = [f64::MAX; 2];
    for _round in 0..15 {
        for (i, f) in [&plain as &dyn Fn(&mut Vec<u8>), &filtered]
            .iter()
            .enumerate()
        {
            let t = Instant::now();
            for _ in 0..N {
                f(black_box(&mut out));
            }
            let ns = t.elapsed().as_nanos() as f64 / N as f64;
            best[i] = best[i].min(ns);
        }
    }
    println!(
        "plain route:           {:7.1} ns/request (upstream head written)",
        best[0]
    );
    println!(
        "api key + rate limit:  {:7.1} ns/request (filters + upstream head)",
        best[1]
    );
    println!(
        "gateway cost:          {:7.1} ns/request",
        best[1] - best[0]
    );
    let counters = gw.counters.snapshot();
    println!("route counters: {counters:?}");
}
