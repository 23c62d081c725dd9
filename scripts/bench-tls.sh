#!/bin/bash
# scripts/bench-tls.sh — `make bench-tls`: bench/tls_bench.c built once per TLS library
# (build/bench/tls-bench-LIB), run on test certificates made here, one table out.
#
# The certificates (ECDSA P-256 and RSA-2048, self-signed, 2 days) are generated with the
# openssl CLI into a temporary folder that is removed on exit: no private key in the tree.
# Each binary prints "lib<TAB>metric<TAB>median<TAB>min..max" lines (rates: the median of
# 3 rounds of 0.4 s); the table has one row per metric and one column per library.
#
# Environment: BUILD (build), TLS_LIBS (openssl wolfssl gnutls), CONNS (2000 idle
# connections for the memory rows), RAW=1 to print the raw lines too.
set -euo pipefail

BUILD=${BUILD:-build}
TLS_LIBS=${TLS_LIBS:-openssl wolfssl gnutls}
CONNS=${CONNS:-2000}

tmp=$(mktemp -d /tmp/corogate-bench-tls.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -keyout "$tmp/ec.key" -out "$tmp/ec.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
    -subj /CN=bench.test -keyout "$tmp/rsa.key" -out "$tmp/rsa.crt" 2>/dev/null

echo "# bench-tls $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs, load average" \
     "$(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine shares them)"
for lib in $TLS_LIBS; do
    "$BUILD/bench/tls-bench-$lib" "$tmp/ec.crt" "$tmp/ec.key" "$tmp/rsa.crt" "$tmp/rsa.key" \
        "$CONNS" >> "$tmp/out"
done
[ "${RAW:-0}" = 1 ] && cat "$tmp/out"

# One row per metric (in first-seen order), one column per library: "median (min..max)";
# the sizes of the allocations each idle server connection holds below the table.
awk -F'\t' '
    $2 ~ /^sizes_/ { sizes[++ns] = $1 " " $2 ":" $3; next }
    !($1 in seen_lib) { seen_lib[$1] = 1; libs[++nl] = $1 }
    !($2 in seen_m)   { seen_m[$2] = 1; metrics[++nm] = $2 }
    { v = $3; if ($4 != "-") v = v " (" $4 ")"; cell[$2, $1] = v }
    END {
        w = 40; cw = 26
        printf "%-" w "s", "metric"
        for (i = 1; i <= nl; i++) printf " | %-" cw "s", libs[i]
        printf "\n"
        for (j = 1; j <= nm; j++) {
            m = metrics[j]
            printf "%-" w "s", m
            for (i = 1; i <= nl; i++) {
                v = ((m, libs[i]) in cell) ? cell[m, libs[i]] : "n/a"
                printf " | %-" cw "s", v
            }
            printf "\n"
        }
        if (ns) printf "\nlive allocations per idle server connection, bytes (xN: N of them)\n"
        for (j = 1; j <= ns; j++) printf "  %s\n", sizes[j]
    }' "$tmp/out"
