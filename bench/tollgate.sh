#!/usr/bin/env bash
# tollgate under test, configured like a production deployment in front of the mock upstream.
#
#   tollgate.sh start     write RUN_DIR/tollgate/tollgate.yaml, start `tollgate serve` pinned to
#                         $PROXY_CPU with one worker, wait for /readyz, create a project key
#                         through the admin API and write it to RUN_DIR/tollgate/project.key
#   tollgate.sh stop      SIGTERM (graceful: in-flight requests finish, the ledger is flushed)
#   tollgate.sh pids      the PID to sample (one process; workers are threads)
#   tollgate.sh status    PID, threads, affinity, RSS
#   tollgate.sh pin CPU   move the running gateway (all threads) to CPU
#
# Auth and the usage ledger are on, as they always are: every request carries a project key,
# is checked against the in-memory key table and lands in the SQLite ledger (data_dir in
# RUN_DIR). Two providers point at the mock: "up-json" (:$MOCK_JSON_PORT) serves every model,
# "up-sse" (:$MOCK_SSE_PORT) serves $SSE_MODEL, the model the streaming payload names, so one
# gateway port relays both modes like nginx's two servers do.
#
# Env: TOLLGATE_BIN (default build/tollgate), TOLLGATE_PORT (18380), PROXY_CPU (0), RUN_DIR,
# TOLLGATE_LOG_LEVEL (warn: like nginx's access_log off, no line per request),
# TOLLGATE_EXTRA_YAML (top-level config sections appended to the file, for experiments, e.g.
# "ledger: {batch_rows: 256}").
set -u
. "$(dirname "$0")/lib.sh"

D=$RUN_DIR/tollgate
PIDFILE=$D/tollgate.pid
ADMIN=$D/admin.key # the admin key we generated (also given as TOLLGATE_ADMIN_KEY)
PROJECT_KEY=$D/project.key
BASE=http://127.0.0.1:$TOLLGATE_PORT

pid() { [ -s "$PIDFILE" ] && cat "$PIDFILE"; }

