//! Limits and drain through the real binary: past `max_connections` a request gets 503 at once
//! instead of waiting behind the held ones; `drain = true` and SIGHUP send no new request to
//! the server while the one it is answering still completes.

mod lb_common;

use lb_common::*;
use std::sync::atomic::Ordering;
use std::thread;

#[test]
fn max_connections_answers_503_instead_of_queueing() {
    let a = Backend::start("a");
    let rw = Ringway::start(
        &config(&server_list(&[a.addr]), "max_connections = 2", ""),
        1,
    );
    let addr = rw.http();
    let held: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || Client::new(addr).get("/hold").unwrap()))
        .collect();
    wait_for(DEADLINE, "two held requests at the server", || {
        (a.knobs.active.load(Ordering::SeqCst) == 2).then_some(())
    });
    // The third gets its answer while the two are still held: nothing waits in a queue.
    let mut c = Client::new(addr);
    for _ in 0..5 {
        let r = c.get("/").unwrap();
        assert_eq!(r.status, 503, "{r:?}");
    }
    assert_eq!(a.knobs.active.load(Ordering::SeqCst), 2);
    assert_eq!(a.hits(), 2, "a request past the limit reached the server");
    a.knobs.gate.open();
    for h in held {
        assert_eq!(h.join().unwrap().status, 200);
    }
    // The slots are free again.
    assert_eq!(Client::new(addr).get("/").unwrap().status, 200);
}

fn drain_config(a: &Backend, b: &Backend, drain_a: bool) -> String {
    config(
        &format!(
            "[{{ addr = \"{}\", drain = {drain_a} }}, \"{}\"]",
            a.addr, b.addr
        ),
        "balance = \"round_robin\"",
        "",
    )
}

#[test]
fn drain_and_reload_send_nothing_new_while_in_flight_finishes() {
    let [a, b] = backends(["a", "b"]);
    let rw = Ringway::start(&drain_config(&a, &b, false), 1);
    let addr = rw.http();
    // One worker, round-robin from the first server: this request is held at a.
    let held = thread::spawn(move || Client::new(addr).get("/hold").unwrap());
    wait_for(DEADLINE, "the held request at a", || {
        (a.knobs.active.load(Ordering::SeqCst) == 1).then_some(())
    });

    rw.reload(&drain_config(&a, &b, true));
    // Workers pick the new config up on their next tick: before it, round-robin alternates,
    // so two answers from b in a row mean the drained config is in use.
    let mut c = Client::new(addr);
    let mut last = String::new();
    wait_for(DEADLINE, "the drained config in use", || {
        let s = c.get("/").unwrap().server();
        let two = s == "b" && last == "b";
        last = s;
        two.then_some(())
    });
    let a_hits = a.hits();
    let seq = sequential(addr, 100, "/");
    assert!(seq.iter().all(|s| s == "b"), "{seq:?}");
    assert_eq!(a.hits(), a_hits, "the draining server got new requests");

    // The in-flight request at a is allowed to finish.
    assert_eq!(a.knobs.active.load(Ordering::SeqCst), 1);
    a.knobs.gate.open();
    let r = held.join().unwrap();
    assert_eq!((r.status, r.server().as_str()), (200, "a"));
}
