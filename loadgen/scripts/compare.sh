#!/bin/bash
# Measurements for issue 3 on the 2-core box: `loadgen serve` (or nginx) on CPU 0, generators on
# CPU 1, both at SCHED_FIFO priority 1 (chrt) so other tenants' builds do not decide the result.
#   compare.sh tools [SECONDS]      loadgen vs wrk vs oha, 1 thread, 50 connections, closed loop
#   compare.sh origin [REQUESTS]    CPU per request: loadgen serve vs nginx `return 200` (1 worker)
#   compare.sh rate [RATE] [SECS]   loadgen --rate vs oha --latency-correction -q at the same rate
# Needs: a release build (target-loadgen), wrk, nginx, oha (OHA=path), python3, /usr/bin/time.
# Stops only the processes it starts, by PID.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${LOADGEN:-$ROOT/target-loadgen/release/loadgen}
OHA=${OHA:-$ROOT/target-loadgen/oha/bin/oha}
TMP=$(mktemp -d /tmp/loadgen-compare.XXXXXX)
RUN="chrt -f 1 taskset -c"

start_serve() {
  $RUN 0 "$B" serve --bind 127.0.0.1:0 > "$TMP/serve.out" & SERVE=$!
  for _ in $(seq 50); do grep -q listening "$TMP/serve.out" && break; sleep 0.1; done
  URL="http://$(sed -n 's/listening on //p' "$TMP/serve.out")/"
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

tools() {
  local D=${1:-10}
  start_serve
  echo "target: loadgen serve on CPU 0 ($URL); one generator thread on CPU 1, 50 connections, ${D}s"
  /usr/bin/time -f "%U %S" -o "$TMP/t" $RUN 1 "$B" -c 50 -d "${D}s" -q --json "$TMP/lg.json" "$URL" >/dev/null
  read -r U S < "$TMP/t"
  python3 -c "import json;d=json.load(open('$TMP/lg.json'));print('loadgen %9.0f req/s  %.2f us CPU/req' % (d['rps'], ($U+$S)*1e6/d['responses']))"
  /usr/bin/time -f "%U %S" -o "$TMP/t" $RUN 1 wrk -t1 -c50 -d"${D}s" "$URL" > "$TMP/wrk.out"
  read -r U S < "$TMP/t"
  python3 -c "
import re;t=open('$TMP/wrk.out').read()
n=int(re.search(r'(\d+) requests in',t).group(1));r=float(re.search(r'Requests/sec:\s+([\d.]+)',t).group(1))
print('wrk     %9.0f req/s  %.2f us CPU/req' % (r, ($U+$S)*1e6/n))"
  if [ -x "$OHA" ]; then
    /usr/bin/time -f "%U %S" -o "$TMP/t" $RUN 1 "$OHA" -c 50 -z "${D}s" --no-tui --output-format json "$URL" > "$TMP/oha.json"
    read -r U S < "$TMP/t"
    python3 -c "import json;s=json.load(open('$TMP/oha.json'))['summary'];n=s['requestsPerSec']*s['total'];print('oha     %9.0f req/s  %.2f us CPU/req' % (s['requestsPerSec'], ($U+$S)*1e6/n))"
  fi
  kill "$SERVE"
}

origin() {
  local N=${1:-500000}
  start_serve
  $RUN 1 "$B" -c 50 -n 20000 -q "$URL" >/dev/null
  local c0; c0=$(cpu_ticks "$SERVE")
  $RUN 1 "$B" -c 50 -n "$N" -q --json "$TMP/s.json" "$URL" >/dev/null
  local c1; c1=$(cpu_ticks "$SERVE")
  kill "$SERVE"
  python3 -c "import json;d=json.load(open('$TMP/s.json'));print('loadgen serve  %.2f us CPU/req (%d req/s)' % (($c1-$c0)*1e6/100/d['responses'], d['rps']))"
  cat > "$TMP/nginx.conf" <<CONF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:0; location / { return 200; } }
}
CONF
  # nginx cannot report an OS-chosen port; take a free one from the OS first.
  local port; port=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
  sed -i "s/127.0.0.1:0/127.0.0.1:$port/" "$TMP/nginx.conf"
  $RUN 0 nginx -c "$TMP/nginx.conf" -g 'daemon off;' & local master=$!
  for _ in $(seq 50); do [ -n "$(pgrep -P $master)" ] && break; sleep 0.1; done
  local worker; worker=$(pgrep -P $master)
  $RUN 1 "$B" -c 50 -n 20000 -q "http://127.0.0.1:$port/" >/dev/null
  c0=$(cpu_ticks "$worker")
  $RUN 1 "$B" -c 50 -n "$N" -q --json "$TMP/n.json" "http://127.0.0.1:$port/" >/dev/null
  c1=$(cpu_ticks "$worker")
  kill "$master"; wait "$master" 2>/dev/null
  python3 -c "import json;d=json.load(open('$TMP/n.json'));print('nginx return 200  %.2f us CPU/req (%d req/s)' % (($c1-$c0)*1e6/100/d['responses'], d['rps']))"
}

rate() {
  local R=${1:-5000} D=${2:-5}
  start_serve
  $RUN 1 "$B" --rate "$R" -c 50 -d "${D}s" -q --json "$TMP/lg.json" "$URL" >/dev/null
  $RUN 1 "$OHA" -q "$R" --latency-correction -c 50 -z "${D}s" --no-tui --output-format json "$URL" > "$TMP/oha.json"
  kill "$SERVE"
  python3 - "$TMP" <<'PY'
import json, sys
t = sys.argv[1]
l = json.load(open(t + '/lg.json')); o = json.load(open(t + '/oha.json'))
a, p, s = l['latency_us'], o['latencyPercentiles'], o['summary']
us = lambda v: v * 1e6 if v is not None else float('nan')
print('loadgen %7.0f req/s  p50 %7.1f  p90 %7.1f  p99 %7.1f  max %8.1f us' % (l['rps'], a['p50'], a['p90'], a['p99'], a['max']))
print('oha     %7.0f req/s  p50 %7.1f  p90 %7.1f  p99 %7.1f  max %8.1f us' % (s['requestsPerSec'], us(p['p50']), us(p['p90']), us(p['p99']), us(s['slowest'])))
PY
}

case "${1:-}" in
  tools) tools "${2:-10}" ;;
  origin) origin "${2:-500000}" ;;
  rate) rate "${2:-5000}" "${3:-5}" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
rm -rf "$TMP"
