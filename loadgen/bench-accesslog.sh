#!/bin/bash
# loadgen/bench-accesslog.sh — `make bench-accesslog`: what the connection log costs.
#
# Closed-loop new connections/s through corogate (CHURN_CONNS slots that each connect, do
# one 64-byte round trip and close, again and again: loadgen --churn) with
# access_log = off, and with access_log = stderr, access_log_format = json and stderr
# redirected to a file, in one run: REPS pairs, each run on a fresh daemon, in the order
# off-json, json-off, off-json... (so that a drift of the shared machine, or the TIME_WAIT
# sockets the churn piles up, weighs on both alike). The figure is the median of the
# pairs' ratios, beside the medians of each. The logged runs' lines are counted, so a
# figure without its lines cannot pass for one with them. Target: under 5% fewer
# connections/s. The daemon's CPU time per connection (/proc/PID/stat over the run) is
# printed too: on a shared machine it moves less than the rate does.
#
# Environment [defaults]: WORKERS [1], REPS [6], SECS per run [2], CHURN_CONNS [50],
# PORT base [29400], BUILD [build], OUT [$BUILD/bench-accesslog].
set -u

BUILD=$(realpath -m "${BUILD:-build}")
OUT=$(realpath -m "${OUT:-$BUILD/bench-accesslog}")
LG=$BUILD/corogate-loadgen
CG=$BUILD/corogate
WORKERS=${WORKERS:-1}
REPS=${REPS:-6}
SECS=${SECS:-2}
CHURN_CONNS=${CHURN_CONNS:-50}
PORT=${PORT:-29400}
BACKEND=$PORT
LISTEN=$(( PORT + 1 ))
BACKEND_PID=
CG_PID=

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log

cleanup() {
    [ -n "$CG_PID" ] && kill "$CG_PID" 2>/dev/null && wait "$CG_PID" 2>/dev/null
    [ -n "$BACKEND_PID" ] && kill "$BACKEND_PID" 2>/dev/null && wait "$BACKEND_PID" 2>/dev/null
}
trap cleanup EXIT

TCK=$(getconf CLK_TCK)

conf() {   # conf VARIANT: the daemon's file
    cat <<EOF2
[gateway]
workers = $WORKERS
cpu_pinning = off
stats_socket = $OUT/corogate.sock
log_level = notice
$( [ "$1" = json ] && printf 'access_log = stderr\naccess_log_format = json\n' )

[listener tcp]
bind = 127.0.0.1:$LISTEN
upstream = echo
idle_timeout = 0
backlog = 4096

[upstream echo]
servers = 127.0.0.1:$BACKEND
source = 127.0.1.1-127.0.1.8
health_check_interval = 0

[bpf]
attach = off
EOF2
}

. "$(dirname "$0")/bench-lib.sh"    # wait_port, jnum, cpu_ticks, median_in, rotate

"$LG" serve --mode tcp --listen "127.0.0.1:$BACKEND" >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
wait_port "$BACKEND" || { echo "the echo backend did not start" >&2; exit 1; }

declare -A RATES RATE CPUS
RATIOS=
for rep in $(seq "$REPS"); do
    order="off json"
    [ $(( rep % 2 )) = 0 ] && order="json off"
    for v in $order; do
        conf "$v" >"$OUT/$v.ini"
        "$CG" -c "$OUT/$v.ini" 2>"$OUT/$v-$rep.log" &
        CG_PID=$!
        wait_port "$LISTEN" || { echo "corogate did not start: $OUT/$v-$rep.log" >&2; exit 1; }
        c0=$(cpu_ticks "$CG_PID")
        "$LG" run --mode tcp --target "127.0.0.1:$LISTEN" --source 127.0.0.2-127.0.0.250 \
            --connections "$CHURN_CONNS" --connect-rate 20000 --churn --duration "${SECS}s" \
            --json "$OUT/$v-$rep.json" --quiet >"$OUT/lg-$v-$rep.log" 2>&1
        c1=$(cpu_ticks "$CG_PID")
        kill -TERM "$CG_PID"; wait "$CG_PID" 2>/dev/null; CG_PID=
        r=$(jnum "$OUT/$v-$rep.json" throughput connections_per_s)
        n=$(jnum "$OUT/$v-$rep.json" connections connected)
        us=$(awk -v c=$(( c1 - c0 )) -v t="$TCK" -v n="${n:-0}" 'BEGIN { u = (n > 0) ? c * 1e6 / t / n : 0; print u }')
        lines=$(grep -c '^{"time"' "$OUT/$v-$rep.log")
        printf '%-4s rep %d: %8.0f new connections/s, %5.1f us corogate CPU per connection, %d log lines\n' \
            "$v" "$rep" "${r:-0}" "$us" "$lines"
        RATES[$v]+="${r:-0} "
        CPUS[$v]+="$us "
        RATE[$v]=${r:-0}
    done
    RATIOS+="$(awk -v o="${RATE[off]}" -v j="${RATE[json]}" 'BEGIN { r = (o > 0) ? j / o : 0; print r }') "
done
ratio=$(echo "$RATIOS" | tr ' ' '\n' | grep . | median_in)
off=$(echo "${RATES[off]}" | tr ' ' '\n' | grep . | median_in)
json=$(echo "${RATES[json]}" | tr ' ' '\n' | grep . | median_in)
awk -v o="$off" -v j="$json" -v r="$ratio" -v w="$WORKERS" -v c="$CHURN_CONNS" 'BEGIN {
    f = "new connections/s (%d worker(s), %d churners), medians: access_log = off %.0f, "
    f = f "stderr json to a file %.0f; median of the pairs: %+.1f%% (target: > -5%%)\n"
    printf(f, w, c, o, j, (r - 1) * 100) }'
cpu_off=$(echo "${CPUS[off]}" | tr ' ' '\n' | grep . | median_in)
cpu_json=$(echo "${CPUS[json]}" | tr ' ' '\n' | grep . | median_in)
printf 'corogate CPU per connection, medians: access_log = off %.1f us, stderr json %.1f us\n' \
    "$cpu_off" "$cpu_json"
