#!/bin/bash
# loadgen/bench-uring.sh — `make bench-uring`: the echo backend's CPU per message through
# epoll (libuv, read()/write() from coroutines) and through io_uring (serve --io io_uring:
# loadgen/serve-uring.c), the experiment of issue 21 step 2 (docs/bench.md).
#
# For each connection count of CONNS: REPS pairs of runs, alternating the order within a
# pair (epoll-io_uring, io_uring-epoll, ...) so that a drift of the shared machine weighs
# on both alike; each run a fresh `serve --threads 1` driven by `run --mode tcp
# --closed-loop --message-size 64 --connect-rate 0` for SECS seconds. Figures per run: the
# backend's CPU time (utime + stime of the whole process, /proc/PID/stat, from before the
# loadgen starts to after it exits: the connects and closes are in it, a few per mille of
# the messages) divided by the messages echoed (the loadgen's JSON: messages received),
# and the loadgen's msgs/s. Printed: every run, then the medians and io_uring/epoll.
#
# Then, once per path, the system calls per message: `strace -f -c` on the backend under
# STRACE_CONNS connections for STRACE_SECS seconds (strace slows it a lot; the count per
# message is what holds), all threads, start and stop included.
#
# Environment [defaults]: REPS [3], SECS per run [3], CONNS ["1000 100"], STRACE_CONNS
# [100], STRACE_SECS [2] (STRACE_SECS=0: no strace), PORT [29500], BUILD [build],
# OUT [$BUILD/bench-uring].
set -u

BUILD=$(realpath -m "${BUILD:-build}")
OUT=$(realpath -m "${OUT:-$BUILD/bench-uring}")
LG=$BUILD/corogate-loadgen
REPS=${REPS:-3}
SECS=${SECS:-3}
CONNS=${CONNS:-1000 100}
STRACE_CONNS=${STRACE_CONNS:-100}
STRACE_SECS=${STRACE_SECS:-2}
PORT=${PORT:-29500}
TCK=$(getconf CLK_TCK)
SERVE_PID=
STRACE_PID=

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.strace

cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    [ -n "$STRACE_PID" ] && kill "$STRACE_PID" 2>/dev/null && wait "$STRACE_PID" 2>/dev/null
}
trap cleanup EXIT

. "$(dirname "$0")/bench-lib.sh"    # wait_port, jnum, cpu_ticks, median_in, rotate

# run IO CONNS REP: one measured run; appends "cpu_us msgs_per_s" to $OUT/IO-CONNS.txt.
run() {
    local io=$1 n=$2 rep=$3 c0 c1 msgs rate us
    "$LG" serve --mode tcp --io "$io" --listen "127.0.0.1:$PORT" --threads 1 \
        >"$OUT/serve-$io-$n-$rep.log" 2>&1 &
    SERVE_PID=$!
    wait_port "$PORT" || { echo "serve --io $io did not start:" >&2; cat "$OUT/serve-$io-$n-$rep.log" >&2; exit 1; }
    c0=$(cpu_ticks "$SERVE_PID")
    "$LG" run --mode tcp --target "127.0.0.1:$PORT" --connections "$n" --connect-rate 0 \
        --closed-loop --message-size 64 --duration "${SECS}s" --quiet \
        --json "$OUT/$io-$n-$rep.json" >"$OUT/lg-$io-$n-$rep.log" 2>&1 ||
        { echo "loadgen failed ($io, $n connections):" >&2; cat "$OUT/lg-$io-$n-$rep.log" >&2; exit 1; }
    c1=$(cpu_ticks "$SERVE_PID")
    kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || { echo "serve --io $io exited $?" >&2; exit 1; }
    SERVE_PID=
    msgs=$(jnum "$OUT/$io-$n-$rep.json" messages received)
    rate=$(jnum "$OUT/$io-$n-$rep.json" throughput msgs_per_s)
    us=$(awk -v c=$(( c1 - c0 )) -v t="$TCK" -v m="${msgs:-0}" 'BEGIN { print (m > 0) ? c * 1e6 / t / m : 0 }')
    printf '%-8s %5d conns rep %d: %6.3f us backend CPU per message, %7.0f msgs/s (%s messages)\n' \
        "$io" "$n" "$rep" "$us" "${rate:-0}" "${msgs:-0}"
    echo "$us ${rate:-0}" >>"$OUT/$io-$n.txt"
}

