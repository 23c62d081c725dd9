#!/bin/bash
# loadgen/bench.sh — `make bench`: the same load against the echo backend directly, corogate,
# HAProxy and nginx, each with the same number of worker threads, for TCP and WebSocket.
#
# Figures, each the median of REPS runs (the loadgen's JSON reports and /proc):
#   rss_idle    user-space RSS per idle connection: RSS of the proxy's processes with
#               IDLE_CONNS idle connections open, minus before, divided by IDLE_CONNS (the
#               proxy is restarted for every repetition, so earlier runs do not pre-grow it).
#               RSS is smaps_rollup's, counted page by page: VmRSS in /proc/PID/status is
#               kept per thread and synced lazily, off by up to 64 pages per thread (256 KiB,
#               128 bytes per connection at 2000 connections)
#   rss_msg     the same after one 1 KiB message went through each connection both ways
#               (per-connection buffers must have gone back to the pool)
#   cpu_msg     proxy CPU time per relayed 64-byte message (each direction counts once),
#               from /proc/PID/stat over the closed-loop 100-connection runs
#   cpu_msg1k   the same over the closed-loop 1000-connection runs
#   usr_msg     the user-space part of cpu_msg (utime alone): the proxy's own code, without
#               the kernel's TCP work, which is 85-92 % of every peer's CPU per message here
#   cpu_conn    proxy CPU time per new connection (accept, upstream connect, one 64-byte
#               round trip, both closes), over the conn_rate runs
#   usr_conn    the user-space part of cpu_conn
#   cl_100      messages/s, closed loop, 100 connections, 64-byte messages
#   cl_1000     the same with 1000 connections
#   p99_fixed   p99 round trip in ms at FIXED_CONNS x FIXED_RATE msg/s (open loop, latency
#               from the intended send time)
#   conn_rate   new connections/s: CHURN_CONNS slots that each connect, do one round trip
#               and close, again and again (accept, upstream connect, relay, closes).
#               Every proxy connects to the backend from the same 8 source addresses
#               (127.0.1.1-8, see loadgen/bench/): from one, the ~28k ports towards the
#               backend, in TIME_WAIT after the previous peer's runs, capped whichever
#               proxy came later at ~14k/s
#   tls_conn    (modes tls, wss) new TLS connections/s with a full handshake each, as
#               conn_rate; tls_res the same resuming a session ticket; cpu_hs proxy CPU
#               per new TLS connection (full handshake, upstream connect, one round trip)
# Modes: tcp, ws, and tls / wss (the same through TLS 1.3 with an ECDSA P-256 certificate
# made for the run; the backend stays plain; "direct" has no TLS row).
# The table gives each proxy's figure and its ratio to the best of the proxies for that row
# (lower is better for RSS, CPU and p99; higher for the rates), and corogate's targets from
# issues 5 and 21 (the user-space rows have none: they say where the CPU rows' time goes).
# "direct" is the backend without a proxy: the ceiling for the rates.
# "floor" (tcp only) is bench/floor_relay.c: one epoll loop per worker that read()s and
# write()s the bytes and does nothing else (no configuration, timeouts, logs, counters or
# limits), the least CPU a proxy that relays through read() and write() can spend. It is a
# reference, not a competitor: no ratio, never "the best proxy"; a line under the table
# gives each proxy's CPU rows against it, and what the targets come to in floors.
#
# Everything shares this machine's CPUs (loadgen, backend, proxy): figures are for
# comparing the peers in one run, not absolute capacity. Configurations: loadgen/bench/.
#
# Environment (defaults in brackets): WORKERS [1], REPS [3], SECS measuring window per run
# [2], IDLE_CONNS [2000], FIXED_CONNS [100], FIXED_RATE msg/s per connection [100],
# CHURN_CONNS [50], MODES ["tcp ws tls wss"], PEERS ["direct floor corogate haproxy nginx"], BPF
# (corogate's [bpf] attach) [off], PORT base [29000], LG_THREADS loadgen threads [1],
# BACKEND_THREADS echo backend threads [1], TW_SETTLE (0: do not wait for TIME_WAIT
# sockets to drain before each peer) [1], TW_MAX [2000],
# BUILD [build], OUT [$BUILD/bench-run].
set -u

