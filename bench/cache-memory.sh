#!/usr/bin/env bash
# bench/cache-memory.sh: whether a cache zone's max_size bounds Ringway's memory. One worker
# caches N distinct 8 KiB responses (each URL once, over one keep-alive connection) into a
# zone of MAX bytes, and the script prints its RSS before and after, and the worker's cache
# counters. Offer more than MAX (N x 8 KiB) to see eviction hold the line.
#   MAX=32MiB N=60000 bench/cache-memory.sh
# Needs python3 and a release build (cargo build --release --workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
LG=${LOADGEN:-target/release/loadgen}
RW=${RINGWAY:-target/release/ringway}
MAX=${MAX:-32MiB}
N=${N:-20000}
DIR=$(mktemp -d /tmp/ringway-cache-memory.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

start_upstream - --body-size 8192 --header "Cache-Control: max-age=3600"
cat > "$DIR/ringway.toml" <<TOML
[runtime]
workers = 1
[[listener]]
bind = "127.0.0.1:0"
[upstream.app]
servers = ["$UP"]
[cache.c]
max_size = "$MAX"
[[route]]
upstream = "app"
cache = "c"
TOML
"$RW" --config "$DIR/ringway.toml" > "$DIR/rw.out" 2>&1 &
RPID=$!
PIDS+=($RPID)
ADDR=$(wait_line "$DIR/rw.out" "listening on" | awk '{print $4}')
rss() { awk '/VmRSS/ {print $2}' "/proc/$RPID/status"; }
echo "RSS before: $(rss) KiB"
python3 - "$ADDR" "$N" <<'PY'
import http.client, sys
host, port = sys.argv[1].rsplit(':', 1)
c = http.client.HTTPConnection(host, int(port))
for i in range(int(sys.argv[2])):
    c.request('GET', f'/obj/{i}')
    r = c.getresponse()
    assert r.status == 200 and len(r.read()) == 8192
PY
echo "RSS after $N x 8 KiB responses offered to a $MAX zone: $(rss) KiB"
kill "$RPID"
wait "$RPID" 2>/dev/null || true
grep "cache hits" "$DIR/rw.out"
