#!/bin/bash
# loadgen/capacity.sh — `make capacity`: how many connections corogate holds here, what each
# costs it, and what happens at its quota.
#
# Starts the echo backend(s), corogate in front of them, and the loadgen; then:
#   1. ramps idle connections (--hold) to QUOTA - LAT_CONNS at RATE/s and measures the
#      accept rate and corogate's CPU per accepted connection;
#   2. reads corogate's RSS (/proc/PID/smaps_rollup: exact, unlike VmRSS, which is synced
#      lazily per thread) before and after: RSS per idle connection
#      (the increase divided by the count) and in total (all of RSS divided by the count);
#   3. with the idle connections held, LAT_CONNS more connections send MSG_RATE msgs/s each
#      for LAT_DURATION (open loop): latency percentiles at that fixed rate, corogate's CPU
#      per relayed message, and RSS per idle connection after traffic (buffers must go back
#      to the pool);
#   4. asks for LAT_CONNS + OVER connections more, with max_connections = QUOTA: at most
#      LAT_CONNS may get in, every other one must be turned away (closed, reset, or 503 for
#      ws: corogate's breaker opens at 100% of the quota, refuses everything for open_for,
#      then admits a trickle until use is below resume), and the idle ones must stay up.
#      The summary shows corogate's `show breaker` (state, use, refusals).
#
# Every figure comes from the loadgen's JSON reports, corogate's stats socket (`show stats`)
# and /proc. The default QUOTA is the largest count the open-files limit allows: a proxied
# connection costs corogate 2 descriptors (client and upstream), the backend 1 and the
# loadgen 1, so with `ulimit -n` = L corogate holds about (L - 256) / 2. The loadgen uses
# ceil(count / (L - 512)) processes. For 1,000,000 on a large machine, raise the limits
# (ulimit -n, fs.nr_open, fs.file-max; see systemd/ and docs) and run e.g.
#   CONNECTIONS=1000000 RATE=50000 WORKERS=16 make capacity
# which spreads the loadgen's connections over SOURCES addresses and corogate's upstream
# connections over UPSTREAM_SOURCES (its [upstream] source key): each (source address,
# destination) pair has ~28k ports.
#
# Environment (defaults in brackets):
#   CONNECTIONS    connections to hold, the quota too [from ulimit -n]
#   RATE           connect rate, per second [2000; 500 with TLS=1]
#   LAT_CONNS      connections carrying traffic in step 3 [100]
#   MSG_RATE       messages/s per connection in step 3 [10]
#   MSG_SIZE       bytes per message [64]
#   LAT_DURATION   step 3's length, seconds [10]
#   OVER           connections asked beyond the quota in step 4 [200]
#   MODE           tcp or ws (corogate's WebSocket listener in front of a ws echo) [tcp]
#   TLS            1: the listener terminates TLS (an ECDSA P-256 certificate made for the
#                  run) and every loadgen connection is TLS (wss:// with MODE=ws) [0]
#   WORKERS        corogate worker threads [online CPUs]
#   THREADS        loadgen threads per process [1]
#   PROCS          loadgen processes [from the open-files limit]
#   BACKEND_THREADS  echo backend threads per port [1]
#   SOURCES        loadgen source addresses [127.0.0.2-127.0.0.250]
#   UPSTREAM_SOURCES  corogate's source addresses towards the backend
#                  [127.0.1.1-127.0.1.64: 1.8 million connections]
#   PORT           corogate's port; backends use PORT+1000... [28000]
#   BUILD          where the binaries are [build]
#   OUT            logs, config and JSON reports [$BUILD/capacity]
# Exit status: 0 when the idle connections were reached and held and the quota behaved;
# 1 otherwise (the summary says what failed).
set -u

BUILD=${BUILD:-build}
OUT=${OUT:-$BUILD/capacity}
LG=$BUILD/corogate-loadgen
CG=$BUILD/corogate
NOFILE=$(ulimit -n)
NCPU=$(getconf _NPROCESSORS_ONLN)
TCK=$(getconf CLK_TCK)

