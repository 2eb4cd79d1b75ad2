#!/bin/sh
# microbatch.sh: loads embeddings with micro-batching off and on through the real binary and
# the e2e suite's scripted upstream; reports the upstream request reduction and the added
# latency (bench/microbatch.mjs). Settings: TOLLGATE_BIN (default build/tollgate), CONNS (32),
# DURATION_S (5), WINDOW_MS (5), MAX_INPUTS (256). Needs node and tests/e2e's npm install.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${TOLLGATE_BIN:=$here/../build/tollgate}"
TOLLGATE_BIN=$(cd "$(dirname "$TOLLGATE_BIN")" && pwd)/$(basename "$TOLLGATE_BIN")
export TOLLGATE_BIN
if [ ! -d "$here/../tests/e2e/node_modules" ]; then
    (cd "$here/../tests/e2e" && npm install --no-audit --no-fund)
fi
exec node "$here/microbatch.mjs"
