//! https:// through rustls against `openssl s_server` with a throwaway self-signed certificate:
//! `--insecure` gets answers, verification refuses the certificate as a connect error.
//! Skipped (with a note) where the openssl command is not installed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{run_json, scratch, u};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_with_and_without_verification() {
    let (key, cert) = (scratch("key.pem"), scratch("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipping: openssl not available");
        return;
    }
    // openssl picks no port itself: take a free one from the OS and hand it over.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = Command::new("openssl")
        .args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl s_server");
    let stdout = child.stdout.take().expect("stdout");
    let server = Killed(child);
    // s_server prints ACCEPT once it listens.
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("ACCEPT"));
    assert!(ready, "openssl s_server did not start");

    let url = format!("https://localhost:{port}/");
    // One connection: s_server handles one client at a time.
    let r = run_json(&["-c", "1", "-n", "6", "--insecure", &url]);
    assert_eq!(u(&r, &["responses"]), 6, "{r}");
    assert!(u(&r, &["bytes_read"]) > 0);
    let r = run_json(&["-c", "1", "-n", "2", &url]);
    assert_eq!(
        u(&r, &["errors", "connect"]),
        2,
        "self-signed must not verify: {r}"
    );
    drop(server);
    let _ = std::fs::remove_file(key);
    let _ = std::fs::remove_file(cert);
}
