#!/bin/bash
# scripts/device-bundle.sh — `make device-bundle`: the binaries loadgen/capacity-1m.sh needs,
# with their shared libraries, in one folder that runs on another x86_64 Linux without
# Debian's packages or network (glibc 2.36 or newer: glibc itself is not bundled).
#
#   BUNDLE/bin/  corogate, corogate-loadgen (from BUILD), haproxy, socat (from the system),
#                each with an rpath to $ORIGIN/../lib (patchelf --force-rpath: DT_RPATH also
#                serves the libraries' own dependencies)
#   BUNDLE/lib/  every library they load (ldd) that is not part of glibc
#   BUNDLE/MANIFEST  versions, sizes, commit
#
# Environment: BUILD [build], BUNDLE [.bundle]. Needs root once, to apt-get install
# haproxy, socat and patchelf when they are missing.
set -eu

BUILD=${BUILD:-build}
BUNDLE=${BUNDLE:-.bundle}
MAX_MIB=60

missing=""
for p in haproxy:/usr/sbin/haproxy socat:/usr/bin/socat patchelf:/usr/bin/patchelf; do
    [ -x "${p#*:}" ] || missing="$missing ${p%%:*}"
done
if [ -n "$missing" ]; then
    echo "  DEPS   installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing \
              >/dev/null; }
fi
for b in "$BUILD/corogate" "$BUILD/corogate-loadgen"; do
    [ -x "$b" ] || { echo "device-bundle: $b is missing: run make first" >&2; exit 1; }
done

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
cp "$BUILD/corogate" "$BUILD/corogate-loadgen" /usr/sbin/haproxy /usr/bin/socat "$BUNDLE/bin/"

# glibc's own libraries come from the target machine (same ABI, newer there).
glibc='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl|libmvec|libBrokenLocale)\.so'
for b in "$BUNDLE"/bin/*; do
    ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r name path; do
        if ! [[ $name =~ $glibc ]] && [ ! -e "$BUNDLE/lib/$name" ]; then
            cp -L "$path" "$BUNDLE/lib/$name"
        fi
    done
    patchelf --force-rpath --set-rpath '$ORIGIN/../lib' "$b"
done
strip --strip-debug "$BUNDLE"/bin/corogate "$BUNDLE"/bin/corogate-loadgen

{
    echo "corogate device bundle, $(date -u +%Y-%m-%dT%H:%MZ), from $(. /etc/os-release; echo "$PRETTY_NAME")"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "haproxy: $(/usr/sbin/haproxy -v | head -1)"
    echo "socat: $(/usr/bin/socat -V 2>/dev/null | grep -m1 'socat version')"
    echo "glibc needed: $(objdump -T "$BUNDLE"/bin/* "$BUNDLE"/lib/* 2>/dev/null |
        grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -u | tail -1)"
    (cd "$BUNDLE" && ls -l bin lib | awk 'NF > 5 { print $5, $NF }')
} >"$BUNDLE/MANIFEST"

kib=$(du -sk "$BUNDLE" | cut -f1)
echo "  BUNDLE $BUNDLE: $(ls "$BUNDLE/bin" | wc -l) binaries, $(ls "$BUNDLE/lib" | wc -l)" \
     "libraries, $(( kib / 1024 )) MiB"
if [ "$kib" -gt $(( MAX_MIB * 1024 )) ]; then
    echo "device-bundle: $BUNDLE is over $MAX_MIB MiB" >&2
    exit 1
fi
# Every binary must find all its libraries in the bundle or in glibc.
for b in "$BUNDLE"/bin/*; do
    if ldd "$b" | grep -q 'not found'; then
        echo "device-bundle: $b: $(ldd "$b" | grep 'not found')" >&2
        exit 1
    fi
done
