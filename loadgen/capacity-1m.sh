#!/bin/bash
# loadgen/capacity-1m.sh — `make capacity-1m`: a million WebSocket connections through
# corogate (and, time permitting, HAProxy), held for a minute at a low message rate, in one
# command of at most ~8 minutes on a 16-core, 128 GiB machine. Runs with plain bash (no
# make needed) as root; also runs unprivileged or small, and says which limit stopped it.
#
#   1. binaries: CG_BUNDLE (see `make device-bundle`), else BUILD (build/), else .bundle/,
#      else builds them with make (installing make with apt-get when it is missing);
#   2. sysctls for the run only (restored on exit, each one reported: old -> new, or why
#      not): fs.file-max, fs.nr_open, ip_local_port_range, somaxconn, tcp_max_syn_backlog,
#      netdev_max_backlog, tcp_mem/rmem/wmem, tcp_tw_reuse, vm.max_map_count,
#      epoll max_user_watches, nf_conntrack_max (when loaded); then ulimit -n (hard, soft);
#   3. the count: CONNECTIONS, or less when a limit (open files per process, source ports,
#      memory) cannot hold it: the summary names that limit (limited_by);
#   4. per peer (PEERS): echo backends (`corogate-loadgen serve --mode ws`), the peer in
#      front of them (corogate: WORKERS workers, upstream sources UPSTREAM_SOURCES;
#      HAProxy: nbthread WORKERS, one server line per source and backend), and the loadgen
#      in PROCS processes from SOURCES, ramping at RATE/s, then HOLD seconds with one
#      MSG_SIZE-byte message per connection every MSG_INTERVAL seconds (open loop, checked);
#      the peer's connection count is polled during the ramp; near the end of the hold:
#      RSS (smaps_rollup), kernel Slab and sockets in use (/proc/meminfo, sockstat), CPU,
#      `show stats`/`show breaker`; then the loadgen's JSON report (held = up at the end,
#      latency, lost/corrupt); everything is SIGKILLed (fast teardown);
#   5. one JSON line on stdout (prefixed by nothing; progress lines start with "cap1m:"),
#      also in $OUT/capacity-1m.json when OUT is set, with the logs in $OUT/capacity-1m.log.
#
# HAProxy runs second, only when the time used so far leaves room for it within
# TIME_BUDGET (else the summary says why it was skipped).
#
# Environment (defaults in brackets):
#   CONNECTIONS     connections to open and hold [1000000]
#   RATE            connect rate, per second, over all loadgen processes [2500 x CPUs]
#   HOLD            seconds held after the ramp [60]
#   MSG_INTERVAL    seconds between a connection's messages [30]
#   MSG_SIZE        bytes per message [64]
#   PEERS           comma-separated: corogate, haproxy [corogate]
#   WORKERS         corogate workers / HAProxy threads [online CPUs]
#   PROCS           loadgen processes [CPUs / 2, at most 8; more when open files ask]
#   LG_THREADS      threads per loadgen process [1]
#   BACKENDS        echo backend processes [4 from 8 CPUs, 1 below; more when open files ask]
#   BACKEND_THREADS threads per backend [CPUs / 8, at least 1]
#   SOURCES         loadgen source addresses [127.0.0.2-127.0.0.250]
#   UPSTREAM_SOURCES  corogate's/HAProxy's source addresses [127.0.1.1-127.0.1.64]
#   PORT            corogate's port; HAProxy PORT+1, backends PORT+100.. [29000]
#   TIME_BUDGET     seconds the whole command may take; HAProxy is skipped when it would
#                   not fit [420]
#   SYSCTL          all: set them all; raise: only those that raise a limit (file-max,
#                   nr_open, somaxconn, backlogs, tcp_mem, map count, watches, conntrack),
#                   leaving the port range, tcp_rmem/wmem and tw_reuse as they are (a machine
#                   others use); off: none [all]
#   CG_BUNDLE       a folder with bin/ and lib/ from `make device-bundle`
#   BUILD           where the built binaries are [build]
#   WORK            logs, configs, reports [/tmp/corogate-cap1m]
#   OUT             when set: capacity-1m.json and capacity-1m.log are copied there
# Exit status: 0 when every peer run reached and held its count with no message lost or
# corrupt; 1 otherwise.
set -u

