#!/usr/bin/env python3
"""Sends the same raw attack bytes to Ringway, nginx and HAProxy, each proxying to the same
recording test upstream, and prints a Markdown table: the status each answered with, whether it
closed the connection, and whether anything reached the upstream. Used for docs/security.md.

Usage: tests/compare/attacks.py [RINGWAY_BINARY]   (needs nginx and haproxy on PATH or /usr/sbin)
Only 127.0.0.1 is used; every process started here is stopped by its PID at the end."""

import os, shutil, socket, subprocess, sys, tempfile, threading, time

RINGWAY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/ringway"

REQUESTS = [
    ("CL + TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two differing CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("two equal CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("CL list `5, 5`", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"),
    ("CL `+5`", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
    ("TE `gzip`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("TE `chunked, gzip`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("TE `gzip, chunked`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE `xchunked`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE twice", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE with VT `\\x0bchunked`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"),
    ("chunked in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("`Transfer_Encoding: chunked`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunk size `-5`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size `0x5`", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size 17 hex digits", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("chunk size `5 ` (trailing SP)", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ("chunk data longer than size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n"),
    ("bare LF after chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ("bare CR in header", b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n"),
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: t\n\n"),
    ("bare LF ending one header", b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n"),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n"),
    ("NUL in header value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n"),
    ("DEL in header value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n"),
    ("missing Host (1.1)", b"GET / HTTP/1.1\r\n\r\n"),
    ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("Host `a b`", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    ("relative target `foo`", b"GET foo HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("fragment in target", b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("UTF-8 in target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("userinfo in absolute-form", b"GET http://u@t/ HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("double space in request line", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("space inside target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("`http/1.1` lower case", b"GET / http/1.1\r\nHost: t\r\n\r\n"),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n"),
    ("request line 9 KiB", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("head 40 KiB", b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"),
    ("150 headers", b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n"),
]

# Upstream misbehaviour, triggered by the request path /resp/NAME.
RESPONSES = {
    "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
    "status-2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "status-line": b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
}
RESPONSE_LABELS = {
    "cl-te": "upstream: CL + TE",
    "cl-cl": "upstream: two differing CL",
    "te-gzip": "upstream: TE `gzip`",
    "status-2000": "upstream: status `2000`",
    "status-line": "upstream: `HTTX/1.1 200`",
    "nul": "upstream: NUL in header",
    "fold": "upstream: obs-fold",
    "101": "upstream: unasked 101",
}


class Upstream:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        c.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                with self.lock:
                    self.requests += 1
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1].decode("latin1")
                lower = head.lower()
                if b"\r\ntransfer-encoding: chunked" in lower:
                    while b"\r\n0\r\n\r\n" not in b"\r\n" + buf:
                        d = c.recv(65536)
                        if not d:
                            return
                        buf += d
                    buf = (b"\r\n" + buf).split(b"\r\n0\r\n\r\n", 1)[1]
                elif b"\r\ncontent-length:" in lower:
                    n = int(lower.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
                    while len(buf) < n:
                        d = c.recv(65536)
                        if not d:
                            return
                        buf += d
                    buf = buf[n:]
                if path.startswith("/resp/"):
                    c.sendall(RESPONSES[path[6:]])
                    continue
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            c.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc):
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.025)
    raise SystemExit(f"no listener on {port}")


def start_ringway(tmp, up):
    cfg = os.path.join(tmp, "ringway.toml")
    with open(cfg, "w") as f:
        f.write(f"""[runtime]\nworkers = 1\n[http]\nheader_timeout = "3s"\n[proxy]\nrequest_id_header = ""\n
[[listener]]\nname = "cmp"\nbind = "127.0.0.1:0"\n[upstream.up]\nservers = ["127.0.0.1:{up.port}"]\n
[[route]]\nname = "all"\nupstream = "up"\nretry = {{ attempts = 1 }}\n""")
    p = subprocess.Popen([RINGWAY, "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    port = int(line.split("127.0.0.1:")[1].split(" ")[0])
    return p, port


def start_nginx(tmp, up):
    port = free_port()
    d = os.path.join(tmp, "nginx")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "nginx.conf")
    with open(cfg, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; client_header_timeout 3s;
  upstream up {{ server 127.0.0.1:{up.port}; keepalive 8; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }} }}
""")
    p = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", cfg, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def start_haproxy(tmp, up):
    port = free_port()
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global\n  maxconn 1000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 5s
  timeout server 5s\n  timeout http-request 3s\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b
backend b\n  http-reuse always\n  server s1 127.0.0.1:{up.port}\n""")
    p = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", cfg, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def attempt(port, data, up):
    before = up.requests
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(4)
    try:
        s.sendall(data)
    except OSError:
        pass
    got = b""
    closed = False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            got += d
            # One response is enough once its head is in and the peer stops sending.
            if b"\r\n\r\n" in got:
                s.settimeout(1.5)
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    s.close()
    time.sleep(0.05)
    status = got[9:12].decode("latin1") if got.startswith(b"HTTP/") else ("—" if not got else "?")
    fwd = up.requests - before
    return f"{status} {'close' if closed else 'open'}" + (" (fwd)" if fwd else "")


def main():
    tmp = tempfile.mkdtemp(prefix="ringway-cmp-")
    up = Upstream()
    procs = []
    try:
        servers = []
        for name, start in (("Ringway", start_ringway), ("nginx", start_nginx), ("HAProxy", start_haproxy)):
            p, port = start(tmp, up)
            procs.append(p)
            servers.append((name, port))
        rows = []
        for label, data in REQUESTS:
            rows.append((label, [attempt(port, data, up) for _, port in servers]))
        for key, label in RESPONSE_LABELS.items():
            req = f"GET /resp/{key} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            rows.append((label, [attempt(port, req, up).replace(" (fwd)", "") for _, port in servers]))
        print("| input | " + " | ".join(n for n, _ in servers) + " |")
        print("|---|" + "---|" * len(servers))
        for label, cells in rows:
            print(f"| {label} | " + " | ".join(cells) + " |")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
