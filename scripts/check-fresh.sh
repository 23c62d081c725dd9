#!/bin/sh
# scripts/check-fresh.sh — `make check-fresh`: the README's test command on a bare Debian 12.
#
# Builds a debootstrap minbase root (no make, no compiler) in a scratch directory, with this
# machine's apt sources, puts a clean `git archive` of HEAD in it, mounts what the tests
# need (/proc, /sys with bpf and tracing under it, /dev with pts and shm), runs the README's
# `... && make test` line there as root, and prints a verdict. Everything is unmounted and
# removed on exit, whatever happens (KEEP=1 keeps the root). Root needed.
#
#   DIR      scratch directory (default: a new /tmp/corogate-fresh.XXXXXX)
#   MIRROR   Debian mirror (default: the first bookworm URI of this machine's apt sources)
set -eu

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "check-fresh: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "check-fresh: debootstrap missing (make check-fresh installs it)" >&2; exit 1; }

# The mirror: one-line sources (deb URL bookworm ...) or deb822 ones (URIs: / Suites:).
if [ -z "${MIRROR:-}" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        MIRROR=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' "$f")
        [ -n "$MIRROR" ] && break
    done
fi
if [ -z "${MIRROR:-}" ]; then
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        MIRROR=$(awk 'BEGIN { RS = ""; FS = "\n" }
            /(^|\n)Suites:[^\n]*bookworm( |\n|$)/ && !/Enabled: *no/ {
                for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, a, " "); print a[2]; exit }
            }' "$f")
        [ -n "$MIRROR" ] && break
    done
fi
[ -n "${MIRROR:-}" ] || { echo "check-fresh: no bookworm mirror in /etc/apt/sources.list*" >&2; exit 1; }

# The command a new user types, from the README: the first line with "&& make test".
CMD=$(grep -m1 '&& make test' README.md | sed 's/ *#.*$//')
[ -n "$CMD" ] || { echo "check-fresh: no '... && make test' line in README.md" >&2; exit 1; }

DIR=${DIR:-$(mktemp -d /tmp/corogate-fresh.XXXXXX)}
ROOT=$DIR/root
START=$(date +%s)
mounted=""

cleanup() {
    rc=$?
    for m in $mounted; do
        umount -R "$m" 2>/dev/null || umount -lR "$m" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" != 1 ] && ! grep -qs " $ROOT" /proc/mounts; then
        rm -rf "$DIR"
    fi
    exit $rc
}
trap cleanup EXIT INT TERM HUP

step() { echo "check-fresh: [$(( $(date +%s) - START ))s] $*"; }

step "debootstrap --variant=minbase bookworm $ROOT $MIRROR"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$DIR/debootstrap.log" 2>&1 || {
    tail -20 "$DIR/debootstrap.log"; exit 1; }

# This machine's apt configuration (sources, keyrings they name) and DNS.
rm -f "$ROOT/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$ROOT/etc/apt/sources.list.d/"
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$ROOT/etc/apt/sources.list"
find "$ROOT/etc/apt/sources.list.d" -type f ! -name '*.list' ! -name '*.sources' -delete
[ -d /etc/apt/apt.conf.d ] && cp -a /etc/apt/apt.conf.d/. "$ROOT/etc/apt/apt.conf.d/"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

step "git archive HEAD ($(git rev-parse --short HEAD)) -> /src"
mkdir -p "$ROOT/src"
git archive --format=tar HEAD | tar -x -C "$ROOT/src"
for t in make gcc cc; do
    if chroot "$ROOT" sh -c "command -v $t" >/dev/null 2>&1; then
        echo "check-fresh: the root is not bare: $t is installed" >&2
        exit 1
    fi
done

# rbind keeps bpf, tracing and debugfs under /sys, pts and shm under /dev; rslave so that
# unmounting the copies never reaches this machine's mounts.
for m in proc sys dev; do
    mkdir -p "$ROOT/$m"
    if [ $m = proc ]; then
        mount -t proc proc "$ROOT/proc"
    else
        mount --rbind /$m "$ROOT/$m"
        mount --make-rslave "$ROOT/$m"
    fi
    mounted="$ROOT/$m $mounted"
done

step "chroot: cd /src && $CMD"
set +e
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb sh -c "cd /src && $CMD" > "$DIR/test.log" 2>&1
rc=$?
set -e
tail -40 "$DIR/test.log"
cp "$DIR/test.log" build/check-fresh.log 2>/dev/null || { mkdir -p build && cp "$DIR/test.log" build/check-fresh.log; }
step "log: build/check-fresh.log"
if [ $rc = 0 ]; then
    step "PASS: the README's test command works on a bare Debian 12 (minbase) root"
else
    step "FAIL: the README's test command exited $rc on a bare Debian 12 (minbase) root"
fi
exit $rc
