//! The access log through the real binary: nginx's combined format and the JSON preset, the
//! values a line carries (status, bytes, route, upstream tries, request ids, response headers),
//! routes that opt out, refused requests, TLS, log rotation on SIGUSR1, a reload that moves the
//! log, the lines still buffered at exit, and broken `[access_log]` settings refused by key.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The log's lines once it holds at least `n` (workers hand theirs over every 250 ms).
fn lines(path: &Path, n: usize) -> Vec<String> {
    wait_for(Duration::from_secs(10), "access log lines", || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= n).then_some(lines)
    })
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn config(up: &str, log: &Path, log_extra: &str, extra: &str) -> String {
    format!(
        r#"[runtime]
workers = 2

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[upstream.app]
servers = [{up}]

[access_log]
path = {log:?}
{log_extra}

{extra}

[[route]]
name = "health"
match = {{ path = "/healthz" }}
respond = {{ status = 200, body = "ok" }}
access_log = false

[[route]]
name = "hello"
match = {{ path = "/hello" }}
respond = {{ status = 200, body = "hello" }}

[[route]]
name = "app"
match = {{ path_prefix = "/app/" }}
upstream = "app"
"#
    )
}

#[test]
fn combined_lines_say_what_was_asked_and_answered() {
    let up = Upstream::with(|_| Reply::ok("twelve bytes"));
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let mut rw = Ringway::start(&config(&format!("\"{}\"", up.addr), &log, "", ""));
    let (s, _, _) = curl(&[
        "-A",
        "probe \"one\"",
        "-e",
        "http://ref.example/",
        &rw.url("/app/items?id=7"),
    ]);
    assert_eq!(s, 200);
    assert_eq!(get(&rw.url("/healthz")).0, 200);
    assert_eq!(get(&rw.url("/hello")).0, 200);
    assert_eq!(get(&rw.url("/missing")).0, 404);
    // After the exit every worker has handed over every line: the whole log, and no more.
    rw.signal("TERM");
    assert!(rw.wait_exit(Duration::from_secs(30)).0.success());
    let got = lines(&log, 3);
    assert_eq!(got.len(), 3, "{got:#?}");
    let app = got
        .iter()
        .find(|l| l.contains("/app/"))
        .expect("the upstream request is logged");
    // nginx's combined format, byte for byte in every field but the time.
    let (before, after) = app.split_once(" [").unwrap();
    assert_eq!(before, "127.0.0.1 - -");
    let (time, rest) = after.split_once("] ").unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    assert_eq!(
        rest,
        "\"GET /app/items?id=7 HTTP/1.1\" 200 12 \"http://ref.example/\" \"probe \\x22one\\x22\""
    );
    assert!(got
        .iter()
        .any(|l| l.contains("\"GET /hello HTTP/1.1\" 200 5 ")));
    assert!(got
        .iter()
        .any(|l| l.contains("\"GET /missing HTTP/1.1\" 404 ")));
    // The route that opts out is not there.
    assert!(!got.iter().any(|l| l.contains("/healthz")), "{got:#?}");
}

