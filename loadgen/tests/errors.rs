//! Errors are classified by cause: resets, timeouts, refused connects, unparseable responses
//! and status classes, each counted exactly per failed request.

mod common;

use std::process::Command;

use common::{run_json, u, CountingOrigin, Serve, BIN};

fn errors(r: &serde_json::Value) -> [u64; 6] {
    [
        "connect",
        "reset",
        "timeout",
        "status_4xx",
        "status_5xx",
        "parse",
    ]
    .map(|k| u(r, &["errors", k]))
}

#[test]
fn resets_are_counted_per_request() {
    let s = Serve::start(&["--reset-every", "10"]);
    let r = run_json(&["-c", "1", "-n", "100", &s.url()]);
    assert_eq!(errors(&r), [0, 10, 0, 0, 0, 0]);
    assert_eq!((u(&r, &["requests"]), u(&r, &["responses"])), (100, 90));
}

#[test]
fn status_classes() {
    for (status, expect) in [("503", [0, 0, 0, 0, 20, 0]), ("404", [0, 0, 0, 20, 0, 0])] {
        let s = Serve::start(&["--status", status]);
        let r = run_json(&["-c", "2", "-n", "20", &s.url()]);
        assert_eq!(errors(&r), expect, "status {status}");
        assert_eq!(u(&r, &["responses"]), 20);
    }
}

#[test]
fn refused_connects() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let r = run_json(&["-c", "1", "-n", "5", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(errors(&r), [5, 0, 0, 0, 0, 0]);
    assert_eq!(u(&r, &["responses"]), 0);
}

#[test]
fn slow_responses_time_out() {
    let s = Serve::start(&["--delay", "2s"]);
    let r = run_json(&["-c", "1", "-n", "2", "--timeout", "100ms", &s.url()]);
    assert_eq!(errors(&r), [0, 0, 2, 0, 0, 0]);
}

#[test]
fn garbage_is_a_parse_error() {
    let origin = CountingOrigin::start(b"SPEAKING GOPHER NOW\r\n\r\n");
    let r = run_json(&["-c", "1", "-n", "3", &origin.url()]);
    assert_eq!(errors(&r), [0, 0, 0, 0, 0, 3]);
    assert_eq!(origin.seen(), 3);
}

#[test]
fn serve_refuses_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args(["serve", "--bind", &addr])
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "serve shared a port that was taken");
}
