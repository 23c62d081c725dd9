# loadgen/bench-lib.sh — shell functions the bench and measurement scripts share
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

# jnum FILE SECTION KEY: the number KEY in the object SECTION of a loadgen JSON report.
jnum() {
    tr -d '\n' < "$1" | grep -o "\"$2\": {[^}]*}" | grep -o "\"$3\": [0-9.e+-]*" |
        head -1 | awk '{ print $2 }'
}

# cpu_ticks PID: utime + stime of the process (all its threads), in clock ticks; 0 for no
# PID.
cpu_ticks() {
    [ -n "$1" ] || { echo 0; return; }
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# median_in: the median of the numbers on standard input, one a line (the mean of the two
# middle ones for an even count).
median_in() {
    sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# rotate N WORDS...: the words, starting from word N (modulo their count): each
# repetition of a bench starts one peer further on.
rotate() {
    local n=$1 i
    shift
    local -a w=("$@")
    for (( i = 0; i < ${#w[@]}; i++ )); do printf '%s ' "${w[$(( (i + n) % ${#w[@]} ))]}"; done
}
