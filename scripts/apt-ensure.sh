#!/bin/bash
# scripts/apt-ensure.sh PKG... — installs those of the Debian packages PKG that are not
# installed (one `apt-get update`, then one `apt-get install`), as root; says which. Every
# install step of the Makefile goes through here (deps, bench-deps, tls-deps, check-cross,
# check-browser), so a bare Debian 12 machine gets what each target needs.
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "  DEPS   installing:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "need root to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # one word per package
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
