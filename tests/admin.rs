//! The admin endpoint through the real binary: Prometheus metrics that count what the workers
//! did (requests, responses by status class, upstream connections opened and reused, retries,
//! attempts and failures per server, cache outcomes, gateway outcomes) and the servers' shared
//! health and ejections, health, answers to other paths and methods, and a broken
//! `admin.bind` refused by key.

mod common;

use common::*;
use std::net::SocketAddr;

/// A listener named "main" and the admin endpoint, each on a port the OS picks.
const LISTENERS: &str = r#"
[[listener]]
name = "main"
bind = "127.0.0.1:0"

[admin]
bind = "127.0.0.1:0"
"#;

fn config(up: SocketAddr) -> String {
    format!(
        r#"[runtime]
workers = 2
{LISTENERS}
[upstream.app]
servers = ["{up}"]

[cache.pages]

[auth.keys]
type = "api_key"
header = "x-api-key"
keys = [{{ name = "a", key = "key-000000000001" }}]

[[route]]
name = "members"
match = {{ path_prefix = "/members/" }}
auth = "keys"
upstream = "app"

[[route]]
name = "cached"
match = {{ path_prefix = "/cached/" }}
upstream = "app"
cache = "pages"

[[route]]
upstream = "app"
"#
    )
}

/// The sum over workers of the series `name{labels...}` whose labels include `with`.
fn sum(metrics: &str, name: &str, with: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn scrape(admin: SocketAddr) -> RawResponse {
    raw_exchange(admin, b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
}

#[test]
fn metrics_count_what_the_workers_did() {
    let up = Upstream::with(|r| {
        let reply = Reply::ok(format!("{} {}", r.method, r.path));
        if r.path.starts_with("/cached/") {
            reply.header("Cache-Control", "max-age=300")
        } else {
            reply
        }
    });
    let rw = Ringway::start_n(&config(up.addr), 2, &[]);
    let (main, admin) = (rw.addrs["main"], rw.addrs["admin"]);
    let agent = agent();
    for i in 0..20 {
        let (status, _) = ureq_result(agent.get(&format!("http://{main}/plain/{i}")).call());
        assert_eq!(status, 200);
    }
    for _ in 0..5 {
        let (status, _) = ureq_result(agent.get(&format!("http://{main}/cached/x")).call());
        assert_eq!(status, 200);
    }
    let (status, _) = ureq_result(agent.get(&format!("http://{main}/members/list")).call());
    assert_eq!(status, 401);
    // Workers publish on their control tick: wait (bounded) until the scrape shows it all.
    let metrics = wait_for(DEADLINE, "the counters in /metrics", || {
        let r = scrape(admin);
        assert_eq!(r.status, 200);
        let t = r.text();
        (sum(&t, "ringway_requests_total", "") == 26).then_some(t)
    });
    let opened = sum(
        &metrics,
        "ringway_upstream_connections_opened_total",
        "upstream=\"app\"",
    );
    let reused = sum(
        &metrics,
        "ringway_upstream_connections_reused_total",
        "upstream=\"app\"",
    );
    // The 20 plain requests and the cache's misses (at most one per worker) reached the
    // upstream, mostly over kept-alive connections.
    let upstream_requests = up.count() as u64;
    assert_eq!(opened + reused, upstream_requests, "{metrics}");
    assert!(reused > opened, "{metrics}");
    assert_eq!(opened, up.accepted() as u64);
    let hits = sum(&metrics, "ringway_cache_hits_total", "cache=\"pages\"");
    let misses = sum(&metrics, "ringway_cache_misses_total", "cache=\"pages\"");
    assert_eq!(hits + misses, 5, "{metrics}");
    assert_eq!(upstream_requests, 20 + misses);
    assert!(sum(&metrics, "ringway_cache_urls", "cache=\"pages\"") >= 1);
    assert_eq!(
        sum(
            &metrics,
            "ringway_gateway_requests_total",
            "route=\"members\",outcome=\"auth_missing\""
        ),
        1,
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE ringway_requests_total counter\n"));
    assert!(metrics.contains("ringway_client_connections{worker=\"1\"}"));
}

#[test]
fn health_and_other_paths() {
    let up = Upstream::start("a");
    let rw = Ringway::start_n(&config(up.addr), 2, &[]);
    let admin = rw.addrs["admin"];
    let health = raw_exchange(admin, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let head = raw_exchange(admin, b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let missing = raw_exchange(admin, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(missing.status, 404);
    let post = raw_exchange(
        admin,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    // The proxy's own listener does not serve them.
    let r = raw_exchange(
        rw.addrs["main"],
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(r.text(), "a GET /metrics");
}

/// A keep-alive client connection, so every request on it reaches the same worker.
struct Conn(std::io::BufReader<std::net::TcpStream>);

impl Conn {
    fn get(&mut self, path: &str) -> RawResponse {
        let req = format!("GET {path} HTTP/1.1\r\nHost: Cache.Test\r\n\r\n");
        std::io::Write::write_all(self.0.get_mut(), req.as_bytes()).unwrap();
        let r = read_response(&mut self.0, false).unwrap();
        assert_eq!(r.status, 200, "{path}");
        r
    }

    fn x_cache(&mut self, path: &str) -> String {
        self.get(path).header("x-cache").unwrap_or("").to_string()
    }
}

/// One connection to each of the two workers: a worker's id ends the 8-digit prefix of the
/// request ids it makes, which the upstream sees.
fn one_per_worker(main: SocketAddr, up: &Upstream) -> [Conn; 2] {
    let mut found: [Option<Conn>; 2] = [None, None];
    for i in 0..200 {
        let mut c = Conn(std::io::BufReader::new(connect(main)));
        let path = format!("/whoami/{i}");
        c.get(&path);
        let rec = up.requests().into_iter().find(|r| r.path == path).unwrap();
        let id = rec.header("x-request-id").unwrap().to_string();
        let worker = usize::from_str_radix(&id[6..8], 16).unwrap();
        if found[worker].is_none() {
            found[worker] = Some(c);
        }
        if found.iter().all(Option::is_some) {
            return found.map(Option::unwrap);
        }
    }
    panic!("200 connections all landed on one worker");
}

#[test]
fn purges_reach_every_worker() {
    let up = Upstream::with(|r| {
        Reply::ok(format!("{} {}", r.method, r.path)).header("Cache-Control", "max-age=300")
    });
    let rw = Ringway::start_n(&config(up.addr), 2, &[]);
    let (main, admin) = (rw.addrs["main"], rw.addrs["admin"]);
    // Each worker holds its own copy of both URLs.
    let mut conns = one_per_worker(main, &up);
    let purge = |query: &str| {
        let req =
            format!("POST /cache/purge?{query} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        raw_exchange(admin, req.as_bytes())
    };
    for c in &mut conns {
        for path in ["/cached/a?v=1", "/cached/b"] {
            c.get(path);
            assert_eq!(c.x_cache(path), "HIT", "{path}");
        }
    }
    // One URL, as a client asks for it (the host's case does not matter): gone from both.
    let r = purge("cache=pages&url=http%3A%2F%2Fcache.test%2Fcached%2Fa%3Fv%3D1");
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.text().contains("2 worker(s)"), "{}", r.text());
    for c in &mut conns {
        wait_for(DEADLINE, "the purge to apply", || {
            (c.x_cache("/cached/a?v=1") == "MISS").then_some(())
        });
        assert_eq!(c.x_cache("/cached/b"), "HIT", "only that URL went");
    }
    // The whole zone, on both.
    assert_eq!(purge("cache=pages").status, 202);
    for c in &mut conns {
        wait_for(DEADLINE, "the zone purge to apply", || {
            (c.x_cache("/cached/b") == "MISS").then_some(())
        });
    }
    // Refused: an unknown cache, no cache, a URL without its scheme, bad encoding.
    assert_eq!(purge("cache=nope").status, 404);
    assert_eq!(purge("url=http%3A%2F%2Fa%2F").status, 400);
    assert_eq!(purge("cache=pages&url=%2Fcached%2Fb").status, 400);
    assert_eq!(purge("cache=pages&url=%zz").status, 400);
    let get = raw_exchange(
        admin,
        b"GET /cache/purge?cache=pages HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(get.status, 404, "a purge is a POST");
}

#[test]
fn a_broken_admin_bind_is_refused() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    for (bind, want) in [
        ("nowhere", "admin.bind: invalid address"),
        ("127.0.0.1:0x", "admin.bind"),
    ] {
        let text = config(up.addr).replace(
            "[admin]\nbind = \"127.0.0.1:0\"",
            &format!("[admin]\nbind = \"{bind}\""),
        );
        let path = dir.write("bad.toml", &text);
        let (code, out) = ringway_check(&path);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(want), "{want}: {out}");
    }
    // The address of one of its own listeners (checked only: nothing binds it).
    let text = config(up.addr)
        .replace(
            "name = \"main\"\nbind = \"127.0.0.1:0\"",
            "name = \"main\"\nbind = \"127.0.0.1:9\"",
        )
        .replace(
            "[admin]\nbind = \"127.0.0.1:0\"",
            "[admin]\nbind = \"127.0.0.1:9\"",
        );
    let path = dir.write("same.toml", &text);
    let (code, out) = ringway_check(&path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("admin.bind: 127.0.0.1:9 is already used by listener \"main\""),
        "{out}"
    );
    // An address another process holds: refused at start, naming the key.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = config(up.addr).replace(
        "[admin]\nbind = \"127.0.0.1:0\"",
        &format!("[admin]\nbind = \"{}\"", held.local_addr().unwrap()),
    );
    match Ringway::try_start(&text, 2, &[]) {
        Err((status, err)) => {
            assert!(!status.success());
            assert!(err.contains("admin.bind"), "{err}");
        }
        Ok(_) => panic!("started on an address another process holds"),
    }
}

#[test]
fn metrics_show_statuses_retries_and_server_health() {
    let up = Upstream::with(|r| {
        if r.path == "/app/err" {
            Reply::ok("down for maintenance").status(503)
        } else {
            Reply::ok("fine")
        }
    });
    let dead = format!("127.0.0.1:{}", closed_port());
    let unprobed = format!("127.0.0.1:{}", closed_port());
    let live = up.addr.to_string();
    let config = format!(
        r#"[runtime]
workers = 1
{LISTENERS}
[upstream.app]
servers = ["{live}", "{dead}"]
outlier = {{ consecutive_failures = 1, base_ejection = "300s" }}

[upstream.probed]
servers = ["{unprobed}"]
health_check = {{ type = "tcp", interval = "20ms", unhealthy_threshold = 1 }}

[[route]]
match = {{ path_prefix = "/app/" }}
upstream = "app"
retry = {{ attempts = 2, on = ["connect"] }}
"#
    );
    let rw = Ringway::start_n(&config, 2, &[]);
    let (main, admin) = (rw.addrs["main"], rw.addrs["admin"]);
    // Round-robin sends one of these to the dead server first: its refused connect is retried
    // on the live one, and ejects the dead one for the rest of the test.
    for i in 0..4 {
        let r = raw_exchange(
            main,
            format!("GET /app/ok{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    let statuses: Vec<u16> = [
        &b"GET /app/err HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        b"GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/9.9 nonsense\r\n\r\n",
    ]
    .iter()
    .map(|req| raw_exchange(main, req).status)
    .collect();
    assert_eq!(statuses, [503, 404, 400]);

    let metrics = wait_for(DEADLINE, "every response and the probe in /metrics", || {
        let t = scrape(admin).text();
        let probed = format!("upstream=\"probed\",server=\"{unprobed}\"");
        (sum(&t, "ringway_responses_total", "") == 7
            && sum(&t, "ringway_upstream_probe_failures_total", &probed) >= 1
            && t.contains(&format!("ringway_upstream_server_healthy{{{probed}}} 0\n")))
        .then_some(t)
    });
    let class = |c: &str| {
        sum(
            &metrics,
            "ringway_responses_total",
            &format!("code=\"{c}\""),
        )
    };
    assert_eq!(
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(class),
        [0, 4, 0, 2, 1],
        "{metrics}"
    );
    let at = |server: &str| format!("upstream=\"app\",server=\"{server}\"");
    assert_eq!(
        sum(&metrics, "ringway_upstream_requests_total", &at(&live)),
        5,
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "ringway_upstream_requests_total", &at(&dead)),
        1
    );
    assert_eq!(
        sum(&metrics, "ringway_upstream_failures_total", &at(&dead)),
        1
    );
    assert_eq!(
        sum(&metrics, "ringway_upstream_failures_total", &at(&live)),
        0
    );
    assert_eq!(
        sum(
            &metrics,
            "ringway_upstream_retries_total",
            "upstream=\"app\""
        ),
        1
    );
    for (series, server, value) in [
        ("ringway_upstream_server_ejected", &dead, 1),
        ("ringway_upstream_server_ejected", &live, 0),
        ("ringway_upstream_ejections_total", &dead, 1),
        ("ringway_upstream_server_healthy", &live, 1),
    ] {
        assert!(
            metrics.contains(&format!("{series}{{{}}} {value}\n", at(server))),
            "{series} {server}: {metrics}"
        );
    }
}
