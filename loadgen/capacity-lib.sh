# loadgen/capacity-lib.sh — pieces shared by loadgen/capacity.sh and loadgen/capacity-1m.sh
# (sourced, not run). The caller sets:
#   LG, CG       the loadgen and daemon binaries
#   CG_SOCK      corogate's stats socket
#   SOCAT        the socat to talk to it [socat]
#   RUNENV       optional array, a prefix for the binaries (e.g. env LD_LIBRARY_PATH=...)
#   PIDS         array: every process started here is appended to it

SOCAT=${SOCAT:-socat}
RUNENV=("${RUNENV[@]+"${RUNENV[@]}"}")

now_ms() { date +%s%3N; }
# Resident set of process $1 in kB: smaps_rollup (exact), VmRSS (synced lazily) otherwise.
rss_kb() {
    awk '/^Rss:/ { print $2; found = 1; exit } END { if (!found) exit 1 }' \
        "/proc/$1/smaps_rollup" 2>/dev/null || awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The runtime API's answer to one command: ask CMD [SOCKET].
ask() {
    printf '%s\n' "$1" |
        "${RUNENV[@]}" "$SOCAT" -t 2 - "UNIX-CONNECT:${2:-$CG_SOCK}" 2>/dev/null
}
# A number from corogate's `show stats` JSON: stat KEY (first occurrence).
stat() { ask 'show stats' | grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
# A number from a loadgen JSON report: jnum FILE SECTION KEY.
jnum() {
    tr -d '\n' < "$1" | grep -o "\"$2\": {[^}]*}" | grep -o "\"$3\": [0-9.e+-]*" |
        head -1 | awk '{ print $2 }'
}
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, v }'; }

# start_backends N MODE FIRST_PORT THREADS LOGPREFIX: N echo backends on FIRST_PORT..,
# one process each; sets BACKEND_SERVERS ("127.0.0.1:P ..." for corogate's servers key).
start_backends() {
    local i bport
    BACKEND_SERVERS=""
    for (( i = 0; i < $1; i++ )); do
        bport=$(( $3 + i ))
        "${RUNENV[@]}" "$LG" serve --mode "$2" --listen "127.0.0.1:$bport" --threads "$4" \
            --quiet >"$5-$i.log" 2>&1 &
        PIDS+=($!)
        BACKEND_SERVERS="$BACKEND_SERVERS 127.0.0.1:$bport"
    done
    BACKEND_SERVERS=${BACKEND_SERVERS# }
}

# write_corogate_ini FILE MODE PORT WORKERS MAX_CONNECTIONS NOFILE UPSTREAM_SOURCES:
# one listener in front of BACKEND_SERVERS, no idle timeout, eBPF off, stats on CG_SOCK.
write_corogate_ini() {
    local lmode=tcp
    [ "$2" = ws ] && lmode=websocket
    cat >"$1" <<EOF
; written by loadgen/$(basename "$0")
[gateway]
workers = $4
max_connections = $5
nofile = $6
stats_socket = $CG_SOCK
log_level = notice
[listener cap]
bind = 127.0.0.1:$3
mode = $lmode
upstream = echo
idle_timeout = 0
backlog = ${CG_BACKLOG:-4096}
${CG_TLS_CERT:+tls = on
tls_certificate = $CG_TLS_CERT}
[upstream echo]
servers = $BACKEND_SERVERS
source = $7
[bpf]
attach = off
EOF
}

# start_corogate INI LOG: starts it, waits (10 s at most) until its stats socket answers;
# sets CGPID. Returns 1 (having printed its log) when it did not come up.
start_corogate() {
    local i
    rm -f "$CG_SOCK"
    "${RUNENV[@]}" "$CG" -c "$1" >"$2" 2>&1 &
    CGPID=$!
    PIDS+=($CGPID)
    for (( i = 0; i < 100; i++ )); do
        [ -S "$CG_SOCK" ] && [ -n "$(stat connections)" ] && return 0
        kill -0 "$CGPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$(basename "$0"): corogate did not start:" >&2
    cat "$2" >&2
    return 1
}
