//! The per-core upstream keep-alive pool through the real binary: a pooled connection the
//! upstream closed is detected or retried (the client never sees it), idle connections are
//! closed after `idle_timeout`, and no more than `max_idle` are kept.

mod common;

use common::*;

fn silent_closer() -> Upstream {
    Upstream::with(|r| {
        let mut reply = Reply::ok(format!("{} {} {}", r.method, r.path, r.body_len));
        reply.silent_close = true;
        reply
    })
}

#[test]
fn stale_pooled_connection_is_not_seen_by_get_requests() {
    let up = silent_closer();
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let agent = agent();
    for i in 0..10 {
        // The upstream has closed every connection it served so far.
        wait_for(DEADLINE, "upstream to close", || {
            (up.finished() == i).then_some(())
        });
        let (code, resp) = ureq_result(agent.get(&rw.url(&format!("/g{i}"))).call());
        assert_eq!(code, 200, "request {i} hit the stale connection");
        assert_eq!(resp.into_string().unwrap(), format!("GET /g{i} 0"));
    }
    assert_eq!(up.accepted(), 10);
}

#[test]
fn stale_pooled_connection_is_not_seen_by_post_requests() {
    let up = silent_closer();
    let rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let agent = agent();
    for i in 0..10 {
        wait_for(DEADLINE, "upstream to close", || {
            (up.finished() == i).then_some(())
        });
        // A POST is not idempotent: the proxy must notice the close before sending, not retry
        // blindly after.
        let (code, resp) = ureq_result(agent.post(&rw.url(&format!("/p{i}"))).send_string("data"));
        assert_eq!(code, 200, "POST {i} hit the stale connection");
        assert_eq!(resp.into_string().unwrap(), format!("POST /p{i} 4"));
    }
    assert_eq!(up.count(), 10, "a POST was sent twice");
}

#[test]
fn idle_upstream_connections_are_closed_after_idle_timeout() {
    let up = Upstream::start("a");
    let rw = Ringway::start(&simple_config(&[up.addr], "idle_timeout = \"200ms\"", ""));
    assert_eq!(get(&rw.url("/")).0, 200);
    assert_eq!(up.accepted(), 1);
    // The proxy closes the pooled connection itself; the upstream sees EOF.
    wait_for(DEADLINE, "idle upstream connection to be closed", || {
        (up.finished() == 1).then_some(())
    });
    // And the next request opens a fresh one without trouble.
    assert_eq!(get(&rw.url("/again")).0, 200);
    assert_eq!(up.accepted(), 2);
}

#[test]
fn pool_keeps_at_most_max_idle_connections() {
    let gate = Gate::default();
    let g = gate.clone();
    let up = Upstream::with(move |r| {
        let mut reply = Reply::ok(r.path.clone());
        if r.path.starts_with("/held") {
            reply.gate = Some(g.clone());
        }
        reply
    });
    let rw = Ringway::start(&simple_config(&[up.addr], "max_idle = 2", ""));
    // Five exchanges at once need five upstream connections.
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let url = rw.url(&format!("/held{i}"));
            std::thread::spawn(move || get(&url))
        })
        .collect();
    up.wait_requests(5);
    assert_eq!(up.accepted(), 5);
    gate.open();
    for c in clients {
        assert_eq!(c.join().unwrap().0, 200);
    }
    // Only two may stay pooled: the other three are closed.
    wait_for(DEADLINE, "surplus connections to be closed", || {
        (up.finished() >= 3).then_some(())
    });
    // The two pooled ones serve the next requests.
    let agent = agent();
    for i in 0..2 {
        assert_eq!(
            ureq_result(agent.get(&rw.url(&format!("/n{i}"))).call()).0,
            200
        );
    }
    assert_eq!(up.accepted(), 5, "pooled connections were not reused");
}
