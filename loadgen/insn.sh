#!/bin/bash
# loadgen/insn.sh — `make bench-insn`: user-space instructions per proxied connection and per
# relayed message, corogate against HAProxy and nginx, counted by valgrind's callgrind.
#
# Counted, not timed, so it means the same on a busy machine as on a quiet one (the CPU
# figures of `make bench` do not). Each peer runs under callgrind with the bench's
# configuration (loadgen/bench/, 1 worker; nginx with master_process off) in front of the
# bundled echo backend. After a warm-up load, its counters are zeroed (callgrind_control
# -z), the measured load runs, and its counters are dumped (-d):
#   conn   CHURN_CONNS slots that each connect, do one 64-byte round trip and close, for
#          SECS seconds: instructions / connections completed (the loadgen's report)
#   msg    MSG_CONNS connections, closed-loop 64-byte round trips for SECS seconds:
#          instructions / relayed messages (each direction counts once)
# Kernel work is not in these figures (see docs/bench.md for the system calls).
# Each dump is kept ($OUT/<mode>-<peer>-<load>.callgrind) and its TOP costliest functions
# (self cost, callgrind_annotate) are written to $OUT/<mode>-<peer>-<load>.top.
#
# Environment [defaults]: PEERS ["corogate haproxy nginx"], MODES ["tcp ws"], SECS [8],
# CHURN_CONNS [20], MSG_CONNS [100], TOP [25], PORT [29500], BUILD [build],
# OUT [$BUILD/insn-run].
set -u

BUILD=$(realpath -m "${BUILD:-build}")
OUT=$(realpath -m "${OUT:-$BUILD/insn-run}")
LG=$BUILD/corogate-loadgen
CG=$BUILD/corogate
CONF=$(realpath "$(dirname "$0")/bench")
PEERS=${PEERS:-corogate haproxy nginx}
MODES=${MODES:-tcp ws}
SECS=${SECS:-8}
CHURN_CONNS=${CHURN_CONNS:-20}
MSG_CONNS=${MSG_CONNS:-100}
TOP=${TOP:-25}
PORT=${PORT:-29500}
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
BACKEND_TCP=$(( PORT + 1 ))
BACKEND_WS=$(( PORT + 2 ))
TCP_PORT=$(( PORT + 10 ))
WS_PORT=$(( PORT + 11 ))
SOURCES=127.0.0.2-127.0.0.250

for t in valgrind callgrind_control callgrind_annotate; do
    command -v "$t" >/dev/null || { echo "insn: $t is missing (apt-get install valgrind)" >&2; exit 1; }
done
for b in "$LG" "$CG"; do
    [ -x "$b" ] || { echo "insn: $b is missing: run make first" >&2; exit 1; }