T_START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
NCPU=$(getconf _NPROCESSORS_ONLN)
TCK=$(getconf CLK_TCK)

CONNECTIONS=${CONNECTIONS:-1000000}
RATE=${RATE:-$(( 2500 * NCPU ))}
HOLD=${HOLD:-60}
MSG_INTERVAL=${MSG_INTERVAL:-30}
MSG_SIZE=${MSG_SIZE:-64}
PEERS=${PEERS:-corogate}
WORKERS=${WORKERS:-$NCPU}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.250}
UPSTREAM_SOURCES=${UPSTREAM_SOURCES:-127.0.1.1-127.0.1.64}
PORT=${PORT:-29000}
TIME_BUDGET=${TIME_BUDGET:-420}
BUILD=${BUILD:-build}
WORK=${WORK:-/tmp/corogate-cap1m}
OUT=${OUT:-}
SYSCTL=${SYSCTL:-all}

mkdir -p "$WORK"
rm -f "$WORK"/*.log "$WORK"/*.json "$WORK"/*.txt "$WORK"/*.sock
LOG=$WORK/capacity-1m.log
: >"$LOG"
elapsed() { echo $(( $(date +%s) - T_START )); }
say() { echo "cap1m: [$(elapsed)s] $*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------ 1. binaries
RUNENV=()
bundle_ok() { [ -x "$1/bin/corogate" ] && [ -x "$1/bin/corogate-loadgen" ]; }
if [ -n "${CG_BUNDLE:-}" ]; then
    bundle_ok "$CG_BUNDLE" || { say "CG_BUNDLE=$CG_BUNDLE has no bin/corogate{,-loadgen}"; exit 1; }
    BIN=$(cd "$CG_BUNDLE" && pwd)/bin
elif [ -x "$BUILD/corogate" ] && [ -x "$BUILD/corogate-loadgen" ]; then
    BIN=$(cd "$BUILD" && pwd)
elif bundle_ok .bundle; then
    BIN=$ROOT/.bundle/bin
else
    say "no binaries in CG_BUNDLE, $BUILD/ or .bundle/: building"
    if ! command -v make >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
    fi
    make BUILD="$BUILD" all >>"$LOG" 2>&1 || { say "make failed (see $LOG)"; exit 1; }
    BIN=$(cd "$BUILD" && pwd)
fi
CG=$BIN/corogate
LG=$BIN/corogate-loadgen
if [ -d "$BIN/../lib" ] && [ "$BIN" != "$(cd "$BUILD" 2>/dev/null && pwd)" ]; then
    # A bundle: its binaries carry an rpath to ../lib; the variable only for the binaries
    # we start (never for the system's tools, which may not like Debian's libraries).
    RUNENV=(env "LD_LIBRARY_PATH=$(cd "$BIN/../lib" && pwd)")
fi
# socat and haproxy: a bundle's (the run then uses nothing of the system but glibc and
# coreutils), else the system's; installed with apt-get when missing and there is no bundle.
SOCAT=""; HAPROXY=""
if [ ${#RUNENV[@]} -gt 0 ]; then
    [ -x "$BIN/socat" ] && SOCAT=$BIN/socat
    [ -x "$BIN/haproxy" ] && HAPROXY=$BIN/haproxy
fi
[ -n "$SOCAT" ] || SOCAT=$(command -v socat || true)
[ -n "$HAPROXY" ] || HAPROXY=$(command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null || true)
if [ -z "$HAPROXY" ] && [[ ,$PEERS, == *,haproxy,* ]] && [ "$(id -u)" = 0 ] &&
   command -v apt-get >/dev/null && [ -z "${CG_BUNDLE:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null 2>&1
    HAPROXY=$(command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null || true)
fi
if [ -z "$SOCAT" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${CG_BUNDLE:-}" ]
then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null 2>&1
    SOCAT=$(command -v socat || true)
fi
[ -n "$SOCAT" ] || { say "socat is missing (apt-get install socat, or a bundle)"; exit 1; }
"${RUNENV[@]}" "$CG" -V >/dev/null 2>&1 || { say "$CG does not run:"; "${RUNENV[@]}" "$CG" -V; exit 1; }
say "binaries: $CG, $LG ($("${RUNENV[@]}" "$CG" -V 2>&1 | head -1));" \
    "socat $SOCAT; haproxy ${HAPROXY:-none}"

CG_SOCK=$WORK/cg.sock
PIDS=()
. "$ROOT/loadgen/capacity-lib.sh"

# ------------------------------------------------------------------ 2. sysctls, limits
SYS_SAVED=()        # "path=old value", restored in reverse order on exit
SYS_FAILED=()
sys_get() { tr -s '\t' ' ' <"/proc/sys/${1//.//}" 2>/dev/null; }
# sys_set NAME VALUE [raise]: with "raise", only when the first number is below VALUE's.
sys_set() {
    local f=/proc/sys/${1//.//} old new
    old=$(sys_get "$1") || { say "sysctl $1: not here, skipped"; return; }
    if [ "${3:-}" = raise ] && [ "${old%% *}" -ge "${2%% *}" ] 2>/dev/null; then
        say "sysctl $1 = $old (enough)"
        return
    fi
    if [ "$SYSCTL" = off ] || { [ "$SYSCTL" = raise ] && [ "${3:-}" != raise ]; }; then
        say "sysctl $1 = $old (left: SYSCTL=$SYSCTL)"
        return
    fi
    if ! echo "$2" >"$f" 2>/dev/null; then
        SYS_FAILED+=("$1")
        say "sysctl $1: could not set $2, kept $old"
        return
    fi
    SYS_SAVED+=("$1=$old")
    new=$(sys_get "$1")
    say "sysctl $1: $old -> $new"
}
sys_restore() {
    local i kv n=${#SYS_SAVED[@]}
    for (( i = n - 1; i >= 0; i-- )); do
        kv=${SYS_SAVED[i]}
        kv=${kv%%=*}
        echo "${SYS_SAVED[i]#*=}" >"/proc/sys/${kv//.//}" 2>/dev/null ||
            say "sysctl $kv: could not restore ${SYS_SAVED[i]#*=}"
    done
    [ "$n" -gt 0 ] && say "$n sysctls restored"
    SYS_SAVED=()
}

mem_kb() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
MEM_KB=$(mem_kb MemTotal)
PAGES=$(( MEM_KB / 4 ))
WANT_FDS=$(( CONNECTIONS * 2 + CONNECTIONS / 10 + 65536 ))   # corogate: 2 per connection
sys_set fs.nr_open "$WANT_FDS" raise
sys_set fs.file-max $(( CONNECTIONS * 5 + 1000000 )) raise
sys_set net.ipv4.ip_local_port_range "1024 65535"
sys_set net.core.somaxconn 65535 raise
sys_set net.ipv4.tcp_max_syn_backlog 65535 raise
sys_set net.core.netdev_max_backlog 65536 raise
sys_set net.ipv4.tcp_tw_reuse 1
# Idle sockets hold no buffers; small defaults keep the in-flight ones small, and
# tcp_mem's pressure threshold (pages) well above what 4 sockets per connection use.
sys_set net.ipv4.tcp_mem "$(( PAGES / 16 )) $(( PAGES / 8 )) $(( PAGES / 4 ))" raise
sys_set net.ipv4.tcp_rmem "4096 16384 1048576"
sys_set net.ipv4.tcp_wmem "4096 16384 1048576"
sys_set vm.max_map_count $(( CONNECTIONS * 4 + 65530 )) raise
sys_set fs.epoll.max_user_watches $(( CONNECTIONS * 5 + 100000 )) raise
[ -e /proc/sys/net/netfilter/nf_conntrack_max ] &&
    sys_set net.netfilter.nf_conntrack_max $(( CONNECTIONS * 5 )) raise

# The open-files limit, inherited by everything started here.
ulimit -Hn "$WANT_FDS" 2>/dev/null
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || ulimit -Sn "$WANT_FDS" 2>/dev/null
NOFILE=$(ulimit -Sn)
[ "$NOFILE" = unlimited ] && NOFILE=$WANT_FDS
# Why the hard limit stayed where it was: raising it takes CAP_SYS_RESOURCE (bit 24 of the
# effective set), which containers and sandboxes drop even for root.
NOFILE_WHY=""
if [ "$NOFILE" -lt "$WANT_FDS" ]; then
    cap=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
    if [ -n "$cap" ] && [ $(( 0x$cap >> 24 & 1 )) -eq 0 ]; then
        NOFILE_WHY="hard RLIMIT_NOFILE $(ulimit -Hn) and no CAP_SYS_RESOURCE to raise it"
    else
        NOFILE_WHY="hard RLIMIT_NOFILE $(ulimit -Hn) (fs.nr_open $(sys_get fs.nr_open))"
    fi
fi
say "ulimit -n: asked $WANT_FDS, got $NOFILE (hard $(ulimit -Hn)); fs.nr_open" \
    "$(sys_get fs.nr_open), fs.file-max $(sys_get fs.file-max)${NOFILE_WHY:+; $NOFILE_WHY}"

# ------------------------------------------------------------------ 3. the count
naddr() {   # addresses in "A.B.C.D-A.B.C.E[,...]" (ranges in the last octet) or single ones
    local r n=0 a b
    for r in ${1//,/ }; do
        a=${r%%-*}; b=${r##*-}
        n=$(( n + ${b##*.} - ${a##*.} + 1 ))
    done
    echo $n
}
expand_addrs() {
    local r a b i
    for r in ${1//,/ }; do
        a=${r%%-*}; b=${r##*-}
        for (( i = ${a##*.}; i <= ${b##*.}; i++ )); do echo "${a%.*}.$i"; done
    done
}
per_proc=$(( NOFILE - 512 ))
def_procs=$(( NCPU / 2 )); [ $def_procs -gt 8 ] && def_procs=8; [ $def_procs -lt 1 ] && def_procs=1
need=$(( (CONNECTIONS + per_proc - 1) / per_proc ))
PROCS=${PROCS:-$(( need > def_procs ? need : def_procs ))}
def_be=1; [ "$NCPU" -ge 8 ] && def_be=4
need=$(( (CONNECTIONS + 1000 + per_proc - 1) / per_proc ))
BACKENDS=${BACKENDS:-$(( need > def_be ? need : def_be ))}
BACKEND_THREADS=${BACKEND_THREADS:-$(( NCPU / 8 > 0 ? NCPU / 8 : 1 ))}
LG_THREADS=${LG_THREADS:-1}

# The largest count each limit allows; the run asks for the smallest, rounded to 100.
# Memory: 4 sockets (loadgen, peer x2, backend) at ~4.5 kB of slab each plus ~6 kB in user
# space (peer, loadgen, backend) per connection, as measured at 2-10k here: an estimate.
declare -A CAP
CAP[nofile_corogate]=$(( (NOFILE - 256) / 2 ))
CAP[nofile_loadgen]=$(( PROCS * per_proc ))
CAP[nofile_backend]=$(( BACKENDS * per_proc ))
CAP[source_ports]=$(( $(naddr "$SOURCES") * 64000 ))
CAP[upstream_ports]=$(( $(naddr "$UPSTREAM_SOURCES") * BACKENDS * 64000 ))
CAP[memory]=$(( $(mem_kb MemAvailable) * 1024 / 24000 ))
TARGET=$CONNECTIONS
LIMITED_BY=null
for k in "${!CAP[@]}"; do
    if [ "${CAP[$k]}" -lt "$TARGET" ]; then
        TARGET=$(( CAP[$k] / 100 * 100 ))
        LIMITED_BY="\"$k\""
    fi
done
if [ "$LIMITED_BY" != null ]; then
    say "limit: ${LIMITED_BY//\"/} allows $TARGET of $CONNECTIONS connections: asking $TARGET"
fi
say "plan: $TARGET WebSocket connections at $RATE/s, hold ${HOLD}s, 1 msg/${MSG_INTERVAL}s" \
    "of $MSG_SIZE B; loadgen $PROCS procs from $SOURCES; $BACKENDS backends x" \
    "$BACKEND_THREADS threads; peers $PEERS; $NCPU CPUs, $(( MEM_KB / 1048576 )) GiB"

# ------------------------------------------------------------------ teardown
kill_all() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
}
finish() {
    kill_all
    sys_restore
    # Killed before the summary: the progress so far, for whoever collects $OUT.
    if [ -n "$OUT" ] && [ ! -s "$OUT/capacity-1m.log" ]; then
        mkdir -p "$OUT" && cp "$LOG" "$OUT/capacity-1m.log"
    fi
}
trap finish EXIT
trap 'exit 1' INT TERM

slab_kb() { mem_kb Slab; }
sockets_used() { awk '$1 == "sockets:" { print $3 }' /proc/net/sockstat; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i+1) }' \
    /proc/net/sockstat; }
# Wait (at most $1 s) until the sockets of a previous run have gone.
settle() {
    local i base=$2
    for (( i = 0; i < $1; i++ )); do
        [ "$(sockets_used)" -le $(( base + 1000 )) ] && return
        sleep 1
    done
}
hap_conns() {
    ask 'show info' "$WORK/hap.sock" | awk -F': ' '$1 == "CurrConns" { print $2 }'
}
peer_conns() {   # the peer's client connections now
    if [ "$1" = corogate ]; then stat connections; else hap_conns; fi
}
jstr() { printf '"%s"' "$(printf '%s' "$1" | tr -d '"\\' | tr '\n\t' '  ')"; }

# ------------------------------------------------------------------ 4. one peer
# run_peer PEER: sets RESULT (a JSON object) and returns 0 when reached, held and intact.
run_peer() {
    local peer=$1 pport ppid i n=0 last grew t0 t1 ramp_ms stalled=0 sample_at lrc
    local rss0 rss1 slab0 slab1 sock0 sock1 cpu0 cpu1 cpu2 tcpm up_sample breaker=null
    local j=$WORK/$peer-run.json msg_rate maxconn hap_servers="" s b said=-1

    sock0=$(sockets_used)
    if [ "$peer" = corogate ]; then pport=$PORT; else pport=$(( PORT + 1 )); fi
    # New backend ports per peer: the previous run's closing sockets do not collide.
    if [ "$peer" = corogate ]; then b=$(( PORT + 100 )); else b=$(( PORT + 200 )); fi
    start_backends "$BACKENDS" ws "$b" "$BACKEND_THREADS" "$WORK/$peer-backend"
    if [ "$peer" = corogate ]; then
        CG_BACKLOG=65535 write_corogate_ini "$WORK/corogate.ini" ws "$pport" "$WORKERS" \
            $(( TARGET + TARGET / 10 + 100 )) "$NOFILE" "$UPSTREAM_SOURCES"
        start_corogate "$WORK/corogate.ini" "$WORK/corogate.log" || return 1
        ppid=$CGPID
        say "corogate $CGPID: $(ask 'show info' | grep -E '^(nofile|max_connections):' |
            tr '\n' ' ')"
    else
        for s in $BACKEND_SERVERS; do
            for i in $(expand_addrs "$UPSTREAM_SOURCES"); do
                hap_servers="$hap_servers    server s$(( ++n ))"
                hap_servers="$hap_servers $s source $i"$'\n'
            done
        done
        # maxconn within the open-files limit: HAProxy needs 2 descriptors per connection.
        maxconn=$(( TARGET + TARGET / 10 + 100 ))
        [ $maxconn -gt $(( (NOFILE - 200) / 2 )) ] && maxconn=$(( (NOFILE - 200) / 2 ))
        cat >"$WORK/haproxy.cfg" <<EOF
# written by loadgen/capacity-1m.sh; as loadgen/bench/haproxy.cfg, one server line per
# (backend, source address)
global
    maxconn $maxconn
    nbthread $WORKERS
    tune.bufsize 16384
    stats socket $WORK/hap.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout client-fin 5s
    timeout http-request 30s
    maxconn $maxconn
    option dontlognull
frontend ws_in
    bind 127.0.0.1:$pport backlog 65535
    default_backend ws_echo
backend ws_echo
    balance roundrobin
$hap_servers
EOF
        "${RUNENV[@]}" "$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
        ppid=$!
        PIDS+=($ppid)
        for (( i = 0; i < 100; i++ )); do
            [ -n "$(hap_conns)" ] && break
            kill -0 $ppid 2>/dev/null || break
            sleep 0.1
        done
        [ -n "$(hap_conns)" ] || { say "haproxy did not start: $(tail -3 "$WORK/haproxy.log")"
                                   return 1; }
    fi
    sleep 0.5
    rss0=$(rss_kb $ppid); slab0=$(slab_kb); sock0=$(sockets_used); cpu0=$(cpu_ticks $ppid)
    msg_rate=$(awk -v i="$MSG_INTERVAL" 'BEGIN { printf "%.6f", 1 / i }')
    say "$peer: ramp to $TARGET at $RATE/s"
    t0=$(now_ms)
    "${RUNENV[@]}" "$LG" run --mode ws --target "127.0.0.1:$pport" --connections "$TARGET" \
        --connect-rate "$RATE" --duration "${HOLD}s" --message-rate "$msg_rate" \
        --message-size "$MSG_SIZE" --procs "$PROCS" --threads "$LG_THREADS" --source "$SOURCES" \
        --connect-timeout 30s --reply-timeout 20s --drain 3s \
        --json "$j" >"$WORK/$peer-loadgen.log" 2>&1 &
    LGPID=$!
    PIDS+=($LGPID)
    # The ramp: until the peer holds them all, the loadgen stopped, or 10 s without growth
    # (the loadgen's own ramp ended then, at the latest).
    last=0; grew=$(now_ms)
    while :; do
        sleep 0.5
        n=$(peer_conns $peer); n=${n:-0}
        [ "$n" -ge "$TARGET" ] && break
        kill -0 $LGPID 2>/dev/null || break
        if [ "$n" -gt "$last" ]; then last=$n; grew=$(now_ms); fi
        if [ $(( $(now_ms) - grew )) -ge 10000 ]; then stalled=10; break; fi
        i=$(( ($(now_ms) - t0) / 1000 ))
        if [ $(( i % 10 )) -eq 0 ] && [ "$said" -ne "$i" ]; then
            said=$i
            say "$peer: ${i}s: $n up"
        fi
    done
    t1=$(now_ms)
    [ $stalled -gt 0 ] && t1=$grew
    ramp_ms=$(( t1 - t0 ))
    cpu1=$(cpu_ticks $ppid)
    say "$peer: ramp over after $(fmt $(( ramp_ms )) 0) ms: $n up$([ $stalled -gt 0 ] &&
        echo ", stalled 10 s")"
    # Near the end of the hold (the loadgen's started when its ramp ended, about t1).
    sample_at=$(( t1 + (HOLD - 5) * 1000 ))
    [ $(( sample_at - $(now_ms) )) -lt 3000 ] && sample_at=$(( $(now_ms) + 3000 ))
    while [ "$(now_ms)" -lt "$sample_at" ] && kill -0 $LGPID 2>/dev/null; do sleep 1; done
    up_sample=$(peer_conns $peer); up_sample=${up_sample:-0}
    rss1=$(rss_kb $ppid); slab1=$(slab_kb); sock1=$(sockets_used); tcpm=$(tcp_mem_pages)
    cpu2=$(cpu_ticks $ppid)
    if [ "$peer" = corogate ]; then
        ask 'show breaker' >"$WORK/breaker.txt"
        ask 'show stats' >"$WORK/stats.json"
        breaker=$(jstr "$(grep -m1 'breaker:' "$WORK/breaker.txt" | sed 's/^ *breaker: *//')")
    fi
    say "$peer: sampled at the hold's end: $up_sample up, RSS $rss0 -> $rss1 kB," \
        "Slab $slab0 -> $slab1 kB, sockets $sock0 -> $sock1"
    wait $LGPID
    lrc=$?
    say "$peer: loadgen exit $lrc: $(grep -m1 'RESULT' "$WORK/$peer-loadgen.log")"
    kill -KILL $ppid 2>/dev/null
    kill_all

    local errs reached held sent recv lost corrupt reord p50 p99 lg_up dsock
    reached=$(jnum "$j" connections up_after_ramp); reached=${reached:-0}
    held=$(jnum "$j" connections up_at_end); held=${held:-0}
    sent=$(jnum "$j" messages sent); recv=$(jnum "$j" messages received)
    lost=$(jnum "$j" messages lost); corrupt=$(jnum "$j" messages corrupt)
    reord=$(jnum "$j" messages reordered)
    p50=$(jnum "$j" round_trip p50); p99=$(jnum "$j" round_trip p99)
    dsock=$(( sock1 - sock0 ))
    RESULT=$(printf '{"peer": "%s", "requested": %d, "asked": %d, "limited_by": %s, ' \
        "$peer" "$CONNECTIONS" "$TARGET" "$LIMITED_BY")
    RESULT+=$(printf '"reached": %d, "held": %d, "peer_count_at_hold_end": %d, ' \
        "$reached" "$held" "$up_sample")
    RESULT+=$(printf '"ramp_s": %s, "ramp_conn_per_s": %s, "ramp_stalled": %s, ' \
        "$(fmt "$(( ramp_ms ))e-3" 2)" \
        "$(awk -v n="$n" -v ms="$ramp_ms" 'BEGIN { printf "%.0f", n * 1000 / (ms ? ms : 1) }')" \
        "$([ $stalled -gt 0 ] && echo true || echo false)")
    RESULT+=$(printf '"rss_kb": [%d, %d], "rss_per_conn_b": %s, ' "$rss0" "$rss1" \
        "$(awk -v a="$rss0" -v b="$rss1" -v n="$up_sample" \
           'BEGIN { printf "%.0f", n ? (b - a) * 1024 / n : 0 }')")
    RESULT+=$(printf '"slab_kb": [%d, %d], "sockets": [%d, %d], "slab_per_socket_b": %s, ' \
        "$slab0" "$slab1" "$sock0" "$sock1" \
        "$(awk -v a="$slab0" -v b="$slab1" -v n="$dsock" \
           'BEGIN { printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0) }')")
    RESULT+=$(printf '"slab_per_conn_b": %s, "tcp_mem_kb": %d, ' \
        "$(awk -v a="$slab0" -v b="$slab1" -v n="$up_sample" \
           'BEGIN { printf "%.0f", n ? (b - a) * 1024 / n : 0 }')" $(( ${tcpm:-0} * 4 )))
    RESULT+=$(printf '"cpu_ramp_us_per_conn": %s, "cpu_hold_pct": %s, ' \
        "$(awk -v c="$(( cpu1 - cpu0 ))" -v t="$TCK" -v n="$n" \
           'BEGIN { printf "%.1f", n ? c * 1e6 / t / n : 0 }')" \
        "$(awk -v c="$(( cpu2 - cpu1 ))" -v t="$TCK" -v ms="$(( sample_at - t1 ))" \
           'BEGIN { printf "%.1f", (ms > 0 ? c * 1e5 / t / ms : 0) }')")
    RESULT+=$(printf '"msgs": {"sent": %d, "received": %d, "lost": %d, "corrupt": %d, ' \
        "${sent:-0}" "${recv:-0}" "${lost:-0}" "${corrupt:-0}")
    RESULT+=$(printf '"reordered": %d}, "latency_ms": {"p50": %s, "p99": %s}, ' \
        "${reord:-0}" "$(fmt "${p50:-0}" 3)" "$(fmt "${p99:-0}" 3)")
    errs=$(tr -d '\n' <"$j" 2>/dev/null | grep -o '"errors": {[^}]*}' | sed 's/"errors": //')
    RESULT+=$(printf '"loadgen_errors": %s, ' "${errs:-null}")
    RESULT+=$(printf '"breaker": %s, "loadgen_status": %d}' "$breaker" "$lrc")
    say "$peer: $RESULT"
    [ "$lrc" -eq 0 ] && [ "$held" -eq "$TARGET" ]
}

