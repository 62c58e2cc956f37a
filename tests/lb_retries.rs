//! Retries through the real binary, counted at the upstreams: the budget caps attempts during
//! an outage; a retry goes to a server not yet tried and stops at the attempt limit; connect
//! failures are retried for any method, resets only for idempotent ones; a response timeout
//! is retried when the route asks for it.

mod lb_common;

use lb_common::*;
use std::net::SocketAddr;
use std::time::Duration;

fn outage(route_retry: &str) -> (Ringway, [Backend; 3]) {
    let bs = backends(["a", "b", "c"]);
    for b in &bs {
        b.set_status(503);
    }
    let rw = ringway_over(
        &[&bs[0], &bs[1], &bs[2]],
        "",
        &format!("retry = {route_retry}"),
    );
    (rw, bs)
}

#[test]
fn retry_budget_caps_attempts_during_an_outage() {
    let (rw, bs) =
        outage("{ attempts = 3, on = [\"503\"], budget_percent = 20, budget_min_per_second = 0 }");
    let mut c = Client::new(rw.http());
    let n = 300;
    for _ in 0..n {
        assert_eq!(c.get("/").unwrap().status, 503);
    }
    let attempts: usize = bs.iter().map(|b| b.hits()).sum();
    // Unbudgeted, three attempts each would be 900. The budget allows 20% of the requests
    // plus its initial allowance of 10.
    assert!(attempts > n, "no retry happened at all: {attempts}");
    assert!(
        attempts <= n + n / 5 + 10 + 1,
        "{attempts} attempts for {n} requests"
    );
}

#[test]
fn retries_go_to_untried_servers_up_to_the_attempt_limit() {
    let (rw, bs) = outage(
        "{ attempts = 3, on = [\"503\"], budget_percent = 100, budget_min_per_second = 100000 }",
    );
    let mut c = Client::new(rw.http());
    for _ in 0..50 {
        let r = c.get("/").unwrap();
        // The last attempt's answer is relayed as it is.
        assert_eq!(r.status, 503);
    }
    // Every request tried each of the three servers exactly once.
    for b in &bs {
        assert_eq!(b.hits(), 50, "{}", b.name);
    }
}

/// A refused server and a live one (`a`), round-robin, retrying connect failures.
fn dead_then_live() -> (Ringway, Backend) {
    let a = Backend::start("a");
    let dead: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    let rw = Ringway::start(
        &config(
            &server_list(&[dead, a.addr]),
            "balance = \"round_robin\"",
            // Round-robin sends every request to the dead server first here (the retry's pick
            // moves the cursor back to it): a budget that allows them all isolates the method
            // rule from the budget, which retry_budget_caps_attempts_during_an_outage covers.
            "retry = { on = [\"connect\"], budget_min_per_second = 1000 }",
        ),
        1,
    );
    (rw, a)
}

#[test]
fn connect_failure_is_retried_for_any_method() {
    let (rw, a) = dead_then_live();
    let mut c = Client::new(rw.http());
    for i in 0..20 {
        let r = c
            .request("POST", "/submit", &[], format!("n={i}").as_bytes())
            .unwrap();
        assert_eq!(
            (r.status, r.server().as_str()),
            (200, "a"),
            "request {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(a.hits(), 20);
}

#[test]
fn reset_is_retried_for_get_but_not_for_post() {
    let [a, b] = backends(["a", "b"]);
    a.knobs
        .drop_requests
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Ejection off, so that POSTs keep reaching the dropping server.
    let rw = ringway_over(
        &[&a, &b],
        "balance = \"round_robin\"\noutlier = { consecutive_failures = 0 }",
        "",
    );
    let mut c = Client::new(rw.http());
    for _ in 0..10 {
        let r = c.get("/").unwrap();
        assert_eq!((r.status, r.server().as_str()), (200, "b"), "{r:?}");
    }
    let mut failed = 0;
    for i in 0..10 {
        let r = c
            .request("POST", "/p", &[], format!("n={i}").as_bytes())
            .unwrap();
        match r.status {
            200 => assert_eq!(r.server(), "b"),
            502 => failed += 1,
            s => panic!("unexpected {s}"),
        }
    }
    let posts = |be: &Backend| {
        be.knobs
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == "POST")
            .count()
    };
    // A POST that may have reached a is never sent again: each one reached one server once.
    assert_eq!(posts(&a) + posts(&b), 10);
    assert_eq!(posts(&a), failed);
    assert!(failed > 0);
}

#[test]
fn response_timeout_is_retried_when_the_route_asks() {
    let [slow, fast] = backends(["slow", "fast"]);
    slow.set_delay(Duration::from_secs(5));
    let rw = ringway_over(
        &[&slow, &fast],
        "balance = \"round_robin\"\nresponse_timeout = \"300ms\"",
        "retry = { attempts = 2, on = [\"connect\", \"timeout\"] }",
    );
    let mut c = Client::new(rw.http());
    for _ in 0..4 {
        let r = c.get("/").unwrap();
        assert_eq!((r.status, r.server().as_str()), (200, "fast"), "{r:?}");
    }
    // Each request went to the slow server first (round-robin), timed out, and was retried.
    assert!(slow.hits() >= 2, "slow got {}", slow.hits());
    assert_eq!(fast.hits(), 4);
}

#[test]
fn connect_failure_is_retried_for_a_streamed_request_body() {
    let (rw, a) = dead_then_live();
    // 4 MiB cannot be buffered whole before the upstream is chosen: the body is streamed. A
    // failed connect has sent none of it, so the retry is still safe.
    let body = vec![b'x'; 4 << 20];
    let mut c = Client::new(rw.http());
    for i in 0..4 {
        let r = c.request("POST", "/upload", &[], &body).unwrap();
        assert_eq!(
            (r.status, r.server().as_str()),
            (200, "a"),
            "request {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(a.hits(), 4);
}
