#!/usr/bin/env bash
# Runs every tests/vtc/*.vtc with varnishtest (the Varnish test driver, used here only as an
# independent HTTP/1.1 client and server) around a real Ringway. For each script: the upstream
# port is taken from the kernel (bind to port 0, read it back, release), Ringway starts on
# 127.0.0.1:0 with a config pointing at that port, its own port is read from its "listening on"
# line, and varnishtest gets both as macros: ${rw_addr} ${rw_port} (Ringway) and ${up_port}
# (where the script's `server s1 -listen 127.0.0.1:${up_port}` plays the upstream).
# Idle pooled upstream connections close after 1 s, so a script's server can `expect_close` to
# prove nothing more was sent. Lines "#ringway-http: KEY = VALUE" in a script are added to Ringway's [http] table.
# Usage: tests/vtc/run.sh [RINGWAY_BINARY] [SCRIPT.vtc ...]
set -euo pipefail
cd "$(dirname "$0")"
ringway=${1:-../../target/debug/ringway}
shift || true
scripts=("$@")
[ ${#scripts[@]} -eq 0 ] && scripts=(*.vtc)
command -v varnishtest >/dev/null || { echo "varnishtest not installed (apt-get install varnish)"; exit 1; }
[ -x "$ringway" ] || { echo "no ringway binary at $ringway (cargo build -p ringway)"; exit 1; }

work=$(mktemp -d)
rw_pid=
cleanup() {
  if [ -n "$rw_pid" ]; then kill "$rw_pid" 2>/dev/null || true; wait "$rw_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

fail=0
for vtc in "${scripts[@]}"; do
  up_port=$(free_port)
  {
    printf '[runtime]\nworkers = 1\n\n[http]\n'
    sed -n 's/^#ringway-http: //p' "$vtc"
    printf '\n[proxy]\nrequest_id_header = ""\n\n'
    printf '[[listener]]\nname = "vtc"\nbind = "127.0.0.1:0"\n\n'
    printf '[upstream.up]\nservers = ["127.0.0.1:%s"]\nresponse_timeout = "5s"\nidle_timeout = "1s"\n\n' "$up_port"
    printf '[[route]]\nname = "all"\nupstream = "up"\nretry = { attempts = 1 }\n'
  } > "$work/ringway.toml"
  rm -f "$work/out"
  "$ringway" --config "$work/ringway.toml" > "$work/out" 2> "$work/err" &
  rw_pid=$!
  rw_port=
  for _ in $(seq 1 400); do
    rw_port=$(sed -n 's/^ringway: listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/out" 2>/dev/null | head -n 1 || true)
    [ -n "$rw_port" ] && break
    kill -0 "$rw_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$rw_port" ]; then
    echo "FAIL $vtc: ringway did not start"; cat "$work/err"; fail=1
  elif varnishtest ${VTC_VERBOSE:+-v} -q -t 60 -Drw_addr=127.0.0.1 -Drw_port="$rw_port" -Dup_port="$up_port" "$vtc"; then
    echo "ok   $vtc"
  else
    echo "FAIL $vtc (ringway stderr follows)"; cat "$work/err"; fail=1
  fi
  kill "$rw_pid" 2>/dev/null || true
  wait "$rw_pid" 2>/dev/null || true
  rw_pid=
done
exit $fail