# new_key - a tollgate key: "tg-" and 43 base64url characters (256 random bits).
new_key() { printf 'tg-%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"; }

write_config() {
    cat > "$D/tollgate.yaml" <<EOF
# Written by bench/tollgate.sh; regenerated on every start.
listen: 127.0.0.1:$TOLLGATE_PORT
workers: 1                    # one loop thread, pinned like nginx's one worker
data_dir: $D/data
log_level: ${TOLLGATE_LOG_LEVEL:-warn}
shutdown_grace_ms: 4000      # stop_pid waits 5 s before SIGKILL

providers:
  - name: up-json
    type: openai
    base_url: http://127.0.0.1:$MOCK_JSON_PORT/v1
    api_key: env:BENCH_UPSTREAM_KEY
  - name: up-sse
    type: openai
    base_url: http://127.0.0.1:$MOCK_SSE_PORT/v1
    api_key: env:BENCH_UPSTREAM_KEY

models:
  - name: $SSE_MODEL
    provider: up-sse
    upstream_model: $JSON_MODEL
  - name: "*"
    provider: up-json

# Every request is still admitted against the organization's budget, but a full run costs
# more than the \$100 default (about 3 million requests at 47 micro-dollars): past it the
# gateway refuses, as it should, and the last measurements would be 429s.
budgets:
  default_org_monthly_usd: "1000000"

# gpt-4o-mini list prices, so every ledger row is costed as in production.
prices:
  - model: $JSON_MODEL
    input: "0.15"
    cached_input: "0.075"
    output: "0.60"
EOF
    if [ -n "${TOLLGATE_EXTRA_YAML:-}" ]; then
        printf '\n# TOLLGATE_EXTRA_YAML\n%s\n' "$TOLLGATE_EXTRA_YAML" >> "$D/tollgate.yaml"
    fi
}

# admin METHOD PATH [JSON] - one admin API call; prints the body, fails unless 2xx.
admin() {
    local out code
    out=$(mktemp)
    code=$(curl -s -m 10 -o "$out" -w '%{http_code}' -X "$1" "$BASE$2" \
        -H "Authorization: Bearer $(cat "$ADMIN")" -H 'Content-Type: application/json' \
        ${3:+--data-binary "$3"}) || code=000
    cat "$out"; rm -f "$out"
    [ "${code:0:1}" = 2 ]
}

# project_id NAME - the id of project NAME from GET /v1/organization/projects: the flat
# object holding "name":"NAME", then its "id".
project_id() {
    admin GET /v1/organization/projects | grep -o "{[^{}]*\"name\": *\"$1\"[^{}]*}" |
        grep -o '"id": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'
}

start() {
    local p body proj key i
    p=$(pid); alive "$p" && die "tollgate already running (pid $p)"
    [ -x "$TOLLGATE_BIN" ] || die "no tollgate binary at $TOLLGATE_BIN (build it: make build)"
    port_free "$TOLLGATE_PORT" || die "port $TOLLGATE_PORT busy"
    # A fresh data dir each start: an empty ledger, and the admin key below is the owner.
    rm -rf "$D"; mkdir -p "$D/data"
    new_key > "$ADMIN"; chmod 600 "$ADMIN"
    write_config
    ulimit -n "$(ulimit -Hn)" 2>/dev/null
    # The mock ignores the key; it only has to be a reference the config can resolve. Started
    # from $D with core dumps allowed, so a crash under load leaves $D/core* for gdb instead of
    # nothing (the log level hides the lines before it); exec keeps $! the gateway's PID.
    (
        cd "$D" || exit 1
        ulimit -c unlimited 2>/dev/null
        export BENCH_UPSTREAM_KEY=bench-placeholder-upstream-key
        TOLLGATE_ADMIN_KEY=$(cat "$ADMIN")
        export TOLLGATE_ADMIN_KEY
        exec nohup taskset -c "$PROXY_CPU" "$TOLLGATE_BIN" serve --config "$D/tollgate.yaml" \
            < /dev/null > "$D/tollgate.log" 2>&1
    ) &
    echo $! > "$PIDFILE"
    for ((i = 0; i < 1000; i++)); do
        [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$BASE/readyz")" = 200 ] && break
        alive "$(pid)" || break
        sleep 0.01
    done
    if ! alive "$(pid)"; then
        tail -n 20 "$D/tollgate.log" >&2
        die "tollgate exited at start; see $D/tollgate.log"
    fi
    [ "$i" -lt 1000 ] || { stop; die "tollgate not ready after 10 s; see $D/tollgate.log"; }

    proj=$(project_id production)
    [ -n "$proj" ] || { stop; die "no project \"production\" in GET /v1/organization/projects"; }
    body=$(admin POST "/v1/organization/projects/$proj/api_keys" '{"name":"bench"}') ||
        { echo "$body" >&2; stop; die "creating a project key failed"; }
    key=$(printf '%s' "$body" | grep -o '"value": *"tg-[^"]*"' | head -n 1 | sed 's/.*"\(tg-[^"]*\)"$/\1/')
    [ -n "$key" ] || { echo "$body" >&2; stop; die "no key value in the create-key answer"; }
    printf '%s\n' "$key" > "$PROJECT_KEY"; chmod 600 "$PROJECT_KEY"
    echo "started tollgate: pid $(pid) (cpu $PROXY_CPU) on $BASE, project $proj, key in $PROJECT_KEY"
}

stop() {
    # SIGTERM is the graceful stop; give it the time to flush the ledger before KILL.
    stop_pid tollgate "$(pid)" TERM
    rm -f "$PIDFILE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
pids) p=$(pid); alive "$p" && echo "$p" ;;
status)
    p=$(pid)
    alive "$p" || { echo "tollgate: not running"; exit 1; }
    echo "tollgate: pid $p threads=$(awk '/^Threads:/{print $2}' /proc/$p/status) cpus=$(taskset -p -c $p | sed 's/.*: //') rss_kb=$(rss_kb $p)"
    ;;
pin)
    [ -n "${2:-}" ] || die "usage: $0 pin CPULIST"
    p=$(pid); alive "$p" || die "tollgate not running"
    taskset -a -p -c "$2" "$p" > /dev/null
    echo "tollgate pinned to cpu $2"
    ;;
*) sed -n '2,19p' "$0"; exit 2 ;;
esac
