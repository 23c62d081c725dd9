#!/bin/bash
# scripts/fuzz.sh — runs the libFuzzer targets built by `make fuzz-bins` (Makefile).
#
#   fuzz.sh replay DIR NAME...      every file of tests/fuzz/corpus/NAME/ once per target
#   fuzz.sh run DIR SECONDS NAME... each target for SECONDS from its corpus; prints, per
#                                   target, executions/s, edges covered, corpus size and
#                                   whether it crashed (the input: DIR/crash-NAME-*)
set -u
mode=$1 dir=$2
shift 2
status=0

if [ "$mode" = replay ]; then
    for name in "$@"; do
        corpus=tests/fuzz/corpus/$name
        files=("$corpus"/*)
        echo "  FUZZ   replay $name: ${#files[@]} inputs"
        if ! "$dir/fuzz_$name" -runs=1 "${files[@]}" > "$dir/replay-$name.log" 2>&1; then
            echo "fuzz replay: $name failed; the last lines of $dir/replay-$name.log:" >&2
            tail -30 "$dir/replay-$name.log" >&2
            status=1
        fi
    done
    exit $status
fi

secs=$1
shift
printf '%-20s %10s %8s %8s  %s\n' target execs/s edges corpus result
for name in "$@"; do
    work=$dir/work/$name
    mkdir -p "$work"
    log=$dir/run-$name.log
    "$dir/fuzz_$name" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$dir/crash-$name-" \
        "$work" "tests/fuzz/corpus/$name" > "$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    edges=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ $rc -eq 0 ]; then result=ok; else result="CRASH (rc $rc): see $log"; status=1; fi
    printf '%-20s %10s %8s %8s  %s\n' "$name" "${execs:-?}" "${edges:-?}" "${corpus:-?}" \
        "$result"
done
exit $status
