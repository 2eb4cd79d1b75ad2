#!/bin/sh
# Installs what building, running and testing tollgate needs on Debian 12, and nothing
# that is already there. Run as root (or through sudo). Used by `make run` and `make test`;
# `sh scripts/deps.sh bench` adds what `make bench` needs (nginx, wrk). Every mode installs
# web/'s npm packages (the dashboard's uPlot, built into the binary); `test` adds tests/e2e's
# and chromium (the dashboard's browser test).
set -eu

DEB_BUILD="gcc make cmake pkg-config clang-format libuv1-dev libhttp-parser-dev \
libcurl4-openssl-dev libjansson-dev libsqlite3-dev libssl-dev libyaml-dev libhiredis-dev \
libpq-dev libcmocka-dev nodejs npm"
DEB_TEST="curl sqlite3 chromium"
DEB_BENCH="nginx wrk curl"

want="$DEB_BUILD"
case "${1:-build}" in
test) want="$want $DEB_TEST" ;;
bench) want="$want $DEB_BENCH" ;; # bench/run.sh: reference proxy, mock upstream, load generator
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        # nodejs may come from elsewhere than Debian; accept any working node/npm.
        case "$p" in
        nodejs) command -v node >/dev/null 2>&1 && continue ;;
        npm) command -v npm >/dev/null 2>&1 && continue ;;
        esac
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "deps: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

here=$(cd "$(dirname "$0")/.." && pwd)

# The dashboard's uPlot (web/package-lock.json) is compiled into the binary: every build needs
# web/node_modules, refreshed when the lockfile is newer.
if [ ! -d "$here/web/node_modules" ] ||
    [ "$here/web/package-lock.json" -nt "$here/web/node_modules/.package-lock.json" ]; then
    echo "deps: installing npm packages for web/ (the dashboard)"
    (cd "$here/web" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ "${1:-build}" = test ]; then
    if [ ! -d "$here/tests/e2e/node_modules" ] ||
        [ "$here/tests/e2e/package-lock.json" -nt "$here/tests/e2e/node_modules/.package-lock.json" ]; then
        echo "deps: installing npm packages for tests/e2e"
        (cd "$here/tests/e2e" && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi
