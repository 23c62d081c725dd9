#!/usr/bin/env bash
# scripts/soak.sh — the ASan+LSan daemon under mixed traffic with faults injected at random.
#
# For SOAK_S seconds (default 300; `make soak SOAK_S=3600` is the long run):
#   - well-behaved load, never faulted: `corogate-loadgen run --closed-loop` with checked
#     payloads, one tcp and one websocket run of 20 connections each per phase (warm-up,
#     then the rest), through listeners whose backends nothing touches;
#   - faults, one every 1-4 s, chosen by a generator seeded with SOAK_SEED (printed; the
#     same seed gives the same sequence of faults): the faulted backend SIGKILLed and
#     restarted, a reconnect storm, slowloris clients, clients that never read while the
#     backend pushes, clients that go silent (idle timeout), stats socket abuse (hundreds of
#     clients, a megabyte line, binary garbage, a client that never reads), a reload, the
#     open-files limit lowered for two seconds (prlimit).
# The first tenth of the run (20..120 s, and at least one fault of each kind) is the
# warm-up. RSS is sampled with the traffic
# paused and settled, after the warm-up and at the end. The daemon is then stopped with
# SIGTERM, so that LeakSanitizer checks it at exit.
#
# It prints a summary and exits non-zero when one of these is missed: zero leaks (LSan),
# zero lost or corrupt messages and zero dropped connections in the well-behaved runs, the
# daemon alive to the end and exiting 0, RSS at the end within 10% of its value after the
# warm-up. ASan's quarantine keeps freed memory for a while (256 MiB by default): it is set
# to 16 MiB here, which the warm-up fills, so that RSS compares like with like.
#
# Environment: SOAK_S, SOAK_SEED (default: the time), SOAK_FAULTS (the kinds of fault drawn,
# default "0 1 2 3 4 5 6 7", the numbers of inject() below; "" for traffic alone: to find
# which fault a growth follows), BUILD (build: loadgen), ASAN_BUILD (build/asan: the daemon),
# SOAK_DIR (a scratch directory, default mktemp; kept on failure), SOAK_AT_SAMPLE (a shell
# command run at both RSS samples with DPID and TAG=warm|end set: a heap profiler's hook).
set -u

SOAK_S=${SOAK_S:-300}
SOAK_SEED=${SOAK_SEED:-$(date +%s)}
SOAK_FAULTS=${SOAK_FAULTS-0 1 2 3 4 5 6 7}
read -r -a kinds <<<"$SOAK_FAULTS"
BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build/asan}
LG=$BUILD/corogate-loadgen
DAEMON=$ASAN_BUILD/corogate
PY=/usr/bin/python3
DIR=${SOAK_DIR:-$(mktemp -d /tmp/corogate-soak.XXXXXX)}
mkdir -p "$DIR"
pids=()

say() { printf 'soak: %s\n' "$*"; }
die() { say "$*"; exit 2; }

[ -x "$LG" ] || die "$LG not built (make build)"
[ -x "$DAEMON" ] || die "$DAEMON not built (make SAN=1 build)"

