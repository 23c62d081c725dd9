# loadgen/bench-lib.sh — shell functions the bench, soak and measurement scripts share
# (sourced, not run).

# wait_port PORT [SECONDS]: until something accepts on 127.0.0.1:PORT (5 s by default).
# Returns 0 when it does, 1 at the end of the wait.
wait_port() {
    local i n=$(( ${2:-5} * 20 ))
    for (( i = 0; i < n; i++ )); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
