#!/usr/bin/env bash
# One side-by-side run on this machine: the mock upstream, then for json and sse at 1 and 64
# connections, the mock direct, nginx proxy_pass and tollgate, each for the same DURATION;
# then RUN_DIR/summary.md with tollgate's figures as ratios to nginx's, printed at the end.
#
#   bench/run.sh                 full run: 20 s per measurement (about 6 minutes)
#   QUICK=1 bench/run.sh         smoke run: 3 s per measurement (about 1 minute)
#
# Env: DURATION, WARMUP (seconds, per measurement), CONNS ("1 64"), MODES ("json sse"),
# ROUNDS (1; more repeats the whole matrix, interleaved, and the summary takes medians),
# TOLLGATE_BIN (build/tollgate), RUN_DIR (/tmp/tollgate-bench/run), PROXY_CPU / WRK_CPU /
# MOCK_CPU (0 / 1 / 1). tollgate is skipped, saying so, when its binary is missing or it does
# not start. Everything started here is stopped on exit.
set -u
. "$(dirname "$0")/lib.sh"
B=$BENCH_DIR

if [ "${QUICK:-0}" = 1 ]; then export DURATION=${DURATION:-3} WARMUP=${WARMUP:-1}; fi
export DURATION=${DURATION:-20} WARMUP=${WARMUP:-3}
CONNS=${CONNS:-"1 64"}
MODES=${MODES:-"json sse"}
ROUNDS=${ROUNDS:-1}
export TOLLGATE_BIN RUN_DIR
command -v nginx > /dev/null && command -v wrk > /dev/null ||
    die "nginx and wrk are needed: sh scripts/deps.sh bench"

mkdir -p "$RUN_DIR"
export RESULTS=$RUN_DIR/results.tsv LOG_DIR=$RUN_DIR/logs
rm -rf "$LOG_DIR"
: > "$RESULTS"

cleanup() {
    "$B/tollgate.sh" stop > /dev/null
    "$B/nginx.sh" stop > /dev/null
    "$B/mock-upstream.sh" stop > /dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- start -----------------------------------------------------------------------
"$B/mock-upstream.sh" start || exit 1
"$B/nginx.sh" start || exit 1
TARGETS="direct nginx tollgate"
tollgate_note=""
tollgate_died=""
if [ ! -x "$TOLLGATE_BIN" ]; then
    tollgate_note="tollgate SKIPPED: no binary at $TOLLGATE_BIN (build it with make build)"
elif ! "$B/tollgate.sh" start; then
    tollgate_note="tollgate SKIPPED: it did not start (see $RUN_DIR/tollgate/tollgate.log)"
fi
if [ -n "$tollgate_note" ]; then
    TARGETS="direct nginx"
    printf '\n*** %s ***\n\n' "$tollgate_note" >&2
fi

# --- environment -------------------------------------------------------------------
tg_rev=$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null)
tg_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$(dirname "$TOLLGATE_BIN")/CMakeCache.txt" 2>/dev/null)
{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) x $(nproc)"
    echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "debian: $(cat /etc/debian_version 2>/dev/null)"
    echo "nginx: $(dpkg-query -W -f='${Version}' nginx 2>/dev/null)"
    echo "wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null)"
    echo "tollgate: ${tollgate_note:-$TOLLGATE_BIN (${tg_type:-unknown} build; repo at $tg_rev)}"
    echo "pinning: proxy cpu $PROXY_CPU, wrk cpu $WRK_CPU, mock cpu $MOCK_CPU (cpu $PROXY_CPU while measuring direct)"
    echo "duration: ${DURATION}s per measurement, warm-up ${WARMUP}s before each; rounds: $ROUNDS"
} > "$RUN_DIR/env.txt"
cat "$RUN_DIR/env.txt"

# run TARGET MODE CONN - one load.sh measurement; a failure is reported, not fatal, so
# one broken target still leaves the others' rows.
run() {
    local t=$1 mode=$2 c=$3 pids aux s=()
    local -a T
    mapfile -t T < <(target "$t" "$mode")
    [ "$mode" = sse ] && s=(-s)
    aux=$("$B/mock-upstream.sh" pids | tr '\n' ' ')
    case $t in
    direct)
        # The mock alone on the proxy's core: what the upstream itself costs.
        "$B/mock-upstream.sh" pin "$PROXY_CPU" > /dev/null
        pids=$aux; aux=""
        ;;
    nginx) pids=$("$B/nginx.sh" pids | tr '\n' ' ') ;;
    tollgate) pids=$("$B/tollgate.sh" pids) ;;
    esac
    if ! PIDS="$pids" AUX_PIDS="$aux" CONNS="$c" "$B/load.sh" "${s[@]}" -l "$t" "${T[@]}"; then
        echo "*** $t $mode c=$c: measurement failed ***" >&2
    fi
    if [ "$t" = tollgate ] && [ -z "$tollgate_died" ] && [ -z "$("$B/tollgate.sh" pids)" ]; then
        tollgate_died="tollgate DIED during or after $mode c=$c at $(date -u +%T)Z; log and any core file in $RUN_DIR/tollgate"
        printf '\n*** %s ***\n\n' "$tollgate_died" >&2
    fi
    [ "$t" = direct ] && "$B/mock-upstream.sh" pin "$MOCK_CPU" > /dev/null
    return 0
}

# --- matrix: interleaved per (mode, connections) so drift hits every target alike --------
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in $MODES; do
        for c in $CONNS; do
            for t in $TARGETS; do run "$t" "$mode" "$c"; done
        done
    done
done

# --- the ledger really recorded the calls ---------------------------------------------
ledger_note=""
if [[ " $TARGETS " == *" tollgate "* ]]; then
    "$B/tollgate.sh" stop > /dev/null # graceful: flushes every queued ledger row
    db=$(ls "$RUN_DIR"/tollgate/data/*.db "$RUN_DIR"/tollgate/data/*.sqlite 2>/dev/null | head -n 1)
    if [ -n "$db" ] && command -v sqlite3 > /dev/null; then
        ledger_note="tollgate ledger rows after the run: $(sqlite3 "$db" 'SELECT count(*) FROM ledger' 2>&1)"
    fi
    sent=$(awk -F'\t' '$2 == "tollgate" { n += $22 } END { print n + 0 }' "$RESULTS")
    ledger_note="${ledger_note:+$ledger_note; }requests measured through tollgate: $sent (the ledger also holds the warm-ups and preflights)"
fi

# --- summary -------------------------------------------------------------------------
{
    echo "# tollgate vs nginx, $(date -u +%F)"
    echo
    echo '```'
    cat "$RUN_DIR/env.txt"
    [ -n "$ledger_note" ] && echo "$ledger_note"
    echo '```'
    echo
    [ -n "$tollgate_note" ] && { echo "**$tollgate_note**"; echo; }
    [ -n "$tollgate_died" ] && { echo "**$tollgate_died**"; echo; }
    "$B/summarize.sh" "$RESULTS" direct
} > "$RUN_DIR/summary.md"
echo
cat "$RUN_DIR/summary.md"
echo
echo "results: $RESULTS"
echo "summary: $RUN_DIR/summary.md"
