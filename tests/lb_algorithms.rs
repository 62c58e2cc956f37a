//! Balancing algorithms through the real binary, one worker: smooth weighted round-robin gives
//! exact shares in every cycle, round-robin cycles, random spreads, least_conn and p2c_ewma
//! send little to a slow server, and ring_hash keeps each key on its server and moves only the
//! removed server's keys (about 1/N) on a reload or an ejection.

mod lb_common;

use lb_common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[test]
fn smooth_weighted_round_robin_is_exact_in_every_cycle() {
    let [a, b, c] = backends(["a", "b", "c"]);
    let servers = format!(
        "[{{ addr = \"{}\", weight = 1 }}, {{ addr = \"{}\", weight = 2 }}, {{ addr = \"{}\", weight = 3 }}]",
        a.addr, b.addr, c.addr
    );
    let rw = Ringway::start(&config(&servers, "", ""), 1);
    let seq = sequential(rw.http(), 600, "/");
    // One worker: nginx's smooth WRR is deterministic, so every cycle of 6 holds 1/2/3 exactly
    // (never a burst of the heavy server longer than its weight allows).
    for (k, cycle) in seq.chunks(6).enumerate() {
        let t = tally(cycle);
        assert_eq!(
            (t.get("a"), t.get("b"), t.get("c")),
            (Some(&1), Some(&2), Some(&3)),
            "cycle {k}: {cycle:?}"
        );
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (100, 200, 300));
}

#[test]
fn round_robin_cycles_through_servers() {
    let [a, b, c] = backends(["a", "b", "c"]);
    let rw = ringway_over(&[&a, &b, &c], "balance = \"round_robin\"", "");
    let seq = sequential(rw.http(), 300, "/");
    for w in seq.windows(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, ["a", "b", "c"], "{seq:?}");
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (100, 100, 100));
}

#[test]
fn random_spreads_over_all_servers() {
    let [a, b, c] = backends(["a", "b", "c"]);
    let rw = ringway_over(&[&a, &b, &c], "balance = \"random\"", "");
    sequential(rw.http(), 900, "/");
    // Expected 300 each, standard deviation about 14: 200..400 fails only if it is not random.
    for b in [&a, &b, &c] {
        assert!((200..400).contains(&b.hits()), "{}: {}", b.name, b.hits());
    }
}

/// 8 clients for `total` requests against two fast servers and one answering after 300 ms;
/// returns the slow server's share of the requests.
fn slow_server_share(balance: &str, total: usize) -> f64 {
    let [a, b, slow] = backends(["a", "b", "slow"]);
    slow.set_delay(Duration::from_millis(300));
    let rw = ringway_over(&[&slow, &a, &b], &format!("balance = \"{balance}\""), "");
    let done = Arc::new(AtomicUsize::new(0));
    let addr = rw.http();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let done = done.clone();
            thread::spawn(move || {
                let mut c = Client::new(addr);
                while done.fetch_add(1, Ordering::SeqCst) < total {
                    let r = c.get("/").unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let all = a.hits() + b.hits() + slow.hits();
    assert_eq!(all, total);
    assert!(a.hits() > 0 && b.hits() > 0);
    slow.hits() as f64 / all as f64
}

#[test]
fn least_conn_steers_away_from_a_slow_server() {
    let share = slow_server_share("least_conn", 600);
    // Round-robin would give it a third.
    assert!(share < 0.20, "slow server got {:.1}%", share * 100.0);
}

#[test]
fn p2c_ewma_steers_away_from_a_slow_server() {
    let share = slow_server_share("p2c_ewma", 600);
    assert!(share < 0.20, "slow server got {:.1}%", share * 100.0);
}

/// Which server answers each key (X-User header), asked twice: the answer must not change.
fn owners(addr: SocketAddr, keys: &[String]) -> HashMap<String, String> {
    let mut c = Client::new(addr);
    let mut m = HashMap::new();
    for round in 0..2 {
        for k in keys {
            let r = c.request("GET", "/", &[("x-user", k)], b"").unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            let prev = m.insert(k.clone(), r.server());
            if round == 1 {
                assert_eq!(prev.as_ref(), Some(&r.server()), "key {k} moved");
            }
        }
    }
    m
}

fn ring_config(servers: &[SocketAddr], extra: &str) -> String {
    config(
        &server_list(servers),
        &format!("balance = \"ring_hash\"\nhash_key = \"header:X-User\"\n{extra}"),
        "",
    )
}

#[test]
fn ring_hash_moves_only_the_removed_servers_keys_on_reload() {
    let bs: Vec<Backend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let all: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let rw = Ringway::start(&ring_config(&all, ""), 1);
    let keys: Vec<String> = (0..400).map(|k| format!("user-{k}")).collect();
    let before = owners(rw.http(), &keys);
    let per_server = tally(&before.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        per_server.len(),
        4,
        "every server owns keys: {per_server:?}"
    );

    // Remove d from the config and reload.
    rw.reload(&ring_config(&all[..3], ""));
    let d_key = keys.iter().find(|k| before[*k] == "d").unwrap().clone();
    let mut c = Client::new(rw.http());
    wait_for(DEADLINE, "the reloaded ring to be in use", || {
        let r = c.request("GET", "/", &[("x-user", &d_key)], b"").unwrap();
        (r.server() != "d").then_some(())
    });
    let d_hits = bs[3].hits();
    let after = owners(rw.http(), &keys);
    assert_eq!(bs[3].hits(), d_hits, "removed server still gets requests");
    let mut moved = 0;
    for k in &keys {
        if before[k] == "d" {
            moved += 1;
            assert_ne!(after[k], "d");
        } else {
            assert_eq!(before[k], after[k], "key {k} of a remaining server moved");
        }
    }
    // About 1/N = 100 of 400 keys; a ring with 160 points per server stays well within 2x.
    assert!((50..=200).contains(&moved), "{moved} of 400 keys moved");
}

#[test]
fn ring_hash_ejected_server_passes_only_its_keys_without_failures() {
    let mut bs: Vec<Backend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let all: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let rw = Ringway::start(
        &ring_config(&all, "outlier = { consecutive_failures = 2 }"),
        1,
    );
    let keys: Vec<String> = (0..200).map(|k| format!("user-{k}")).collect();
    let before = owners(rw.http(), &keys);
    bs[2].kill();
    // Connect failures are retried on the next server of the ring: no request fails, and the
    // dead server is ejected after two of them.
    let after = owners(rw.http(), &keys);
    rw.wait_lines(&format!("server {} ejected for", bs[2].addr), 1);
    let mut moved = 0;
    for k in &keys {
        if before[k] == "c" {
            moved += 1;
            assert_ne!(after[k], "c");
        } else {
            assert_eq!(before[k], after[k], "key {k} of a live server moved");
        }
    }
    assert!((25..=100).contains(&moved), "{moved} of 200 keys moved");
}
