#!/bin/bash
# loadgen/bench-sockmap.sh — `make bench-sockmap`: would a TCP proxy spend less CPU per
# message if the kernel relayed the bytes (sockmap, sk_skb redirect) instead of the proxy
# reading and writing them? The experiment of docs/bench.md, "sockmap: the kernel relays
# the bytes".
#
# A sockmap relay takes the relay's work out of the proxy's process (its redirected bytes
# are sent from a kworker and from the softirq of whoever sent them), so the proxy's own
# CPU time (/proc/PID/stat, what `make bench` reports) cannot judge it. This measures the
# whole machine: the busy time of all CPUs (/proc/stat: user, nice, system, irq, softirq)
# over the run, per echoed message, and the same with no proxy at all ("direct"); the
# difference is what the proxy costs the machine, wherever the kernel does the work.
#
# Peers, each against the same echo backend (`corogate-loadgen serve --threads 1`), taken
# in turns, each repetition starting one further on:
#   direct    the loadgen straight to the backend: the machine's cost without a proxy
#   floor     bench/floor_relay.c: read() and write() in one epoll loop, nothing else
#   sockmap   the same program with --sockmap: the kernel redirects every skb
#   corogate  the daemon (1 worker, tcp listener, half_close = off as in `make bench`)
# For each of CONNS: REPS runs of `run --mode tcp --closed-loop --message-size SIZE
# --connect-rate 0` for SECS seconds. Figures per run: machine µs per message, the proxy
# process's µs per message, context switches per message (/proc/stat ctxt), msgs/s.
# Printed: every run, then the medians, with the machine's cost above direct's, and the
# median over the repetitions of each peer's machine figure over the floor relay's in the
# same repetition (this host's speed moves in steps of up to 1.6x within seconds; peers
# measured seconds apart mostly share a step, runs minutes apart often do not).
#
# Environment [defaults]: REPS [3], SECS per run [3], CONNS ["100 1000"], SIZE bytes per
# message [64], PEERS ["direct
# floor sockmap corogate"], PORT [29600], BUILD [build], OUT [$BUILD/bench-sockmap].
set -u

BUILD=$(realpath -m "${BUILD:-build}")
OUT=$(realpath -m "${OUT:-$BUILD/bench-sockmap}")
LG=$BUILD/corogate-loadgen
FLOOR=$BUILD/bench/floor-relay
REPS=${REPS:-3}
SECS=${SECS:-3}
CONNS=${CONNS:-100 1000}
SIZE=${SIZE:-64}
PEERS=${PEERS:-direct floor sockmap corogate}
PORT=${PORT:-29600}
BACKEND=127.0.0.1:$PORT
PROXY=127.0.0.1:$(( PORT + 1 ))
TCK=$(getconf CLK_TCK)
BACKEND_PID=
PEER_PID=

for b in "$LG" "$FLOOR" "$BUILD/corogate"; do
    [ -x "$b" ] || { echo "bench-sockmap: $b is missing: run make first" >&2; exit 1; }
done
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.txt

stop() {   # stop PID: SIGTERM and wait
    [ -n "$1" ] && kill -TERM "$1" 2>/dev/null && wait "$1" 2>/dev/null
    return 0
}
cleanup() { stop "$PEER_PID"; stop "$BACKEND_PID"; }
trap cleanup EXIT
trap 'exit 1' INT TERM

# busy ticks of all CPUs and the context switches so far: "ticks ctxt"
machine() {
    awk '/^cpu / { t = $2 + $3 + $4 + $7 + $8 } /^ctxt / { c = $2 } END { print t, c }' /proc/stat
}
. "$(dirname "$0")/bench-lib.sh"    # wait_port, jnum, cpu_ticks, median_in, rotate

cat > "$OUT/corogate.ini" <<EOF
[gateway]
workers = 1
cpu_pinning = off
nofile = $(ulimit -n)
stats_socket = $OUT/corogate.sock
log_level = notice

[listener tcp]
bind = $PROXY
mode = tcp
upstream = echo
idle_timeout = 0
backlog = 4096
half_close = off

[upstream echo]
servers = $BACKEND

[bpf]
attach = off
EOF

start_peer() {   # start_peer PEER: the proxy, listening; 1 when it did not start
    PEER_PID=
    case $1 in
    direct)   return 0 ;;
    floor)    "$FLOOR" "$PROXY" "$BACKEND" >>"$OUT/floor.log" 2>&1 & PEER_PID=$! ;;
    sockmap)  "$FLOOR" --sockmap "$PROXY" "$BACKEND" >>"$OUT/sockmap.log" 2>&1 & PEER_PID=$! ;;
    corogate) "$BUILD/corogate" -c "$OUT/corogate.ini" >>"$OUT/corogate.log" 2>&1 & PEER_PID=$! ;;
    esac
    wait_port "$(( PORT + 1 ))" && kill -0 "$PEER_PID" 2>/dev/null
}