col() { awk -v k="$2" '{ print $k }' "$1" | median_in; }

for n in $CONNS; do
    rm -f "$OUT/epoll-$n.txt" "$OUT/io_uring-$n.txt"
    for rep in $(seq "$REPS"); do
        order="epoll io_uring"
        [ $(( rep % 2 )) = 0 ] && order="io_uring epoll"
        for io in $order; do
            run "$io" "$n" "$rep"
        done
    done
done

# strace IO: system calls per message echoed; prints "calls msgs".
syscalls() {
    local io=$1 child msgs calls
    strace -f -c -o "$OUT/$io.strace" "$LG" serve --mode tcp --io "$io" \
        --listen "127.0.0.1:$PORT" --threads 1 --quiet >"$OUT/strace-serve-$io.log" 2>&1 &
    STRACE_PID=$!
    wait_port "$PORT" || { echo "serve --io $io under strace did not start" >&2; exit 1; }
    "$LG" run --mode tcp --target "127.0.0.1:$PORT" --connections "$STRACE_CONNS" \
        --connect-rate 0 --closed-loop --message-size 64 --duration "${STRACE_SECS}s" \
        --quiet --json "$OUT/strace-$io.json" >"$OUT/strace-lg-$io.log" 2>&1
    child=$(pgrep -P "$STRACE_PID" | head -1)
    [ -n "$child" ] && kill -TERM "$child"
    wait "$STRACE_PID"
    STRACE_PID=
    msgs=$(jnum "$OUT/strace-$io.json" messages received)
    calls=$(awk '$NF == "total" { print $4 }' "$OUT/$io.strace")
    echo "${calls:-0} ${msgs:-0}"
}

echo
echo "backend CPU per echoed 64-byte message and msgs/s, medians of $REPS (1 thread each):"
printf '%-7s  %12s %12s %8s  %10s %10s %8s\n' conns "epoll us/msg" "uring us/msg" ratio \
    "epoll m/s" "uring m/s" ratio
for n in $CONNS; do
    ec=$(col "$OUT/epoll-$n.txt" 1); uc=$(col "$OUT/io_uring-$n.txt" 1)
    er=$(col "$OUT/epoll-$n.txt" 2); ur=$(col "$OUT/io_uring-$n.txt" 2)
    awk -v n="$n" -v ec="$ec" -v uc="$uc" -v er="$er" -v ur="$ur" 'BEGIN {
        printf("%-7d  %12.3f %12.3f %8.3f  %10.0f %10.0f %8.3f\n", n, ec, uc,
               (ec > 0) ? uc / ec : 0, er, ur, (er > 0) ? ur / er : 0) }'
done

if [ "$STRACE_SECS" != 0 ] && ! command -v strace >/dev/null; then
    echo
    echo "strace is not installed: no system call counts (apt-get install strace)"
elif [ "$STRACE_SECS" != 0 ]; then
    echo
    echo "system calls per message (strace -f -c, $STRACE_CONNS connections, ${STRACE_SECS}s):"
    for io in epoll io_uring; do
        read -r calls msgs < <(syscalls "$io")
        awk -v io="$io" -v c="$calls" -v m="$msgs" 'BEGIN {
            printf("%-8s %9d calls / %8d messages = %.3f per message\n", io, c, m,
                   (m > 0) ? c / m : 0) }'
        # strace -c's columns: % time, seconds, usecs/call, calls, [errors], syscall.
        awk -v m="$msgs" 'NR > 2 && $0 !~ /^-/ && $NF != "total" && $4 > 0 {
                 printf("    %-16s %9d  %.3f per message\n", $NF, $4, (m > 0) ? $4 / m : 0) }' \
            "$OUT/$io.strace" | sort -k2,2nr | head -6
    done
fi