# ------------------------------------------------------------------ 5. the runs, summary
RUNS=""
rc=0
last_s=0
for peer in ${PEERS//,/ }; do
    case $peer in corogate|haproxy) ;; *) say "unknown peer $peer"; rc=1; continue ;; esac
    if [ "$peer" = haproxy ] && [ -z "$HAPROXY" ]; then
        RUNS+="${RUNS:+, }{\"peer\": \"haproxy\", \"skipped\": \"haproxy not installed\"}"
        say "haproxy: skipped: not installed"
        continue
    fi
    if [ -n "$RUNS" ]; then
        if [ $(( $(elapsed) + last_s + 15 )) -gt "$TIME_BUDGET" ]; then
            why="the previous run took ${last_s}s; $(elapsed)s used of TIME_BUDGET $TIME_BUDGET"
            RUNS+=", {\"peer\": \"$peer\", \"skipped\": \"$why\"}"
            say "$peer: skipped: $why"
            continue
        fi
        settle 30 "$SOCK_BASE"
    fi
    SOCK_BASE=$(sockets_used)
    t=$(elapsed)
    RESULT="{\"peer\": \"$peer\", \"failed\": \"did not start\"}"
    run_peer "$peer" || rc=1
    last_s=$(( $(elapsed) - t ))
    RUNS+="${RUNS:+, }$RESULT"