run() {   # run PEER CONNS REP: one measured run, appended to $OUT/PEER-CONNS.txt
    local peer=$1 n=$2 rep=$3 target=$PROXY m0 m1 c0 c1 p0 p1 msgs name=$1-$2-$3
    [ "$peer" = direct ] && target=$BACKEND
    start_peer "$peer" ||
        { echo "bench-sockmap: $peer did not start:" >&2; cat "$OUT/$peer.log" >&2; exit 1; }
    read -r m0 c0 <<<"$(machine)"
    p0=$(cpu_ticks "$PEER_PID")
    "$LG" run --mode tcp --target "$target" --connections "$n" --connect-rate 0 \
        --closed-loop --message-size "$SIZE" --duration "${SECS}s" --quiet \
        --json "$OUT/$name.json" >"$OUT/lg-$name.log" 2>&1 ||
        { echo "bench-sockmap: loadgen failed ($peer, $n connections):" >&2; cat "$OUT/lg-$name.log" >&2; exit 1; }
    read -r m1 c1 <<<"$(machine)"
    p1=$(cpu_ticks "$PEER_PID")
    stop "$PEER_PID"
    PEER_PID=
    msgs=$(jnum "$OUT/$name.json" messages received)
    awk -v m="${msgs:-0}" -v busy=$(( m1 - m0 )) -v cs=$(( c1 - c0 )) -v p=$(( p1 - p0 )) \
        -v t="$TCK" -v s="$SECS" -v peer="$peer" -v n="$n" -v rep="$rep" -v f="$OUT/$peer-$n.txt" 'BEGIN {
        if (m <= 0) { print "bench-sockmap: no messages echoed" > "/dev/stderr"; exit 1 }
        mach = busy * 1e6 / t / m; proc = p * 1e6 / t / m; ctxt = cs / m
        printf("%-8s %5d conns rep %d: machine %6.2f us/msg, proxy %6.2f us/msg, %5.2f ctxt/msg, %7.0f msgs/s\n",
               peer, n, rep, mach, proc, ctxt, m / s)
        printf("%f %f %f %f\n", mach, proc, ctxt, m / s) >> f }' || exit 1
}

# The same backend for every run: its cost is in every peer's machine figure alike.
"$LG" serve --mode tcp --listen "$BACKEND" --threads 1 --quiet >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
wait_port "$PORT" || { echo "bench-sockmap: the echo backend did not start" >&2; exit 1; }

for n in $CONNS; do
    for (( rep = 1; rep <= REPS; rep++ )); do
        for peer in $(rotate $(( rep - 1 )) $PEERS); do run "$peer" "$n" "$rep"; done
    done
done

col() { awk -v k="$2" '{ print $k }' "$1" | median_in; }
{
echo
echo "make bench-sockmap — $(date -u +%Y-%m-%dT%H:%MZ), $(getconf _NPROCESSORS_ONLN) CPUs," \
     "$SIZE-byte closed loop, medians of $REPS"
printf '%-6s %-9s %11s %13s %9s %11s %9s %10s\n' conns peer "machine us" "above direct" \
    "x floor" "proxy us" "ctxt/msg" "msgs/s"
for n in $CONNS; do
    base=
    [ -f "$OUT/direct-$n.txt" ] && base=$(col "$OUT/direct-$n.txt" 1)
    for peer in $PEERS; do
        f=$OUT/$peer-$n.txt
        xf=-
        # repetition k of this peer over repetition k of the floor relay, median of the k
        [ -f "$OUT/floor-$n.txt" ] && xf=$(paste -d' ' "$f" "$OUT/floor-$n.txt" |
            awk '$5 > 0 { print $1 / $5 }' | median_in)
        awk -v n="$n" -v peer="$peer" -v m="$(col "$f" 1)" -v p="$(col "$f" 2)" \
            -v c="$(col "$f" 3)" -v r="$(col "$f" 4)" -v b="$base" -v xf="${xf:--}" 'BEGIN {
            above = (b == "" || peer == "direct") ? "-" : sprintf("%.2f", m - b)
            if (xf != "-") xf = sprintf("%.3f", xf)
            printf("%-6d %-9s %11.2f %13s %9s %11.2f %9.2f %10.0f\n", n, peer, m, above, xf, p,
                   c, r) }'
    done
done
} | tee "$OUT/table.txt"
