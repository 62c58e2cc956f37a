#!/usr/bin/env bash
# Runs slowhttptest's three slow attacks against a real Ringway on 127.0.0.1 and asserts the
# service stays available throughout: slow headers (-H, slowloris), slow body (-B, slow POST)
# and slow read (-X). Each attack is bounded (-l, about 30 s). Availability is judged twice:
# from slowhttptest's own report (its CSV "Service Available" column must never read 0 after
# the first second), and by a parallel probe that makes two fresh requests every 0.5 s, one
# proxied and one answered by a static route of Ringway's own, and must never fail. Ringway runs with 1 worker and 5 s header/body/send timeouts against a small
# Python upstream (GET /big answers 4 MiB, POST reads its body). Every process started here is
# stopped by its PID. Usage: tests/slowhttp/run.sh [RINGWAY_BINARY] [SECONDS_PER_ATTACK]
set -euo pipefail
cd "$(dirname "$0")"
ringway=$(realpath "${1:-../../target/debug/ringway}")
secs=${2:-30}
command -v slowhttptest >/dev/null || { echo "slowhttptest not installed (apt-get install slowhttptest)"; exit 1; }
ulimit -n 20000 2>/dev/null || ulimit -n 4096 2>/dev/null || true

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

cat > "$work/upstream.py" <<'PY'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BIG = b"x" * (4 << 20)
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    def handle_error(self, request, client_address):
        pass  # a client Ringway dropped mid-response: expected here
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(BIG if self.path.startswith("/big") else b"ok")
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            d = self.rfile.read(min(n, 65536))
            if not d: return
            n -= len(d)
        self.reply(b"ok")
s = Server(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
python3 "$work/upstream.py" > "$work/up.port" 2> "$work/up.err" &
pids+=($!)
for _ in $(seq 1 200); do [ -s "$work/up.port" ] && break; sleep 0.05; done
up_port=$(cat "$work/up.port")

cat > "$work/ringway.toml" <<TOML
[runtime]
workers = 1
[http]
header_timeout = "5s"
body_timeout = "5s"
send_timeout = "5s"
keepalive_timeout = "5s"
[[listener]]
name = "slow"
bind = "127.0.0.1:0"
[upstream.up]
servers = ["127.0.0.1:$up_port"]
[[route]]
name = "local"
match = { path = "/local-probe" }
respond = { status = 200, body = "ok" }
[[route]]
name = "all"
upstream = "up"
TOML
"$ringway" --config "$work/ringway.toml" > "$work/rw.out" 2> "$work/rw.err" &
rw_pid=$!
pids+=($rw_pid)
port=
for _ in $(seq 1 400); do
  port=$(sed -n 's/^ringway: listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/rw.out" | head -n 1)
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "ringway did not start"; cat "$work/rw.err"; exit 1; }
url="http://127.0.0.1:$port"
curl -fsS -o /dev/null "$url/" || { echo "ringway not serving before the attacks"; exit 1; }

fail=0
attack() {
  local name=$1; shift
  case " ${ATTACKS:-slow-headers slow-body slow-read} " in *" $name "*) ;; *) return ;; esac
  local probe_log="$work/probe-$name"
  : > "$probe_log"
  # The parallel probe: one fresh connection every 0.5 s for as long as the attack runs.
  ( while :; do
      if curl -fsS -m 3 -o /dev/null "$url/probe"; then echo ok; else echo FAIL; fi
      if curl -fsS -m 3 -o /dev/null "$url/local-probe"; then echo local-ok; else echo local-FAIL; fi
      sleep 0.5
    done ) >> "$probe_log" 2>/dev/null &
  local probe=$!
  pids+=($probe)
  # Once a second: how many client connections Ringway holds open (established on its port).
  ( while :; do ss -Htn state established "( sport = :$port )" | wc -l; sleep 1; done ) > "$work/$name.held" 2>/dev/null &
  local sampler=$!
  pids+=($sampler)
  timeout $((secs + 30)) slowhttptest "$@" -l "$secs" -g -o "$work/$name" > "$work/$name.log" 2>&1 || true
  kill "$probe" "$sampler" 2>/dev/null || true
  wait "$probe" "$sampler" 2>/dev/null || true
  local csv="$work/$name.csv"
  local ok fails unavailable connected
  ok=$(grep -c 'ok$' "$probe_log" || true)
  fails=$(grep -c 'FAIL$' "$probe_log" || true)
  local local_fails
  local_fails=$(grep -c '^local-FAIL$' "$probe_log" || true)
  if [ ! -s "$csv" ]; then
    echo "FAIL $name: slowhttptest wrote no report"; tail -n 20 "$work/$name.log"; fail=1; return
  fi
  # CSV: Seconds,Closed,Pending,Connected,Service Available (1 = available, 0 = not).
  unavailable=$(awk -F, 'NR>2 && $5 == 0 {n++} END {print n+0}' "$csv")
  connected=$(awk -F, 'NR>1 && $4 > m {m=$4} END {print m+0}' "$csv")
  local held_max held_last ended
  held_max=$(sort -n "$work/$name.held" | tail -n 1)
  held_last=$(tail -n 1 "$work/$name.held")
  ended=$(grep -o 'Exit status:.*' "$work/$name.log" | sed 's/\x1b\[[0-9;]*m//g' | head -n 1)
  echo "$name: slowhttptest peak connected=$connected, seconds unavailable=$unavailable ($ended); probes ok=$ok failed=$fails (of which answered by ringway itself: failed=$local_fails); client connections held by ringway: max=$held_max last=$held_last"
  if [ "$unavailable" -ne 0 ] || [ "$fails" -ne 0 ] || [ "$ok" -eq 0 ]; then
    echo "FAIL $name"; tail -n 5 "$csv"; fail=1
  fi
  kill -0 "$rw_pid" 2>/dev/null || { echo "FAIL: ringway died during $name"; cat "$work/rw.err"; exit 1; }
}

# Slow headers: 500 connections, a header line every 2 s, forever.
attack slow-headers -H -c 500 -r 200 -i 2 -x 24 -p 3 -u "$url/"
# Slow body: 500 POSTs with a large Content-Length, body trickled every 7 s (> body_timeout).
attack slow-body -B -c 500 -r 200 -i 7 -x 24 -s 8192 -p 3 -u "$url/post"
# Slow read: 300 connections asking for 4 MiB, reading 32 bytes every 5 s from a tiny window.
attack slow-read -X -c 300 -r 200 -w 512 -y 1024 -n 5 -z 32 -k 3 -p 3 -u "$url/big"

exit $fail