if [ "$NOFILE" = unlimited ]; then NOFILE=1048576; fi
CONNECTIONS=${CONNECTIONS:-$(( (NOFILE - 256) / 2 / 100 * 100 ))}
# TLS handshakes cost the loadgen and corogate about 0.6 ms of CPU each: on 2 shared CPUs
# 2000/s queues connects past their timeout, 500/s holds (measured).
if [ "${TLS:-0}" = 1 ]; then RATE=${RATE:-500}; else RATE=${RATE:-2000}; fi
LAT_CONNS=${LAT_CONNS:-100}
MSG_RATE=${MSG_RATE:-10}
MSG_SIZE=${MSG_SIZE:-64}
LAT_DURATION=${LAT_DURATION:-10}
OVER=${OVER:-200}
MODE=${MODE:-tcp}
WORKERS=${WORKERS:-$NCPU}
THREADS=${THREADS:-1}
PROCS=${PROCS:-$(( (CONNECTIONS + NOFILE - 513) / (NOFILE - 512) ))}
BACKEND_THREADS=${BACKEND_THREADS:-1}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.250}
PORT=${PORT:-28000}
UPSTREAM_SOURCES=${UPSTREAM_SOURCES:-127.0.1.1-127.0.1.64}
# Echo backends, one process each: as many as their open-files limit asks for.
NBACKENDS=$(( (CONNECTIONS + OVER + NOFILE - 513) / (NOFILE - 512) ))

for b in "$LG" "$CG"; do
    [ -x "$b" ] || { echo "capacity: $b is missing: run make first" >&2; exit 1; }
done
if [ "$LAT_CONNS" -ge "$CONNECTIONS" ]; then
    echo "capacity: LAT_CONNS ($LAT_CONNS) must be below CONNECTIONS ($CONNECTIONS)" >&2
    exit 1
fi
if [ $(( CONNECTIONS * 2 + 256 )) -gt "$NOFILE" ]; then
    echo "capacity: warning: $CONNECTIONS connections need $(( CONNECTIONS * 2 + 256 )) fds" \
         "in corogate; ulimit -n is $NOFILE" >&2
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT/cg.sock"