done
kill_all
sys_restore

fails=""
for k in "${SYS_FAILED[@]+"${SYS_FAILED[@]}"}"; do fails+="${fails:+, }\"$k\""; done
SUMMARY=$(printf '{"schema": "corogate.capacity-1m/1", "date": "%s", "host": {"cpus": %d, ' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$NCPU")
SUMMARY+=$(printf '"mem_gib": %s, "kernel": "%s"}, "binaries": "%s", "nofile": %d, ' \
    "$(awk -v k="$MEM_KB" 'BEGIN { printf "%.1f", k / 1048576 }')" "$(uname -r)" "$BIN" "$NOFILE")
SUMMARY+=$(printf '"nofile_limited_by": %s, ' \
    "$([ -n "$NOFILE_WHY" ] && printf '"%s"' "$NOFILE_WHY" || echo null)")
SUMMARY+=$(printf '"sysctl_failed": [%s], "rate": %d, "hold_s": %d, "msg_interval_s": %d, ' \
    "$fails" "$RATE" "$HOLD" "$MSG_INTERVAL")
SUMMARY+=$(printf '"loadgen_procs": %d, "backends": %d, "workers": %d, ' \
    "$PROCS" "$BACKENDS" "$WORKERS")
SUMMARY+=$(printf '"runs": [%s], "wall_s": %d, "pass": %s}' "$RUNS" "$(elapsed)" \
    "$([ $rc -eq 0 ] && echo true || echo false)")
echo "$SUMMARY" | tee -a "$LOG"
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    echo "$SUMMARY" >"$OUT/capacity-1m.json"
    {
        cat "$LOG"
        for f in "$WORK"/*.ini "$WORK"/*.cfg "$WORK"/*.log "$WORK"/*.txt; do
            [ -f "$f" ] && [ "$f" != "$LOG" ] || continue
            echo "==== $f (last 60 lines)"
            tail -n 60 "$f"
        done
    } >"$OUT/capacity-1m.log" 2>&1
fi
exit $rc
