#!/bin/sh
# scripts/run-local.sh BUILD — what `make run` does: start the bundled echo backend on
# 127.0.0.1:9000 and corogate on conf/corogate.ini in front of it, say where to connect,
# and stop both cleanly on Ctrl-C (or when either one exits).
set -u
build=${1:-build}
conf=${CG_CONF:-conf/corogate.ini}

"$build/corogate" -t -c "$conf" >/dev/null || exit 1

"$build/corogate-loadgen" serve --mode tcp --listen 127.0.0.1:9000 --threads 1 &
backend=$!
"$build/corogate" -c "$conf" &
gateway=$!

stop() {
    trap - INT TERM
    kill -TERM "$gateway" 2>/dev/null
    wait "$gateway" 2>/dev/null
    kill -TERM "$backend" 2>/dev/null
    wait "$backend" 2>/dev/null
    exit 0
}
trap stop INT TERM

sleep 0.5
cat <<MSG

corogate is running (pid $gateway) in front of the echo backend (pid $backend).
  try:   echo hello | socat - TCP:127.0.0.1:8000
  or:    nc 127.0.0.1 8000
  config: $conf
Press Ctrl-C to stop both.

MSG
# Whichever exits first ends the session; the trap stops the other.
while kill -0 "$gateway" 2>/dev/null && kill -0 "$backend" 2>/dev/null; do
    sleep 1
done
stop