cleanup() {
    local p
    touch "$DIR/stop"
    for p in "${pids[@]}" ${FAULT_PID:-} ${DPID:-}; do
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# serve NAME MODE PORT [options...]: a `corogate-loadgen serve` in the background.
serve() {
    local name=$1 mode=$2 port=$3
    shift 3
    "$LG" serve --mode "$mode" --listen "127.0.0.1:$port" --threads 1 "$@" \
        >"$DIR/$name.log" 2>&1 &
    eval "${name}_pid=$!"
    pids+=("$!")
}

. "$(dirname "$0")/../loadgen/bench-lib.sh"    # wait_port

# kB resident, page by page (smaps_rollup): VmRSS is kept per thread and synced lazily,
# off by up to 64 pages per thread.
rss_kb() { awk '/^Rss:/ { print $2 }' "/proc/$DPID/smaps_rollup" 2>/dev/null || echo 0; }

RANDOM=$SOAK_SEED
say "seed $SOAK_SEED (SOAK_SEED=$SOAK_SEED repeats this sequence of faults), $SOAK_S s, in $DIR"

P_GOOD=$(free_port); P_WS=$(free_port); P_FAULT=$(free_port); P_PUSH=$(free_port)
L_GOOD=$(free_port); L_WS=$(free_port); L_FAULT=$(free_port); L_SLOW=$(free_port)
L_PUSH=$(free_port); L_IDLE=$(free_port)
SOCK=$DIR/stats.sock

serve good tcp "$P_GOOD"
serve ws ws "$P_WS"
serve fault tcp "$P_FAULT"
serve push tcp "$P_PUSH" --push 1000 --push-size 1024

cat >"$DIR/corogate.ini" <<EOF
[gateway]
workers = 2
cpu_pinning = off
stats_socket = $SOCK
stats_timeout = 2s
drain_timeout = 5s
[listener good]
bind = 127.0.0.1:$L_GOOD
upstream = good
[listener wsgood]
bind = 127.0.0.1:$L_WS
mode = websocket
upstream = ws
[listener fault]
bind = 127.0.0.1:$L_FAULT
upstream = fault
backlog = 4096
[listener slow]
bind = 127.0.0.1:$L_SLOW
mode = websocket
upstream = ws
handshake_timeout = 2s
[listener push]
bind = 127.0.0.1:$L_PUSH
upstream = push
high_water = 16k
[listener idle]
bind = 127.0.0.1:$L_IDLE
upstream = good
idle_timeout = 1s
[upstream good]
servers = 127.0.0.1:$P_GOOD
health_check_interval = 0
[upstream ws]
servers = 127.0.0.1:$P_WS
health_check_interval = 0
[upstream fault]
servers = 127.0.0.1:$P_FAULT
connect_timeout = 1s
health_check_interval = 500ms
health_check_timeout = 200ms
eject_cooldown = 1s
[upstream push]
servers = 127.0.0.1:$P_PUSH
health_check_interval = 0
EOF

ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$DAEMON" -c "$DIR/corogate.ini" >"$DIR/corogate.log" 2>&1 &
DPID=$!
wait_port "$L_GOOD" 10 || die "the daemon does not accept (see $DIR/corogate.log)"
for p in "$P_GOOD" "$P_WS" "$P_FAULT" "$P_PUSH"; do
    wait_port "$p" 10 || die "a backend does not accept on $p"
done

# The well-behaved load of one phase: one run of MODE on a listener port for SECONDS, its
# JSON kept. One run per phase: its 20 connections are all up before the first fault of
# the phase (wait_up), so a fault that refuses new connections (nofile) never meets a
# well-behaved one in its handshake.
good_run() {
    local mode=$1 port=$2 name=$3 secs=$4
    "$LG" run --mode "$mode" --target "127.0.0.1:$port" --connections 20 \
        --connect-rate 0 --closed-loop --message-size 512 --duration "${secs}s" \
        --reply-timeout 30s --quiet --json "$DIR/$name-$(date +%s%N).json" \
        >>"$DIR/$name.out" 2>&1
}

start_traffic() {
    good_run tcp "$L_GOOD" good-tcp "$1" &
    TCP_RUN=$!
    good_run ws "$L_WS" good-ws "$1" &
    WS_RUN=$!
    wait_up 'listener="good"' 20 && wait_up 'listener="wsgood"' 20 ||
        say "the well-behaved connections did not all come up (see $DIR/good-*.out)"
}

# Waits for the phase's runs to end and for the daemon to settle: its client connections
# back to none.
pause_traffic() {
    local i
    wait "$TCP_RUN" "$WS_RUN" 2>/dev/null
    for i in $(seq 100); do
        [ "$(metric 'corogate_connections ')" = 0 ] && break
        sleep 0.2
    done
    sleep 1
    for i in $(seq 40); do echo "settle $i $(rss_kb)" >>"$DIR/rss.log"; sleep 0.5; done
}

# wait_up LABEL N: until N connections are open on the listener LABEL (10 s at most).
wait_up() {
    local i
    for i in $(seq 100); do
        [ "$(metric "corogate_listener_connections_active{$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# metric PREFIX: the sum of the lines of `show metrics` starting with PREFIX (the series
# of every worker).
metric() {
    "$PY" - "$SOCK" "$1" <<'EOF' 2>/dev/null || echo "?"
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b"show metrics\n"); s.shutdown(socket.SHUT_WR)
buf = b""
while True:
    d = s.recv(65536)
    if not d: break
    buf += d
print(sum(int(float(l.split()[-1])) for l in buf.decode().splitlines()
          if l.startswith(sys.argv[2])))
EOF
}

# ------------------------------------------------------------------ the faults

# Python helpers for the client-side faults: slowloris, never-read, silent, stats abuse.
fault_py() {
    "$PY" - "$@" <<'EOF'
import os, socket, sys, time
kind, port = sys.argv[1], sys.argv[2]
def conn(n):
    out = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
            out.append(s)
        except OSError:
            pass
    return out
if kind == "slowloris":
    req = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    ss = conn(300)
    for i in range(4):
        for s in ss:
            try: s.send(req[i:i + 1])
            except OSError: pass
        time.sleep(1)
elif kind == "neverread":
    ss = conn(100)
    for s in ss: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    time.sleep(4)
elif kind == "silent":
    ss = conn(200)
    for s in ss:
        try: s.send(b"x" * 64)
        except OSError: pass
    time.sleep(3)
elif kind == "stats":
    def us():
        s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(port); return s
    ss = []
    for _ in range(200):
        try: ss.append(us())
        except OSError: pass
    try:
        big = us(); big.sendall(b"a" * (1 << 20)); ss.append(big)
    except OSError: pass
    try:
        g = us(); g.sendall(os.urandom(65536)); ss.append(g)
    except OSError: pass
    try:
        nr = us(); nr.setblocking(False)
        for _ in range(5000): nr.send(b"show stats\n")
    except OSError: pass
    time.sleep(3)
EOF
}

declare -A faults
# inject [KIND [max]]: one fault, KIND 0..7 (default: drawn), sized at random (at its
# largest with "max").
inject() {
    local kind=${1:-${kinds[RANDOM % ${#kinds[@]}]}} n
    case $kind in
    0)  faults[kill]=$((${faults[kill]:-0} + 1))
        kill -9 "$fault_pid" 2>/dev/null; wait "$fault_pid" 2>/dev/null
        # traffic on the faulted listener while its backend is down and back
        "$LG" run --target "127.0.0.1:$L_FAULT" --connections 50 --connect-rate 0 \
            --closed-loop --duration 1s --quiet >/dev/null 2>&1
        serve fault tcp "$P_FAULT"
        wait_port "$P_FAULT" 10 ;;
    1)  faults[storm]=$((${faults[storm]:-0} + 1))
        n=$((500 + RANDOM % 1500))
        [ "${2:-}" = max ] && n=2000
        for _ in 1 2; do
            "$LG" run --target "127.0.0.1:$L_FAULT" --connections "$n" --connect-rate 0 \
                --messages 1 --closed-loop --duration 1s --source 127.0.0.2-127.0.0.9 \
                --quiet >/dev/null 2>&1
        done ;;
    2)  faults[slowloris]=$((${faults[slowloris]:-0} + 1)); fault_py slowloris "$L_SLOW" ;;
    3)  faults[never_read]=$((${faults[never_read]:-0} + 1)); fault_py neverread "$L_PUSH" ;;
    4)  faults[silent]=$((${faults[silent]:-0} + 1)); fault_py silent "$L_IDLE" ;;
    5)  faults[stats_abuse]=$((${faults[stats_abuse]:-0} + 1)); fault_py stats "$SOCK" ;;
    6)  faults[reload]=$((${faults[reload]:-0} + 1)); kill -HUP "$DPID" ;;
    7)  faults[nofile]=$((${faults[nofile]:-0} + 1))
        n=$(ls "/proc/$DPID/fd" | wc -l)
        old=$(prlimit --pid "$DPID" --nofile --noheadings --output SOFT,HARD | awk '{print $1":"$2}')
        prlimit --pid "$DPID" --nofile=$((n + 60)):"${old#*:}"
        "$LG" run --target "127.0.0.1:$L_FAULT" --connections 300 --connect-rate 0 --hold \
            --duration 1s --connect-timeout 2s --quiet >/dev/null 2>&1
        prlimit --pid "$DPID" --nofile="$old" ;;
    esac
}