BUILD=$(realpath -m "${BUILD:-build}")
OUT=$(realpath -m "${OUT:-$BUILD/bench-run}")
LG=$BUILD/corogate-loadgen
CG=$BUILD/corogate
CONF=$(realpath "$(dirname "$0")/bench")
WORKERS=${WORKERS:-1}
REPS=${REPS:-3}
SECS=${SECS:-2}
IDLE_CONNS=${IDLE_CONNS:-2000}
FIXED_CONNS=${FIXED_CONNS:-100}
FIXED_RATE=${FIXED_RATE:-100}
CHURN_CONNS=${CHURN_CONNS:-50}
MODES=${MODES:-tcp ws tls wss}
PEERS=${PEERS:-direct floor corogate haproxy nginx}
FLOOR=$BUILD/bench/floor-relay
BPF=${BPF:-off}
PORT=${PORT:-29000}
LG_THREADS=${LG_THREADS:-1}
BACKEND_THREADS=${BACKEND_THREADS:-1}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.250}
TW_SETTLE=${TW_SETTLE:-1}
TW_MAX=${TW_MAX:-2000}
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
TCK=$(getconf CLK_TCK)
NCPU=$(getconf _NPROCESSORS_ONLN)

BACKEND_TCP=$(( PORT + 1 ))
BACKEND_WS=$(( PORT + 2 ))
TCP_PORT=$(( PORT + 10 ))
WS_PORT=$(( PORT + 11 ))
TLS_PORT=$(( PORT + 12 ))
WSS_PORT=$(( PORT + 13 ))
MAXCONN=$(( (NOFILE - 512) / 2 ))
METRICS="rss_idle rss_msg cpu_msg cpu_msg1k usr_msg cl_100 cl_1000 p99_fixed conn_rate cpu_conn usr_conn"
TLS_METRICS="rss_idle rss_msg cpu_msg cl_100 tls_conn tls_res cpu_hs"

for b in "$LG" "$CG" "$FLOOR"; do
    [ -x "$b" ] || { echo "bench: $b is missing: run make first" >&2; exit 1; }
