//! Open loop (`--rate`) against `loadgen serve`: the rate is held within a stated tolerance, and a
//! single 500 ms stall shows up in p99 the way coordinated-omission correction says it must.

mod common;

use common::{f, run_json, u, Serve};

/// The achieved rate must be within 5% of the target (the report's own shortfall threshold).
const RATE_TOLERANCE: f64 = 0.05;

#[test]
fn constant_rate_is_held() {
    let s = Serve::start(&[]);
    let r = run_json(&["--rate", "2000", "-c", "20", "-d", "3s", &s.url()]);
    let rps = f(&r, &["rps"]);
    assert_eq!(r["mode"], "open");
    assert_eq!(f(&r, &["target_rps"]), 2000.0);
    assert!(
        (rps - 2000.0).abs() <= 2000.0 * RATE_TOLERANCE,
        "achieved {rps} req/s for a 2000 req/s target"
    );
    let sent = u(&r, &["requests"]) as f64;
    assert!(
        (sent - 6000.0).abs() <= 6000.0 * RATE_TOLERANCE,
        "sent {sent}"
    );
}

#[test]
fn open_loop_count_is_exact() {
    let s = Serve::start(&[]);
    let r = run_json(&["--rate", "1000", "-c", "10", "-n", "500", &s.url()]);
    assert_eq!(u(&r, &["requests"]), 500);
    assert_eq!(u(&r, &["responses"]), 500);
}

/// Rate R, duration D, one stall of S starting at about t = 1 s. Requests due during the stall
/// wait until it ends, so a request due at time x into the stall waits about S - x: the share of
/// requests with latency >= L is (S - L) * R / (R * D) = (S - L) / D. p99 is therefore at least
/// S - 0.01 * D. A closed-loop tool sees only one stalled request per connection instead.
#[test]
fn stall_is_reflected_in_p99() {
    const RATE: u64 = 1000;
    const D_S: f64 = 4.0;
    const STALL_MS: f64 = 500.0;
    let bound_ms = STALL_MS - 0.01 * D_S * 1000.0; // 460 ms
    let s = Serve::start(&["--stall-after", &RATE.to_string(), "--stall", "500ms"]);
    let r = run_json(&[
        "--rate",
        &RATE.to_string(),
        "-c",
        "10",
        "-d",
        "4s",
        &s.url(),
    ]);
    let p99_ms = f(&r, &["latency_us", "p99"]) / 1000.0;
    let max_ms = f(&r, &["latency_us", "max"]) / 1000.0;
    assert!(
        p99_ms >= bound_ms * 0.95,
        "open-loop p99 {p99_ms:.1} ms hides the stall (bound {bound_ms} ms)"
    );
    assert!(max_ms >= STALL_MS * 0.95, "max {max_ms:.1} ms");
    assert_eq!(u(&r, &["errors", "timeout"]), 0);

    // The same stall under a closed loop: only the requests in flight (one per connection) see
    // it, so once there are more than 100 per stalled request, p99 stays below the stall.
    let s = Serve::start(&["--stall-after", "1000", "--stall", "500ms"]);
    let c = run_json(&["-c", "10", "-d", "3s", &s.url()]);
    let closed_max_ms = f(&c, &["latency_us", "max"]) / 1000.0;
    assert!(
        closed_max_ms >= STALL_MS * 0.95,
        "closed max {closed_max_ms:.1} ms"
    );
    if u(&c, &["responses"]) > 10 * 100 * 2 {
        let closed_p99_ms = f(&c, &["latency_us", "p99"]) / 1000.0;
        assert!(closed_p99_ms < bound_ms, "closed p99 {closed_p99_ms:.1} ms");
    }
}

/// Two connections against a 50 ms origin can carry at most 40 req/s, whatever the machine: a
/// 1000 req/s target must be reported as missed, plainly, and the run still ends on time.
#[test]
fn unreachable_rate_is_reported_plainly() {
    let s = Serve::start(&["--delay", "50ms"]);
    let json = common::scratch("short.json");
    let out = std::process::Command::new(common::BIN)
        .args(["--rate", "1000", "-c", "2", "-d", "1s", "-q", "--json"])
        .arg(&json)
        .arg(s.url())
        .output()
        .expect("run loadgen");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("WARNING: target rate not met"),
        "no warning in:\n{stdout}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    let _ = std::fs::remove_file(&json);
    assert!(f(&r, &["rps"]) <= 40.0 * 1.2, "rps {}", f(&r, &["rps"]));
    assert!(f(&r, &["duration_s"]) < 1.5, "the run must stop at its end");
}
