//! Process lifecycle of the real binary: SIGTERM drain (an in-flight request completes, new
//! connections are refused, exit 0 with per-worker statistics), `ringway check` on broken and
//! valid files (including the shipped `config/*.toml`), refusing a port another process holds,
//! and the built-in default config's welcome page; the transparent-huge-page switch.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;

#[test]
fn sigterm_drains_in_flight_request_then_exits_zero() {
    let gate = Gate::default();
    let g = gate.clone();
    let up = Upstream::with(move |r| {
        let mut reply = Reply::ok(format!("finished {}", r.path));
        if r.path == "/slow" {
            reply.gate = Some(g.clone());
        }
        reply
    });
    let mut rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    let addr = rw.addr();
    assert_eq!(get(&rw.url("/warm")).0, 200);

    // A slow request in flight: the upstream holds its answer until the gate opens.
    let url = rw.url("/slow");
    let client = std::thread::spawn(move || get(&url));
    up.wait_requests(2);

    rw.signal("TERM");
    // Listeners close promptly: new connections are refused while the request is still held.
    wait_for(
        DEADLINE,
        "new connections to be refused",
        || match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    assert!(
        rw.try_wait().is_none(),
        "ringway exited with a request in flight:\n{}",
        rw.stderr()
    );
    assert!(
        !client.is_finished(),
        "slow request ended before the upstream answered"
    );

    // Release the upstream: the request completes although draining started long ago.
    gate.open();
    let (code, body) = client.join().unwrap();
    assert_eq!((code, body.as_str()), (200, "finished /slow"));

    let (status, stderr) = rw.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (requests, _, _) = worker_stats(&stderr);
    assert_eq!(requests, 2, "{stderr}");
}

#[test]
fn sigterm_with_idle_keepalive_connection_exits_promptly() {
    let up = Upstream::start("a");
    let mut rw = Ringway::start(&simple_config(&[up.addr], "", ""));
    // An idle keep-alive client must not hold the drain for the whole drain_timeout (30 s here).
    let mut s = connect(rw.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    let (status, stderr) = rw.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn check_names_the_broken_key_and_exits_1() {
    let dir = TempDir::new();
    let cases = [
        (
            "unknown-key.toml",
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[proxy]\nx_forwarded_fro = true\n\
             [[route]]\nrespond = { status = 200 }\n",
            "x_forwarded_fro",
        ),
        (
            "bad-duration.toml",
            "[http]\nheader_timeout = \"ten seconds\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
             [[route]]\nrespond = { status = 200 }\n",
            "http.header_timeout",
        ),
        (
            "missing-upstream.toml",
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nupstream = \"nope\"\n",
            "route",
        ),
        (
            "bad-addr.toml",
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.app]\nservers = [\"not an address\"]\n\
             [[route]]\nupstream = \"app\"\n",
            "upstream.app.servers",
        ),
        (
            "bad-huge-pages.toml",
            "[runtime]\ntransparent_huge_pages = \"no\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
             [[route]]\nrespond = { status = 200 }\n",
            "runtime.transparent_huge_pages",
        ),
    ];
    for (name, text, key) in cases {
        let path = dir.write(name, text);
        let out = Command::new(bin())
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("{}: ", path.display())))
            .unwrap_or_else(|| panic!("{name}: no 'FILE: key: reason' line in:\n{stderr}"));
        assert!(
            line.contains(key),
            "{name}: key {key} not named in {line:?}"
        );
    }
    // Running with a broken file refuses to start, with the same message.
    let path = dir.0.join("bad-duration.toml");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.header_timeout"));
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = TempDir::new();
    let path = dir.write(
        "ok.toml",
        &simple_config(&["127.0.0.1:9".parse().unwrap()], "", ""),
    );
    let out = Command::new(bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{}: ok", path.display())),
        "{stdout}"
    );
}

#[test]
fn shipped_example_configs_pass_check() {
    let dir = repo_path("config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        eprintln!("skipped: no config/*.toml yet");
        return;
    }
    for f in files {
        let out = Command::new(bin()).arg("check").arg(&f).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} fails check:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn second_instance_on_the_same_port_is_refused() {
    let up = Upstream::start("a");
    let first = Ringway::start(&simple_config(&[up.addr], "", ""));
    let port = first.addr().port();
    let cfg =
        simple_config(&[up.addr], "", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    match Ringway::try_start(&cfg, 1, &[]) {
        Ok(_) => panic!("a second ringway started on port {port} held by the first"),
        Err((status, stderr)) => {
            assert!(!status.success());
            assert!(
                stderr.contains(&port.to_string()),
                "unclear error: {stderr}"
            );
            assert!(
                stderr.to_ascii_lowercase().contains("bind"),
                "unclear error: {stderr}"
            );
        }
    }
    // The first one is unaffected and still gets every request.
    for i in 0..10 {
        assert_eq!(get(&first.url(&format!("/{i}"))).0, 200);
    }
    assert_eq!(up.count(), 10);

    // A port held by a plain (non-reuseport) process is refused too.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let cfg =
        simple_config(&[up.addr], "", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    assert!(Ringway::try_start(&cfg, 1, &[]).is_err());
}

#[test]
fn two_listeners_and_auto_workers() {
    let up = Upstream::start("a");
    let cfg = format!(
        r#"[runtime]
workers = "auto"

[[listener]]
name = "one"
bind = "127.0.0.1:0"

[[listener]]
name = "two"
bind = "127.0.0.1:0"

[upstream.app]
servers = ["{}"]

[[route]]
upstream = "app"
"#,
        up.addr
    );
    let rw = Ringway::start_n(&cfg, 2, &[]);
    let one: SocketAddr = rw.addrs["one"];
    let two: SocketAddr = rw.addrs["two"];
    assert_ne!(one.port(), two.port());
    for a in [one, two] {
        let r = raw_exchange(a, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.text(), "a GET /x");
    }
}

#[test]
fn default_config_serves_welcome_page_on_8080() {
    // Skip when something else holds the port; the probe is released right before the start.
    match TcpListener::bind("127.0.0.1:8080") {
        Ok(l) => drop(l),
        Err(_) => {
            eprintln!("skipped: 127.0.0.1:8080 is in use");
            return;
        }
    }
    let rw = match spawn_ringway(Command::new(bin()), 1, None) {
        Ok(rw) => rw,
        Err((_, stderr)) if stderr.contains("8080") => {
            eprintln!("skipped: 8080 taken meanwhile: {stderr}");
            return;
        }
        Err((status, stderr)) => panic!("default config failed ({status}): {stderr}"),
    };
    assert_eq!(rw.addr(), "127.0.0.1:8080".parse().unwrap());
    let (code, body) = get("http://127.0.0.1:8080/");
    assert_eq!(code, 200);
    assert!(body.contains("Welcome to Ringway"), "{body}");
}

#[test]
fn legacy_driver_serves_and_drains() {
    // Whatever the suite's environment, this one runs on the epoll driver: a blocking listener
    // once stalled that driver's thread in accept after the first connection.
    let up = Upstream::start("a");
    let mut rw = Ringway::start_n(
        &simple_config(&[up.addr], "", ""),
        1,
        &[("RINGWAY_FORCE_LEGACY", "1")],
    );
    for i in 0..3 {
        // A fresh connection each time: the accept loop must come back for more.
        let r = raw_exchange(
            rw.addr(),
            format!("GET /{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.text(), format!("a GET /{i}"));
    }
    let (status, stderr) = rw.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("legacy"), "driver not reported: {stderr}");
    assert_eq!(worker_stats(&stderr).0, 3, "{stderr}");
}

#[test]
fn sighup_reloads_the_config_and_refuses_a_broken_one() {
    let cfg = |body: &str| {
        format!(
            "[runtime]\nworkers = 1\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\
             [[route]]\nrespond = {{ status = 200, body = \"{body}\" }}\n"
        )
    };
    let rw = Ringway::start(&cfg("v1"));
    let path = rw.config_path.clone().unwrap();
    assert_eq!(get(&rw.url("/")).1, "v1");
    // The listener's port must stay what it is: keep the bound address in the new file.
    let pinned = |text: String| text.replace("127.0.0.1:0", &rw.addr().to_string());
    std::fs::write(&path, pinned(cfg("v2"))).unwrap();
    rw.signal("HUP");
    wait_for(DEADLINE, "the new config to serve", || {
        (get(&rw.url("/")).1 == "v2").then_some(())
    });
    std::fs::write(&path, "[[listener]]\nbogus = 1\n").unwrap();
    rw.signal("HUP");
    wait_for(DEADLINE, "the reload to be refused", || {
        rw.stderr().contains("refused").then_some(())
    });
    assert_eq!(
        get(&rw.url("/")).1,
        "v2",
        "a broken reload replaced the config"
    );
}

#[test]
fn transparent_huge_pages_follow_the_runtime_key() {
    let up = Upstream::start("a");
    let base = simple_config(&[up.addr], "", "");
    // `THP_enabled` reads 0 once a process has turned transparent huge pages off. By default
    // Ringway leaves the setting as it found it (inherited from this process).
    let thp_enabled = |rw: &Ringway| proc_status(&rw.pid().to_string(), "THP_enabled");
    let inherited = proc_status("self", "THP_enabled");
    for (setting, expected) in [
        ("", inherited.as_str()),
        ("transparent_huge_pages = false\n", "0"),
    ] {
        let config = base.replacen("[runtime]\n", &format!("[runtime]\n{setting}"), 1);
        let mut rw = Ringway::start(&config);
        let r = raw_exchange(
            rw.addr(),
            b"GET /thp HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.text(), "a GET /thp", "{setting:?}");
        assert_eq!(thp_enabled(&rw), expected, "{setting:?}");
        if setting.is_empty() {
            // Process-wide and set at start: a reload that changes it says so and keeps it.
            let path = rw.config_path.clone().unwrap();
            // The bind address stays as written ("port 0"), so that only this key differs.
            let changed = config.replacen(
                "[runtime]\n",
                "[runtime]\ntransparent_huge_pages = false\n",
                1,
            );
            std::fs::write(&path, changed).unwrap();
            rw.signal("HUP");
            wait_for(DEADLINE, "the reload", || {
                rw.stderr().contains("reloaded").then_some(())
            });
            assert!(rw.stderr().contains("need a restart"), "{}", rw.stderr());
            assert_eq!(thp_enabled(&rw), expected);
        }
        let (status, stderr) = rw.stop();
        assert_eq!(status.code(), Some(0), "{stderr}");
    }
}