#[test]
fn json_lines_carry_upstream_tries_and_request_ids() {
    let up = Upstream::with(|_| Reply::ok("body").header("x-cache", "HIT"));
    let dead = closed_port();
    let dir = TempDir::new();
    let log = dir.0.join("access.json");
    // One worker, whose balancer meets the dead server on the first request at least.
    let rw = Ringway::start(
        &config(
            &format!("\"127.0.0.1:{dead}\", \"{}\"", up.addr),
            &log,
            "format = \"json\"",
            "",
        )
        .replace("workers = 2", "workers = 1"),
    );
    let (s1, _, _) = curl(&["-H", "X-Request-Id: client-id-1", &rw.url("/app/a")]);
    let (s2, _, _) = curl(&[&rw.url("/app/b")]);
    assert_eq!((s1, s2), (200, 200));
    let got: Vec<_> = lines(&log, 2).iter().map(|l| json(l)).collect();
    let a = got.iter().find(|j| j["target"] == "/app/a").unwrap();
    let b = got.iter().find(|j| j["target"] == "/app/b").unwrap();
    assert_eq!(a["request_id"], "client-id-1");
    // The id Ringway made is the one the upstream was sent.
    let sent = up
        .requests()
        .into_iter()
        .find(|r| r.path == "/app/b")
        .unwrap();
    assert_eq!(
        b["request_id"].as_str().unwrap(),
        sent.header("x-request-id").unwrap()
    );
    for j in [a, b] {
        assert_eq!(j["status"], 200);
        assert_eq!(j["route"], "app");
        assert_eq!(j["method"], "GET");
        assert_eq!(j["protocol"], "HTTP/1.1");
        assert!(j["request_time"].as_f64().unwrap() >= 0.0);
        assert!(j["bytes_sent"].as_u64().unwrap() > 4);
    }
    // A request that met the dead server first, then the live one, lists both tries.
    let tries: Vec<_> = got
        .iter()
        .map(|j| j["upstream_addr"].as_str().unwrap().to_string())
        .collect();
    let retried = format!("127.0.0.1:{dead}, {}", up.addr);
    assert!(tries.contains(&retried), "{tries:?}");
    assert!(
        tries.iter().all(|t| t.ends_with(&up.addr.to_string())),
        "{tries:?}"
    );
    let r = got
        .iter()
        .find(|j| j["upstream_addr"] == retried.as_str())
        .unwrap();
    // The refused connect is logged as nginx logs it: 502.
    assert_eq!(r["upstream_status"], "502, 200");
    let times = r["upstream_header_time"].as_str().unwrap();
    assert!(times.starts_with("-, 0."), "{times}");
}

#[test]
fn custom_formats_read_response_headers_and_refusals() {
    let up = Upstream::with(|_| Reply::ok("x").header("x-cache", "HIT"));
    let dir = TempDir::new();
    let log = dir.0.join("custom.log");
    let fmt = "format = \"${status} ${request} ${body_bytes_sent} ${response_header.x-cache} ${upstream} ${header.x-tenant}|${msec}|${host}\"";
    let rw = Ringway::start(&config(&format!("\"{}\"", up.addr), &log, fmt, ""));
    let (s, _, _) = curl(&["-H", "X-Tenant: t\"1", &rw.url("/app/x")]);
    assert_eq!(s, 200);
    let bad = raw_exchange(rw.addr(), b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bad.status, 400);
    // An absolute-form request line is logged as sent; the host as nginx's $host.
    let abs = raw_exchange(
        rw.addr(),
        b"GET http://Shop.Example:8080/app/abs HTTP/1.1\r\nHost: Shop.Example:8080\r\n\r\n",
    );
    assert_eq!(abs.status, 200);
    let got = lines(&log, 3);
    let absolute = got.iter().find(|l| l.contains("/app/abs")).unwrap();
    assert!(
        absolute.starts_with("200 GET http://Shop.Example:8080/app/abs HTTP/1.1 1 HIT app -|")
            && absolute.ends_with("|shop.example"),
        "{absolute}"
    );
    let ok = got.iter().find(|l| l.contains("/app/x")).unwrap();
    let f: Vec<&str> = ok.split('|').collect();
    let (fields, msec) = (f[0], f[1]);
    assert_eq!(fields, "200 GET /app/x HTTP/1.1 1 HIT app t\\x221");
    let (secs, ms) = msec.split_once('.').unwrap();
    assert!(secs.parse::<u64>().unwrap() > 1_700_000_000 && ms.len() == 3);
    // A request refused unread: its status and the bytes of the refusal, nothing it asked.
    let refused = got.iter().find(|l| l.starts_with("400 ")).unwrap();
    let (fields, _) = refused.split_once('|').unwrap();
    let f: Vec<&str> = fields.split(' ').collect();
    assert_eq!((f[0], f[1]), ("400", "-"));
    assert!(f[2].parse::<u64>().unwrap() > 0, "{refused}");
}

#[test]
fn tls_requests_are_logged_as_https() {
    let up = Upstream::with(|_| Reply::ok("secure"));
    let dir = TempDir::new();
    let cert = make_cert(&dir.0, "site", &["localhost"]);
    let log = dir.0.join("tls.log");
    let cfg = config(
        &format!("\"{}\"", up.addr),
        &log,
        "format = \"${scheme} ${host} ${status} ${body_bytes_sent}\"",
        "",
    )
    .replace(
        "bind = \"127.0.0.1:0\"\n",
        &format!(
            "bind = \"127.0.0.1:0\"\n[listener.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.cert, cert.key
        ),
    );
    let rw = Ringway::start(&cfg);
    let port = rw.addr().port();
    let (s, body, _) = curl(&[
        "--cacert",
        cert.cert.to_str().unwrap(),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/app/t"),
    ]);
    assert_eq!((s, body.as_slice()), (200, &b"secure"[..]));
    // nginx's $host: without the port.
    assert_eq!(lines(&log, 1)[0], "https localhost 200 6");
}