IDLE=$(( CONNECTIONS - LAT_CONNS ))
LG_TLS=()
if [ "${TLS:-0}" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=capacity.test -keyout "$OUT/tls.key" -out "$OUT/tls.crt" 2>/dev/null &&
        cat "$OUT/tls.crt" "$OUT/tls.key" > "$OUT/tls.pem" ||
        { echo "capacity: openssl could not make the certificate" >&2; exit 1; }
    CG_TLS_CERT=$OUT/tls.pem
    LG_TLS=(--tls)
fi
PIDS=()
CG_SOCK=$OUT/cg.sock
. "$(dirname "$0")/capacity-lib.sh"

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 1' INT TERM

lat() { fmt "$(jnum "$OUT/latency.json" round_trip "$1")" 3; }

# ------------------------------------------------------------------ backends and corogate
start_backends "$NBACKENDS" "$MODE" $(( PORT + 1000 )) "$BACKEND_THREADS" "$OUT/backend"
write_corogate_ini "$OUT/corogate.ini" "$MODE" "$PORT" "$WORKERS" "$CONNECTIONS" "$NOFILE" \
    "$UPSTREAM_SOURCES"
start_corogate "$OUT/corogate.ini" "$OUT/corogate.log" || exit 1
sleep 0.3

echo "capacity: $MODE, corogate $WORKERS workers, quota $CONNECTIONS connections" \
     "(ulimit -n $NOFILE), $NBACKENDS backend(s), upstream source $UPSTREAM_SOURCES," \
     "loadgen $PROCS process(es)"

# ------------------------------------------------------------------ 1-2. ramp, idle
rss0=$(rss_kb $CGPID)
cpu0=$(cpu_ticks $CGPID)
hold_s=$(( LAT_DURATION + 8 ))
t0=$(now_ms)
"$LG" run --mode "$MODE" "${LG_TLS[@]}" --target "127.0.0.1:$PORT" --connections "$IDLE" \
    --connect-rate "$RATE" --duration "${hold_s}s" --hold --procs "$PROCS" \
    --threads "$THREADS" --source "$SOURCES" --connect-timeout 10s \
    --json "$OUT/idle.json" >"$OUT/idle.log" 2>&1 &
IDLEPID=$!
PIDS+=($IDLEPID)
limit=$(( t0 + IDLE * 2000 / RATE + 20000 ))
up=0
while :; do
    up=$(stat connections); up=${up:-0}
    [ "$up" -ge "$IDLE" ] && break
    kill -0 $IDLEPID 2>/dev/null || break
    [ "$(now_ms)" -ge "$limit" ] && break
    sleep 0.1
done
t1=$(now_ms)
cpu1=$(cpu_ticks $CGPID)
ramp_ms=$(( t1 - t0 ))
sleep 1
rss1=$(rss_kb $CGPID)
up1=$(stat connections); up1=${up1:-0}

# ------------------------------------------------------------------ 3. fixed-rate latency
cpu2=$(cpu_ticks $CGPID)
"$LG" run --mode "$MODE" "${LG_TLS[@]}" --target "127.0.0.1:$PORT" --connections "$LAT_CONNS" \
    --connect-rate 1000 --duration "${LAT_DURATION}s" --message-rate "$MSG_RATE" \
    --message-size "$MSG_SIZE" --json "$OUT/latency.json" >"$OUT/latency.log" 2>&1
lat_rc=$?
cpu3=$(cpu_ticks $CGPID)
sleep 0.5
rss2=$(rss_kb $CGPID)

# ------------------------------------------------------------------ 4. the quota
rej0=$(stat rejected_max); rej0=${rej0:-0}
"$LG" run --mode "$MODE" "${LG_TLS[@]}" --target "127.0.0.1:$PORT" \
    --connections $(( LAT_CONNS + OVER )) \
    --connect-rate 2000 --duration 2s --hold --json "$OUT/quota.json" >"$OUT/quota.log" 2>&1
rej1=$(stat rejected_max); rej1=${rej1:-0}
ask "show breaker" >"$OUT/breaker.txt"
wait $IDLEPID
idle_rc=$?

# ------------------------------------------------------------------ summary
tot_kb=$(( rss1 ))
per_idle=$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
per_total=$(awk -v b="$rss1" -v n="$IDLE" 'BEGIN { printf "%.0f", b * 1024 / n }')
per_after=$(awk -v a="$rss0" -v b="$rss2" -v n="$IDLE" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
accept_rate=$(awk -v n="$up1" -v ms="$ramp_ms" 'BEGIN { printf "%.0f", n * 1000 / (ms ? ms : 1) }')
cpu_ramp_us=$(awk -v c="$(( cpu1 - cpu0 ))" -v t="$TCK" -v n="$up1" \
    'BEGIN { printf "%.1f", c * 1e6 / t / (n ? n : 1) }')
cpu_ramp_pct=$(awk -v c="$(( cpu1 - cpu0 ))" -v t="$TCK" -v ms="$ramp_ms" \
    'BEGIN { printf "%.0f", c * 100000 / t / (ms ? ms : 1) }')
sent=$(jnum "$OUT/latency.json" messages sent); sent=${sent:-0}
recv=$(jnum "$OUT/latency.json" messages received); recv=${recv:-0}
cpu_msg_us=$(awk -v c="$(( cpu3 - cpu2 ))" -v t="$TCK" -v n="$(( sent + recv ))" \
    'BEGIN { printf "%.1f", c * 1e6 / t / (n ? n : 1) }')
cpu_lat_pct=$(awk -v c="$(( cpu3 - cpu2 ))" -v t="$TCK" -v s="$LAT_DURATION" \
    'BEGIN { printf "%.0f", c * 100 / t / (s + 1) }')
q_conn=$(jnum "$OUT/quota.json" connections connected); q_conn=${q_conn:-0}
q_up=$(jnum "$OUT/quota.json" connections up_at_end); q_up=${q_up:-0}
q_closed=$(jnum "$OUT/quota.json" errors closed_by_peer); q_closed=${q_closed:-0}
q_reset=$(jnum "$OUT/quota.json" errors reset); q_reset=${q_reset:-0}
q_refused=$(jnum "$OUT/quota.json" errors refused); q_refused=${q_refused:-0}
q_hs=$(jnum "$OUT/quota.json" errors handshake); q_hs=${q_hs:-0}
q_total=$(jnum "$OUT/quota.json" errors total); q_total=${q_total:-0}
i_up=$(jnum "$OUT/idle.json" connections up_at_end); i_up=${i_up:-0}
i_drop=$(jnum "$OUT/idle.json" connections dropped); i_drop=${i_drop:-0}

lost=$(jnum "$OUT/latency.json" messages lost)
lat_line="$(lat p50) / $(lat p90) / $(lat p99) / $(lat p99_9) / $(lat max) ms"
lat_line="$lat_line (p50/p90/p99/p99.9/max)"
quota_line="asked $(( LAT_CONNS + OVER )) more: $q_up held, $q_total turned away"
quota_line="$quota_line (closed $q_closed, reset $q_reset, refused $q_refused, 503 $q_hs);"
quota_line="$quota_line rejected_max +$(( rej1 - rej0 ))"

echo
echo "corogate capacity ($MODE${CG_TLS_CERT:+ over TLS}) — $(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, ulimit -n $NOFILE"
printf '  %-44s %s\n' \
    "idle connections reached (corogate count)" "$up1 of $IDLE in $(fmt $(( ramp_ms )) 0) ms" \
    "accept rate" "$accept_rate conn/s (loadgen asked $RATE/s)" \
    "corogate CPU during the ramp" "$cpu_ramp_pct % of one CPU, $cpu_ramp_us us per connection" \
    "corogate RSS before / with idle conns" "$rss0 kB / $rss1 kB" \
    "RSS per idle connection (increase / count)" "$per_idle bytes" \
    "RSS per connection (all of RSS / count)" "$per_total bytes" \
    "RSS per idle connection after traffic" "$per_after bytes ($rss2 kB)" \
    "latency at $MSG_RATE msg/s x $LAT_CONNS conns" "$lat_line" \
    "  messages sent / received / lost" "$sent / $recv / $lost (exit $lat_rc)" \
    "corogate CPU at that rate" "$cpu_lat_pct % of one CPU, $cpu_msg_us us per relayed message" \
    "quota (max_connections = $CONNECTIONS)" "$quota_line" \
    "idle connections after all steps" "$i_up of $IDLE up, $i_drop dropped (loadgen exit $idle_rc)"
sed -n -e 's/^/    corogate: /' -e '/breaker:/p' -e '/^    corogate: max_connections:/p' \
    "$OUT/breaker.txt"
echo "  (logs, config and JSON reports in $OUT/)"

fail=0
failed() { echo "capacity: FAIL: $*"; fail=1; }
[ "$idle_rc" -eq 0 ] || failed "the $IDLE idle connections were not reached and held"
[ "$lat_rc" -eq 0 ] || failed "the latency run failed (exit $lat_rc, see $OUT/latency.log)"
[ "$q_up" -le "$LAT_CONNS" ] || failed "$q_up connections held beyond the quota"
[ $(( q_up + q_total )) -eq $(( LAT_CONNS + OVER )) ] ||
    failed "of $(( LAT_CONNS + OVER )) asked beyond the idle ones, $q_up held and $q_total" \
           "turned away: the others neither (see $OUT/quota.log)"
[ "$q_total" -ge "$OVER" ] || failed "only $q_total connections turned away at the quota"
[ $fail -eq 0 ] && echo "capacity: PASS"
exit $fail