fault_loop() {
    local until=$1
    while [ "$(date +%s)" -lt "$until" ]; do
        kill -0 "$DPID" 2>/dev/null || return 1
        echo "$(( $(date +%s) - t0 )) $(rss_kb)" >>"$DIR/rss.log"   # seconds, kB
        [ "${#kinds[@]}" -gt 0 ] || { sleep 1; continue; }
        inject
        sleep $((1 + RANDOM % 4))
    done
}

# ------------------------------------------------------------------ the run

t0=$(date +%s)
warm=$((SOAK_S / 10)); [ "$warm" -lt 20 ] && warm=20; [ "$warm" -gt 120 ] && warm=120
start_traffic "$warm"
# The warm-up injects every kind of fault once, the storm at its largest, so that the
# daemon's pools and the ASan allocator's free lists have grown to what the faults need:
# RSS after it compares like with like.
for k in $(echo "${kinds[@]}" | tr ' ' '\n' | "$PY" -c "import random, sys; random.seed($SOAK_SEED); \
        l = sys.stdin.read().split(); random.shuffle(l); print(' '.join(l))"); do
    inject "$k" max
done
fault_loop $((t0 + warm))
pause_traffic
rss_warm=$(rss_kb)
cp "/proc/$DPID/smaps" "$DIR/smaps-warm" 2>/dev/null
[ -n "${SOAK_AT_SAMPLE:-}" ] && DPID=$DPID TAG=warm bash -c "$SOAK_AT_SAMPLE"
say "warm-up done after $(( $(date +%s) - t0 )) s: RSS $rss_warm kB"
start_traffic $((t0 + SOAK_S - $(date +%s)))
fault_loop $((t0 + SOAK_S))
alive=1
kill -0 "$DPID" 2>/dev/null || alive=0
pause_traffic
rss_end=$(rss_kb)
cp "/proc/$DPID/smaps" "$DIR/smaps-end" 2>/dev/null
[ -n "${SOAK_AT_SAMPLE:-}" ] && DPID=$DPID TAG=end bash -c "$SOAK_AT_SAMPLE"
touch "$DIR/stop"
kill -TERM "$DPID" 2>/dev/null
for _ in $(seq 300); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
wait "$DPID"
status=$?
DPID=