done
mkdir -p "$OUT/nginx-tmp"
rm -f "$OUT"/*.json "$OUT"/*.log

declare -A R          # R[mode,peer,metric] = median
declare -A NOTE       # NOTE[mode,peer] = why a peer has no figures
BACKEND_PID=
PEER_PID=
LG_PID=

cleanup() {
    [ -n "$LG_PID" ] && kill -INT "$LG_PID" 2>/dev/null
    stop_peer
    [ -n "$BACKEND_PID" ] && kill -TERM "$BACKEND_PID" 2>/dev/null &&
        wait "$BACKEND_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now_ms() { date +%s%3N; }
have() { command -v "$1" >/dev/null 2>&1; }
isnum() { [[ $1 =~ ^[0-9.e+-]+$ ]]; }
# The peers that are references, not proxies to compare: no ratio, never the best.
is_reference() { [ "$1" = direct ] || [ "$1" = floor ]; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
render() {
    sed -e "s|@WORKERS@|$WORKERS|g" -e "s|@NOFILE@|$NOFILE|g" -e "s|@OUT@|$OUT|g" \
        -e "s|@MAXCONN@|$MAXCONN|g" -e "s|@WCONN@|$(( NOFILE - 64 ))|g" \
        -e "s|@TCP_PORT@|$TCP_PORT|g" -e "s|@WS_PORT@|$WS_PORT|g" \
        -e "s|@TLS_PORT@|$TLS_PORT|g" -e "s|@WSS_PORT@|$WSS_PORT|g" \
        -e "s|@BACKEND_TCP@|$BACKEND_TCP|g" -e "s|@BACKEND_WS@|$BACKEND_WS|g" \
        -e "s|@BPF@|$BPF|g" "$1" > "$2"
}
# The peer's processes: its main pid and their children (nginx workers).
peer_pids() {
    [ -n "$PEER_PID" ] || return
    echo "$PEER_PID"
    pgrep -P "$PEER_PID" 2>/dev/null
}
# kB resident of process $1: exact from smaps_rollup (Linux 4.14+), else VmRSS.
rss_of() {
    awk '/^Rss:/ { print $2; found = 1; exit } END { if (!found) exit 1 }' \
        "/proc/$1/smaps_rollup" 2>/dev/null ||
        awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}
sum_rss() {
    local p t=0 v
    for p in $(peer_pids); do
        v=$(rss_of "$p")
        t=$(( t + ${v:-0} ))
    done
    echo $t
}
# CPU ticks of the peer's processes: "total user".
sum_cpu() {
    local p t=0 u=0 a b
    for p in $(peer_pids); do
        read -r a b < <(awk '{ print $14, $15 }' "/proc/$p/stat" 2>/dev/null)
        u=$(( u + ${a:-0} ))
        t=$(( t + ${a:-0} + ${b:-0} ))
    done
    echo "$t $u"
}
# per_unit TICKS COUNT: microseconds of CPU per unit, or "fail" without units.
per_unit() {
    awk -v c="$1" -v t="$TCK" -v n="$2" \
        'BEGIN { if (n > 0) printf "%.2f\n", c * 1e6 / t / n; else print "fail" }'
}
sum_fds() {
    local p t=0
    for p in $(peer_pids); do
        t=$(( t + $(ls "/proc/$p/fd" 2>/dev/null | wc -l) ))
    done
    echo $t
}
. "$(dirname "$0")/bench-lib.sh"    # wait_port, jnum, cpu_ticks, median_in, rotate
port_of() {   # port_of MODE PEER
    if [ "$2" = direct ]; then
        case $1 in ws|wss) echo $BACKEND_WS ;; *) echo $BACKEND_TCP ;; esac
    else
        case $1 in ws) echo $WS_PORT ;; tls) echo $TLS_PORT ;; wss) echo $WSS_PORT ;;
        *) echo $TCP_PORT ;; esac
    fi
}
# The loadgen's --mode for a bench mode, and its TLS option.
lg_mode() { case $1 in ws|wss) echo ws ;; *) echo tcp ;; esac; }
lg_tls() { case $1 in tls|wss) echo --tls ;; esac; }
is_tls() { case $1 in tls|wss) return 0 ;; esac; return 1; }

start_peer() {   # start_peer PEER MODE: 0 when it listens
    local peer=$1 mode=$2
    PEER_PID=
    case $peer in
    direct) return 0 ;;
    floor)
        "$FLOOR" --threads "$WORKERS" --source 127.0.1.1-127.0.1.8 "127.0.0.1:$TCP_PORT" \
            "127.0.0.1:$BACKEND_TCP" >>"$OUT/floor.log" 2>&1 &
        PEER_PID=$! ;;
    corogate)
        render "$CONF/corogate.ini" "$OUT/corogate.ini"
        "$CG" -c "$OUT/corogate.ini" >>"$OUT/corogate.log" 2>&1 &
        PEER_PID=$! ;;
    haproxy)
        render "$CONF/haproxy.cfg" "$OUT/haproxy.cfg"
        haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/haproxy.log" 2>&1 &
        PEER_PID=$! ;;
    nginx)
        render "$CONF/nginx.conf" "$OUT/nginx.conf"
        nginx -c "$OUT/nginx.conf" -p "$OUT" -e "$OUT/nginx-error.log" >>"$OUT/nginx.log" 2>&1 &
        PEER_PID=$! ;;
    esac
    if ! wait_port "$(port_of "$mode" "$peer")" || ! kill -0 "$PEER_PID" 2>/dev/null; then
        stop_peer
        return 1
    fi
    sleep 0.3     # its workers settle (nginx forks them after listening)
    return 0
}
stop_peer() {
    local i
    [ -n "$PEER_PID" ] || return 0
    kill -TERM "$PEER_PID" 2>/dev/null
    for (( i = 0; i < 50; i++ )); do
        kill -0 "$PEER_PID" 2>/dev/null || break
        sleep 0.1
        [ $i -eq 20 ] && kill -TERM "$PEER_PID" 2>/dev/null   # corogate: again = now
    done
    kill -KILL "$PEER_PID" 2>/dev/null
    wait "$PEER_PID" 2>/dev/null
    PEER_PID=
}
start_backend() {
    "$LG" serve --mode "$(lg_mode "$1")" --listen "127.0.0.1:$(port_of "$1" direct)" \
        --threads "$BACKEND_THREADS" \
        --quiet >>"$OUT/backend.log" 2>&1 &
    BACKEND_PID=$!
    wait_port "$(port_of "$1" direct)"
}
stop_backend() {
    kill -TERM "$BACKEND_PID" 2>/dev/null
    wait "$BACKEND_PID" 2>/dev/null
    BACKEND_PID=
}

# lg MODE PEER NAME ARGS...: one loadgen run, report in $OUT/NAME.json; prints its exit status.
lg() {
    local mode=$1 peer=$2 name=$3
    shift 3
    "$LG" run --mode "$(lg_mode "$mode")" $(lg_tls "$mode") \
        --target "127.0.0.1:$(port_of "$mode" "$peer")" \
        --source "$SOURCES" --threads "$LG_THREADS" --json "$OUT/$name.json" --quiet "$@" \
        >"$OUT/$name.log" 2>&1
    echo $?
}

# RSS per idle connection: fresh (msgs 0) or after one 1 KiB message (msgs 1).
rss_run() {   # rss_run MODE PEER MSGS REP
    local mode=$1 peer=$2 msgs=$3 name="$1-$2-rss$3-$4" r0 r1 t rc
    local -a traffic=(--hold)
    [ "$msgs" = 1 ] && traffic=(--closed-loop --messages 1 --message-size 1024)
    start_peer "$peer" "$mode" || { echo fail; return; }
    r0=$(sum_rss)
    "$LG" run --mode "$(lg_mode "$mode")" $(lg_tls "$mode") \
        --target "127.0.0.1:$(port_of "$mode" "$peer")" --connections "$IDLE_CONNS" --connect-rate 20000 --duration 3s "${traffic[@]}" \
        --source "$SOURCES" --json "$OUT/$name.json" --quiet >"$OUT/$name.log" 2>&1 &
    LG_PID=$!
    t=$(( $(now_ms) + 10000 ))
    while [ "$(sum_fds)" -lt $(( 2 * IDLE_CONNS )) ] && [ "$(now_ms)" -lt $t ]; do sleep 0.05; done
    sleep 1
    r1=$(sum_rss)
    wait $LG_PID
    rc=$?
    LG_PID=
    stop_peer
    if [ $rc -ne 0 ]; then echo fail; return; fi
    awk -v a="$r0" -v b="$r1" -v n="$IDLE_CONNS" 'BEGIN { printf "%.0f\n", (b - a) * 1024 / n }'
}

# fig RC NAME SECTION KEY: a figure of run NAME's report, or "fail" when the run failed.
fig() {
    if [ "$1" = 0 ]; then jnum "$OUT/$2.json" "$3" "$4"; else echo fail; fi
}

# Waits (at most 65 s) until the machine holds at most TW_MAX sockets in TIME_WAIT. The
# previous peer's churn runs leave ~100k, and while the kernel expires them (60 s after)
# its timer work stalls whatever runs: measured here, a WebSocket proxy's p99 at a fixed
# rate went from 0.34 ms to 1.0-1.4 ms (p99.9 5-14 ms) while ~50k expired. Without the
# wait the peer measured right after "direct" (corogate) took that every time.
tw_settle() {
    local t0 n
    [ "$TW_SETTLE" = 0 ] && return
    t0=$(now_ms)
    while n=$(ss -Htan state time-wait 2>/dev/null | wc -l) && [ "$n" -gt "$TW_MAX" ] &&
          [ $(( $(now_ms) - t0 )) -lt 65000 ]; do
        sleep 1
    done
    [ $(( $(now_ms) - t0 )) -ge 1000 ] && printf ' (waited %d s for TIME_WAIT to drain)' \
        $(( ($(now_ms) - t0) / 1000 ))
}

# V[MODE,PEER,METRIC]: the figures of every repetition so far, blank-separated ("fail" for
# a failed run); R[MODE,PEER,METRIC]: their median, or "fail" when any run failed.
declare -A V
add() { V[$1,$2,$3]="${V[$1,$2,$3]:-} $4"; }   # add MODE PEER METRIC VALUE

measure_rss() {   # measure_rss MODE PEER: REPS runs of each RSS figure
    local rep
    for (( rep = 1; rep <= REPS; rep++ )); do
        add "$1" "$2" rss_idle "$(rss_run "$1" "$2" 0 $rep)"
        add "$1" "$2" rss_msg "$(rss_run "$1" "$2" 1 $rep)"
    done
}

# add_cpu MODE PEER COUNT TICKS METRIC [USER_TICKS USER_METRIC]: the proxy's CPU per unit
# of COUNT (a number, or "fail" for a failed run) into METRIC, and its user-space part.
add_cpu() {
    local n=$3
    isnum "$n" || n=0
    add "$1" "$2" "$5" "$(per_unit "$4" "$n")"
    [ $# -ge 7 ] && add "$1" "$2" "$7" "$(per_unit "$6" "$n")"
    return 0
}

# closed_loop MODE PEER NAME CONNS RATE CPU [USR]: a closed-loop run of CONNS connections
# into the figures RATE (msgs/s), CPU (the proxy's CPU per relayed message) and USR (its
# user-space part; none when not given).
closed_loop() {
    local mode=$1 peer=$2 name=$3 conns=$4 rc c0 c1 u0 u1 sent recv n=fail
    read -r c0 u0 <<<"$(sum_cpu)"
    rc=$(lg "$mode" "$peer" "$name" --connections "$conns" --connect-rate 20000 \
         --closed-loop --duration "${SECS}s")
    read -r c1 u1 <<<"$(sum_cpu)"
    add "$mode" "$peer" "$5" "$(fig "$rc" "$name" throughput msgs_per_s)"
    [ "$peer" = direct ] && return
    sent=$(fig "$rc" "$name" messages sent)
    recv=$(fig "$rc" "$name" messages received)
    isnum "$sent" && isnum "$recv" && n=$(( sent + recv ))
    add_cpu "$mode" "$peer" "$n" $(( c1 - c0 )) "$6" ${7:+$(( u1 - u0 )) "$7"}
}

# One repetition of the steady loads against a running PEER: closed loop at 100 and 1000
# connections (with the proxy's CPU over each), the fixed rate.
measure_load() {   # measure_load MODE PEER REP
    local mode=$1 peer=$2 rep=$3 rc name
    closed_loop "$mode" "$peer" "$mode-$peer-cl100-$rep" 100 cl_100 cpu_msg usr_msg
    is_tls "$mode" && return        # the TLS rows: memory, CPU per message, handshakes
    closed_loop "$mode" "$peer" "$mode-$peer-cl1000-$rep" 1000 cl_1000 cpu_msg1k
    name=$mode-$peer-fixed-$rep
    rc=$(lg "$mode" "$peer" "$name" --connections "$FIXED_CONNS" \
         --connect-rate 20000 --message-rate "$FIXED_RATE" --duration "${SECS}s")
    add "$mode" "$peer" p99_fixed "$(fig "$rc" "$name" round_trip p99)"
}

# One repetition of the connection loads against a running PEER: new connections/s with
# the proxy's CPU per connection (every connection the run made counts, ramp and drain
# included, as the CPU does); for TLS, full and resumed handshakes.
measure_churn() {   # measure_churn MODE PEER REP
    local mode=$1 peer=$2 rep=$3 rc c0 c1 u0 u1 name
    local kind=churn rate=conn_rate cpu=cpu_conn usr=usr_conn
    is_tls "$mode" && kind=tls rate=tls_conn cpu=cpu_hs usr=
    name=$mode-$peer-$kind-$rep
    read -r c0 u0 <<<"$(sum_cpu)"
    rc=$(lg "$mode" "$peer" "$name" --connections "$CHURN_CONNS" \
         --connect-rate 20000 --churn --duration "${SECS}s")
    read -r c1 u1 <<<"$(sum_cpu)"
    add "$mode" "$peer" $rate "$(fig "$rc" "$name" throughput connections_per_s)"
    [ "$peer" = direct ] ||
        add_cpu "$mode" "$peer" "$(fig "$rc" "$name" connections connected)" \
                $(( c1 - c0 )) $cpu ${usr:+$(( u1 - u0 )) $usr}
    is_tls "$mode" || return 0
    name=$mode-$peer-tlsres-$rep
    rc=$(lg "$mode" "$peer" "$name" --connections "$CHURN_CONNS" \
         --connect-rate 20000 --churn --tls-resume --duration "${SECS}s")
    add "$mode" "$peer" tls_res "$(fig "$rc" "$name" throughput connections_per_s)"
}

pick() {   # the median, or "fail" when any run failed
    local x
    for x in "$@"; do [ "$x" = fail ] && { echo fail; return; }; done
    median "$@"
}

# ------------------------------------------------------------------ run
echo "bench: $WORKERS worker(s) per peer, $NCPU CPUs shared by loadgen, backend and proxy;" \
     "medians of $REPS; peers: $PEERS"
for peer in $PEERS; do
    case $peer in
    haproxy|nginx) have "$peer" || NOTE[tcp,$peer]="not installed (make bench-deps)" ;;
    esac
done
# The certificate of the TLS modes: ECDSA P-256, made for this run (chain and key in one
# file, which all three peers read). Made whatever the modes: every peer's configuration
# has its TLS listeners, and none starts without the file.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -keyout "$OUT/bench.key" -out "$OUT/bench.crt" 2>/dev/null &&
    cat "$OUT/bench.crt" "$OUT/bench.key" > "$OUT/bench.pem" ||
    { echo "bench: openssl could not make the TLS certificate" >&2; exit 1; }

# A peer's timed figures are taken in turns with the others', one repetition of each peer
# after another: this host's speed drifts by up to 1.5x over minutes, and a peer measured
# all at once, minutes after another, took that drift into its ratios. Memory is measured
# peer by peer (it does not drift); the churn loads come last, as their TIME_WAIT sockets
# expire 60 s later in a storm of timer work that would land in the other loads
# (tw_settle()).
for mode in $MODES; do
    start_backend "$mode" || { echo "bench: the $mode echo backend did not start" >&2; exit 1; }
    peers=
    for peer in $PEERS; do
        [ -n "${NOTE[tcp,$peer]:-}" ] && { NOTE[$mode,$peer]=${NOTE[tcp,$peer]}; continue; }
        if [ "$peer" = direct ] && is_tls "$mode"; then
            NOTE[$mode,direct]="the backend is plain: no TLS row"
            continue
        fi
        if [ "$peer" = floor ] && [ "$mode" != tcp ]; then
            NOTE[$mode,floor]="the floor relay is plain TCP only"
            continue
        fi
        if [ "$peer" = corogate ] && [ "$mode" = ws ] &&
           ! { render "$CONF/corogate.ini" "$OUT/corogate.ini" &&
               "$CG" -t -c "$OUT/corogate.ini" >/dev/null 2>&1; }; then
            NOTE[ws,corogate]="corogate websocket listener not available"
            echo "ws: corogate websocket listener not available"
            continue
        fi
        peers="$peers $peer"
    done
    t0=$(now_ms)
    printf 'bench: %s memory...' "$mode"
    for peer in $peers; do
        [ "$peer" = direct ] || measure_rss "$mode" "$peer"
    done
    printf ' %d s\n' $(( ($(now_ms) - t0) / 1000 ))
    for phase in load churn; do
        printf 'bench: %s %s, %d x (%s)...' "$mode" "$phase" "$REPS" "${peers# }"
        tw_settle
        t0=$(now_ms)
        for (( rep = 1; rep <= REPS; rep++ )); do
            # Each repetition starts one peer further on: a peer's place in the turn (right
            # after "direct", after another proxy) changes how the machine meets it.
            for peer in $(rotate $(( rep - 1 )) $peers); do
                [ -n "${NOTE[$mode,$peer]:-}" ] && continue
                if ! start_peer "$peer" "$mode"; then
                    NOTE[$mode,$peer]="did not start (see $OUT/$peer.log)"
                    continue
                fi
                measure_$phase "$mode" "$peer" "$rep"
                stop_peer
            done
        done
        printf ' %d s\n' $(( ($(now_ms) - t0) / 1000 ))
    done
    stop_backend
    for peer in $peers; do
        [ -n "${NOTE[$mode,$peer]:-}" ] && continue
        for m in $METRICS $TLS_METRICS; do
            # shellcheck disable=SC2086   # the figures, one word each
            [ -n "${V[$mode,$peer,$m]:-}" ] && R[$mode,$peer,$m]=$(pick ${V[$mode,$peer,$m]})
        done
    done
done

# ------------------------------------------------------------------ table
label() {
    case $1 in
    rss_idle)  echo "RSS per idle conn, bytes ($IDLE_CONNS conns)" ;;
    rss_msg)   echo "RSS per idle conn after a 1 KiB msg, bytes" ;;
    cpu_msg)   echo "proxy CPU per relayed msg, us (100 conns)" ;;
    cpu_msg1k) echo "proxy CPU per relayed msg, us (1000 conns)" ;;
    usr_msg)   echo "  of which user space, us (100 conns)" ;;
    cpu_conn)  echo "proxy CPU per new connection, us" ;;
    usr_conn)  echo "  of which user space, us" ;;
    cl_100)    echo "msgs/s closed loop, 100 conns" ;;
    cl_1000)   echo "msgs/s closed loop, 1000 conns" ;;
    p99_fixed) echo "p99 ms at $(( FIXED_CONNS * FIXED_RATE )) msg/s" \
                    "($FIXED_CONNS x $FIXED_RATE/s)" ;;
    conn_rate) echo "new connections/s ($CHURN_CONNS churners)" ;;
    tls_conn)  echo "new TLS conns/s, full handshake" ;;
    tls_res)   echo "new TLS conns/s, resumed (ticket)" ;;
    cpu_hs)    echo "proxy CPU per new TLS conn (full), us" ;;
    esac
}
lower_better() {
    case $1 in rss_*|cpu_*|usr_*|p99_fixed) return 0 ;; esac
    return 1
}
better() {   # better METRIC A B: the better of two figures ("" for A: B)
    if [ -z "$2" ]; then echo "$3"
    elif lower_better "$1"; then awk -v a="$2" -v b="$3" 'BEGIN { print (b < a) ? b : a }'
    else awk -v a="$2" -v b="$3" 'BEGIN { print (b > a) ? b : a }'; fi
}
target() {   # corogate's target as "OP RATIO" against the best other proxy
    case $1 in
    rss_idle|rss_msg) echo "<= 0.33" ;;
    cpu_msg|cpu_msg1k|cpu_conn) echo "<= 0.70" ;;
    cl_100|cl_1000)   echo ">= 1.15" ;;
    p99_fixed)        echo "<= 1.00" ;;
    conn_rate)        echo ">= 1.30" ;;
    tls_conn|tls_res) echo ">= 1.20" ;;
    cpu_hs)           echo "<= 1.00" ;;
    esac
}
# corogate's target for a row of a TLS mode (issue 17) where it differs from the plain one.
target_of() {   # target_of MODE METRIC
    if is_tls "$1" && [ "$2" = cpu_msg ]; then echo "<= 1.00"; else target "$2"; fi
}
fmtv() {
    isnum "$1" || { echo "${1:--}"; return; }
    case $2 in
    p99_fixed) awk -v v="$1" 'BEGIN { printf "%.3f", v }' ;;
    cpu_msg*|usr_msg) awk -v v="$1" 'BEGIN { printf "%.2f", v }' ;;
    cpu_conn|usr_conn) awk -v v="$1" 'BEGIN { printf "%.1f", v }' ;;
    cpu_hs)    awk -v v="$1" 'BEGIN { printf "%.1f", v }' ;;
    *)         awk -v v="$1" 'BEGIN { printf "%.0f", v }' ;;
    esac
}

proxies=""
for p in $PEERS; do is_reference "$p" || proxies="$proxies $p"; done
{
echo
echo "make bench — $(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, $WORKERS worker(s) each," \
     "medians of $REPS; (xN) = ratio to the best proxy of the row"
printf '%-5s %-46s' mode metric
for p in $PEERS; do printf ' %18s' "$p"; done
printf '  %-22s\n' "corogate: target met?"
for mode in $MODES; do
    metrics=$METRICS
    is_tls "$mode" && metrics=$TLS_METRICS
    for m in $metrics; do
        best=
        for p in $proxies; do
            v=${R[$mode,$p,$m]:-}
            isnum "$v" || continue
            best=$(better $m "$best" "$v")
        done
        printf '%-5s %-46s' "$mode" "$(label $m)"
        for p in $PEERS; do
            v=${R[$mode,$p,$m]:-}
            if [ -n "${NOTE[$mode,$p]:-}" ]; then cell="n/a"
            elif isnum "$v" && ! is_reference "$p" && [ -n "$best" ] && isnum "$best" &&
                 awk -v b="$best" 'BEGIN { exit !(b > 0) }'; then
                ratio=$(awk -v v="$v" -v b="$best" 'BEGIN { printf "%.2f", v / b }')
                cell="$(fmtv "$v" $m) (${ratio}x)"
            else cell=$(fmtv "$v" $m); fi
            printf ' %18s' "$cell"
        done
        # corogate against the best of the other proxies
        other=
        for p in $proxies; do
            [ "$p" = corogate ] && continue
            v=${R[$mode,$p,$m]:-}
            isnum "$v" || continue
            other=$(better $m "$other" "$v")
        done
        cg=${R[$mode,corogate,$m]:-}
        if isnum "$cg" && [ -n "$other" ] && awk -v o="$other" 'BEGIN { exit !(o > 0) }'; then
            read -r op want <<<"$(target_of "$mode" $m)"
            ratio=$(awk -v c="$cg" -v o="$other" 'BEGIN { printf "%.2f", c / o }')
            if [ -z "$op" ]; then printf '  %s (no target)\n' "$ratio"; continue; fi
            met=NO
            awk -v r="$ratio" -v w="$want" -v op="$op" \
                'BEGIN { exit !((op == "<=") ? (r <= w) : (r >= w)) }' && met=yes
            printf '  %s (%s %s)\n' "$ratio $met" "$op" "$want"
        else
            printf '  -\n'
        fi
    done
done
# per_rep_range A B: the lowest and highest of the ratios of the figures A (one word a
# repetition) over the figures B of the same repetitions, as " (LO-HI)"; nothing for
# fewer than two. The host's speed moves between repetitions: a repetition's peers, run
# seconds apart, mostly share one speed, so these ratios say how far the median's can be
# trusted.
per_rep_range() {
    # shellcheck disable=SC2086   # the figures, one word each
    paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '
        $1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9.]+$/ && $2 > 0 {
            r = $1 / $2; n++
            if (n == 1 || r < lo) lo = r
            if (n == 1 || r > hi) hi = r }
        END { if (n >= 2) printf " (%.2f-%.2f)", lo, hi }'
}

# Each proxy's CPU rows over the floor relay's (the ratio of the medians, and the range of
# the per-repetition ratios), and the target (0.7x of the best other proxy) in floors:
# below 1.00 it asks for less CPU than read() and write() alone cost.
for m in cpu_msg cpu_msg1k cpu_conn; do
    f=${R[tcp,floor,$m]:-}
    isnum "$f" && awk -v f="$f" 'BEGIN { exit !(f > 0) }' || continue
    line=
    other=
    for p in $proxies; do
        v=${R[tcp,$p,$m]:-}
        isnum "$v" || continue
        line="$line $p $(awk -v v="$v" -v f="$f" 'BEGIN { printf "%.2fx", v / f }')"
        line="$line$(per_rep_range "${V[tcp,$p,$m]:-}" "${V[tcp,floor,$m]:-}")"
        [ "$p" = corogate ] || other=$(better $m "$other" "$v")
    done
    [ -n "$other" ] && line="$line; target $(awk -v o="$other" -v f="$f" \
        'BEGIN { printf "%.2fx", 0.7 * o / f }')"
    printf 'floor tcp %-40s%s\n' "$(label $m):" "$line"
done
for k in "${!NOTE[@]}"; do echo "note: ${k/,/ }: ${NOTE[$k]}"; done
echo "(per-run JSON reports and logs in $OUT/)"
} | tee "$OUT/bench.txt"