#[test]
fn rotation_reload_and_exit_keep_every_line() {
    let up = Upstream::with(|_| Reply::ok("r"));
    let dir = TempDir::new();
    let log = dir.0.join("a.log");
    let mut rw = Ringway::start(&config(&format!("\"{}\"", up.addr), &log, "", ""));
    assert_eq!(get(&rw.url("/app/1")).0, 200);
    lines(&log, 1);
    // Rotation: the file is moved away, SIGUSR1 opens the path again.
    let rotated = dir.0.join("a.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rw.signal("USR1");
    wait_for(Duration::from_secs(10), "the log reopened", || {
        log.exists().then_some(())
    });
    assert_eq!(get(&rw.url("/app/2")).0, 200);
    assert!(lines(&log, 1)[0].contains("/app/2"));
    assert_eq!(lines(&rotated, 1).len(), 1);

    // A reload moves the log to another file.
    let moved: PathBuf = dir.0.join("b.log");
    let path = rw.config_path.clone().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(&format!("{log:?}"), &format!("{moved:?}")),
    )
    .unwrap();
    rw.signal("HUP");
    wait_for(Duration::from_secs(10), "the reload", || {
        rw.stderr().contains("reloaded").then_some(())
    });
    assert_eq!(get(&rw.url("/app/3")).0, 200);
    assert!(lines(&moved, 1)[0].contains("/app/3"));

    // Lines still in a worker's buffer at SIGTERM are written before the exit: requests on
    // one keep-alive connection, as fast as they go, then the signal at once.
    let agent = agent();
    for i in 4..24 {
        let (s, _) = ureq_result(agent.get(&rw.url(&format!("/app/{i}"))).call());
        assert_eq!(s, 200);
    }
    rw.signal("TERM");
    let (status, _) = rw.wait_exit(Duration::from_secs(30));
    assert!(status.success());
    let text = std::fs::read_to_string(&moved).unwrap();
    for i in 3..24 {
        assert!(
            text.contains(&format!("/app/{i} ")),
            "/app/{i} missing:\n{text}"
        );
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}

#[test]
fn broken_settings_are_refused_by_key() {
    let dir = TempDir::new();
    let cases = [
        (
            "path = \"/tmp/x.log\"\nformat = \"${remote_addr}\"",
            "access_log.format",
            "unknown variable",
        ),
        (
            "path = \"/tmp/x.log\"\nformat = \"static text\"",
            "access_log.format",
            "no ${variable}",
        ),
        (
            "path = \"/tmp/x.log\"\nescape = \"xml\"",
            "access_log.escape",
            "unknown escape",
        ),
        (
            "path = \"/tmp/x.log\"\nbuffer = \"1KiB\"",
            "access_log.buffer",
            "out of range",
        ),
        ("path = \"\"", "access_log.path", "must name a file"),
        ("format = \"combined\"", "access_log", "path"),
    ];
    for (i, (table, key, reason)) in cases.iter().enumerate() {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[access_log]\n{table}\n[[route]]\nrespond = {{ status = 200 }}\n"
        );
        let path = dir.write(&format!("bad{i}.toml"), &text);
        let (code, out) = ringway_check(&path);
        assert_eq!(code, Some(1), "{table}: {out}");
        assert!(out.contains(key) && out.contains(reason), "{table}: {out}");
    }
    // A file that cannot be opened is refused at start, naming the key and the path.
    let text = config(
        "\"127.0.0.1:1\"",
        Path::new("/nonexistent-dir/access.log"),
        "",
        "",
    );
    let err = Ringway::try_start(&text, 1, &[]).err().expect("refused");
    assert!(!err.0.success());
    assert!(
        err.1.contains("access_log.path") && err.1.contains("/nonexistent-dir/access.log"),
        "{}",
        err.1
    );
}