# ------------------------------------------------------------------ the summary

read -r runs notreached sent received lost corrupt dropped p99 < <("$PY" - "$DIR" <<'EOF'
import glob, json, sys
runs = nr = sent = rec = lost = corrupt = dropped = 0
p99 = 0.0
for f in glob.glob(sys.argv[1] + "/good-*.json"):
    try: j = json.load(open(f))
    except Exception: continue
    runs += 1
    if not j["result"]["reached"]: nr += 1
    m = j["messages"]
    sent += m["sent"]; rec += m["received"]; lost += m["lost"]; corrupt += m["corrupt"]
    dropped += j["connections"]["dropped"]
    p99 = max(p99, j["latency_ms"]["round_trip"]["p99"])
print(runs, nr, sent, rec, lost, corrupt, dropped, "%.3f" % p99)
EOF
)
leaks=$(grep -c "ERROR: LeakSanitizer" "$DIR/corogate.log")
asan=$(grep -c "ERROR: AddressSanitizer\|runtime error" "$DIR/corogate.log")
growth=$("$PY" -c "print('%.1f' % (100.0 * ($rss_end - $rss_warm) / max($rss_warm, 1)))")
fault_list=""
for k in "${!faults[@]}"; do fault_list+="$k ${faults[$k]}, "; done

echo "soak summary"
echo "  seed:               $SOAK_SEED"
echo "  duration:           $(( $(date +%s) - t0 )) s (SOAK_S=$SOAK_S, warm-up $warm s)"
echo "  faults injected:    ${fault_list%, }"
echo "  well-behaved runs:  $runs (tcp and ws, 20 connections each, one per phase; not reached: $notreached)"
echo "  messages:           sent $sent, received $received, lost $lost, corrupt $corrupt"
echo "  dropped conns:      $dropped"
echo "  worst run's p99:    $p99 ms"
echo "  RSS:                $rss_warm kB after warm-up, $rss_end kB at the end ($growth%)"
echo "  daemon:             alive to the end: $alive, exit status $status"
echo "  LSan leak reports:  $leaks; ASan/UBSan errors: $asan"

fail=0
[ "$runs" = 4 ] && [ "$notreached" = 0 ] ||
    { say "FAIL: the well-behaved runs did not all reach their connections"; fail=1; }
[ "$lost" = 0 ] && [ "$corrupt" = 0 ] || { say "FAIL: messages lost or corrupt"; fail=1; }
[ "$dropped" = 0 ] || { say "FAIL: well-behaved connections dropped"; fail=1; }
[ "$alive" = 1 ] && [ "$status" = 0 ] || { say "FAIL: daemon died or exited $status"; fail=1; }
[ "$leaks" = 0 ] && [ "$asan" = 0 ] || { say "FAIL: sanitizer reports in $DIR/corogate.log"; fail=1; }
"$PY" -c "import sys; sys.exit(0 if $rss_end <= $rss_warm * 1.10 else 1)" ||
    { say "FAIL: RSS grew more than 10% after the warm-up"; fail=1; }
if [ "$fail" = 0 ]; then
    echo "SOAK: PASS"
    [ -n "${SOAK_DIR:-}" ] || rm -rf "$DIR"   # kept when asked for
else
    echo "SOAK: FAIL (logs in $DIR)"
    trap - EXIT
    cleanup
    exit 1
fi