done
mkdir -p "$OUT/nginx-tmp"
rm -f "$OUT"/callgrind.* "$OUT"/*.json

PEER_PID=
BACKEND_PID=
cleanup() {
    [ -n "$PEER_PID" ] && kill -KILL "$PEER_PID" 2>/dev/null
    [ -n "$BACKEND_PID" ] && kill -TERM "$BACKEND_PID" 2>/dev/null
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

render() {
    sed -e "s|@WORKERS@|1|g" -e "s|@NOFILE@|$NOFILE|g" -e "s|@OUT@|$OUT|g" \
        -e "s|@MAXCONN@|$(( (NOFILE - 512) / 2 ))|g" -e "s|@WCONN@|$(( NOFILE - 64 ))|g" \
        -e "s|@TCP_PORT@|$TCP_PORT|g" -e "s|@WS_PORT@|$WS_PORT|g" \
        -e "s|@TLS_PORT@|$(( PORT + 12 ))|g" -e "s|@WSS_PORT@|$(( PORT + 13 ))|g" \
        -e "s|@BACKEND_TCP@|$BACKEND_TCP|g" -e "s|@BACKEND_WS@|$BACKEND_WS|g" \
        -e "s|@BPF@|off|g" "$1" > "$2"
}
. "$(dirname "$0")/bench-lib.sh"    # wait_port, jnum, cpu_ticks, median_in, rotate
port_of() { case $1 in ws) echo "$WS_PORT" ;; *) echo "$TCP_PORT" ;; esac; }

# start_peer PEER MODE: the peer under callgrind, listening.
start_peer() {
    local peer=$1 mode=$2
    local -a vg=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$peer.%p"
                 --dump-instr=no --collect-jumps=no --separate-threads=no)
    # The PEM for the TLS listeners of corogate.ini (unused here, but it must load).
    [ -f "$OUT/bench.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -subj /CN=localhost -days 2 -keyout "$OUT/bench.pem" -out "$OUT/bench.crt" \
        >/dev/null 2>&1 && cat "$OUT/bench.crt" >> "$OUT/bench.pem"
    case $peer in
    corogate)
        render "$CONF/corogate.ini" "$OUT/corogate.ini"
        "${vg[@]}" "$CG" -c "$OUT/corogate.ini" >>"$OUT/corogate.log" 2>&1 & ;;
    haproxy)
        render "$CONF/haproxy.cfg" "$OUT/haproxy.cfg"
        "${vg[@]}" haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/haproxy.log" 2>&1 & ;;
    nginx)
        render "$CONF/nginx.conf" "$OUT/nginx.conf"
        "${vg[@]}" nginx -g "master_process off;" -c "$OUT/nginx.conf" -p "$OUT" \
            -e "$OUT/nginx-error.log" >>"$OUT/nginx.log" 2>&1 & ;;
    esac
    PEER_PID=$!
    wait_port "$(port_of "$mode")" 60 && kill -0 "$PEER_PID" 2>/dev/null
}
stop_peer() {
    kill -TERM "$PEER_PID" 2>/dev/null
    sleep 1
    kill -TERM "$PEER_PID" 2>/dev/null
    wait "$PEER_PID" 2>/dev/null
    PEER_PID=
}

# lg MODE NAME ARGS...: one loadgen run against the peer, its report in $OUT/NAME.json.
lg() {
    local mode=$1 name=$2
    shift 2
    "$LG" run --mode "$mode" --target "127.0.0.1:$(port_of "$mode")" --source "$SOURCES" \
        --json "$OUT/$name.json" --quiet "$@" >"$OUT/$name.log" 2>&1
}

# measure PEER MODE LOAD: prints instructions per unit of LOAD (conn or msg).
measure() {
    local peer=$1 mode=$2 load=$3 name="$2-$1-$3" n ir dump
    local -a args
    case $load in
    conn) args=(--connections "$CHURN_CONNS" --connect-rate 0 --churn) ;;
    msg)  args=(--connections "$MSG_CONNS" --connect-rate 0 --closed-loop --message-size 64) ;;
    esac
    start_peer "$peer" "$mode" || { echo "-"; stop_peer; return; }
    lg "$mode" "$name-warm" "${args[@]}" --duration 2s
    callgrind_control -z "$PEER_PID" >/dev/null 2>&1
    lg "$mode" "$name" "${args[@]}" --duration "${SECS}s"
    callgrind_control -d "$name" "$PEER_PID" >/dev/null 2>&1
    dump=$(ls -t "$OUT"/callgrind."$peer".*.* 2>/dev/null | head -1)
    stop_peer
    case $load in
    conn) n=$(jnum "$OUT/$name.json" connections connected) ;;
    msg)  n=$(jnum "$OUT/$name.json" messages received); n=$(( ${n%.*} * 2 )) ;;
    esac
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump" 2>/dev/null)
    if [ -z "$ir" ] || [ -z "$n" ] || [ "${n%.*}" -le 0 ]; then echo "-"; return; fi
    callgrind_annotate --inclusive=no --threshold=100 --auto=no "$dump" 2>/dev/null |
        head -$(( TOP + 25 )) \
        > "$OUT/$name.top"
    mv "$dump" "$OUT/$name.callgrind"
    rm -f "$OUT"/callgrind."$peer".*
    awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f\n", i / n }'
}

declare -A R
for mode in $MODES; do
    "$LG" serve --mode "$mode" --listen "127.0.0.1:$(case $mode in ws) echo $BACKEND_WS ;;
        *) echo $BACKEND_TCP ;; esac)" --threads 1 --quiet >>"$OUT/backend.log" 2>&1 &
    BACKEND_PID=$!
    for peer in $PEERS; do
        for load in conn msg; do
            R[$mode,$peer,$load]=$(measure "$peer" "$mode" "$load")
            echo "insn: $mode $peer $load: ${R[$mode,$peer,$load]}" >&2
        done
    done
    kill -TERM "$BACKEND_PID" 2>/dev/null
    wait "$BACKEND_PID" 2>/dev/null
    BACKEND_PID=
done

best() {   # the smallest figure of a row among the peers
    local mode=$1 load=$2 p b=
    for p in $PEERS; do
        local v=${R[$mode,$p,$load]}
        [ "$v" = - ] && continue
        if [ -z "$b" ] || [ "$v" -lt "$b" ]; then b=$v; fi
    done
    echo "${b:-0}"
}
printf '%-4s %-38s' mode "user-space instructions (callgrind)"
for p in $PEERS; do printf ' %18s' "$p"; done
echo
for mode in $MODES; do
    for load in conn msg; do
        case $load in conn) what="per proxied connection" ;; msg) what="per relayed message, $MSG_CONNS conns" ;; esac
        printf '%-4s %-38s' "$mode" "$what"
        b=$(best "$mode" "$load")
        for p in $PEERS; do
            v=${R[$mode,$p,$load]}
            if [ "$v" = - ] || [ "$b" = 0 ]; then printf ' %18s' -; else
                printf ' %18s' "$v ($(awk -v v="$v" -v b="$b" 'BEGIN { printf "%.2fx", v / b }'))"
            fi
        done
        echo
    done
done
echo "(profiles: $OUT/<mode>-<peer>-<load>.top and .callgrind)"
