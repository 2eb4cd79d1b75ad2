# Shared settings and helpers for the bench scripts (sourced, not run).
# Every setting can be overridden from the environment.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
RUN_DIR=${RUN_DIR:-/tmp/tollgate-bench/run}  # pid files, generated configs, logs
TOLLGATE_BIN=${TOLLGATE_BIN:-$REPO_DIR/build/tollgate}

# Ports (all on 127.0.0.1).
MOCK_JSON_PORT=${MOCK_JSON_PORT:-18080}      # mock upstream: chat.completion JSON
MOCK_SSE_PORT=${MOCK_SSE_PORT:-18081}        # mock upstream: SSE stream
NGINX_JSON_PORT=${NGINX_JSON_PORT:-18180}    # nginx proxy_pass -> MOCK_JSON_PORT
NGINX_SSE_PORT=${NGINX_SSE_PORT:-18181}      # nginx proxy_pass -> MOCK_SSE_PORT
TOLLGATE_PORT=${TOLLGATE_PORT:-18380}        # tollgate: one port; the model name picks the upstream

# Model names in the request payloads. tollgate routes by model, so the
# streaming payload names its own model, mapped to the mock's SSE port.
JSON_MODEL=gpt-4o-mini
SSE_MODEL=gpt-4o-mini-stream

# CPU pinning on a 2-core box: proxy under test on core 0, load generator
# (wrk) and mock upstream share core 1.
PROXY_CPU=${PROXY_CPU:-0}
MOCK_CPU=${MOCK_CPU:-1}
WRK_CPU=${WRK_CPU:-1}

die() { echo "error: $*" >&2; exit 1; }

# wait_port PORT [SECONDS] - wait until 127.0.0.1:PORT accepts TCP connections.
wait_port() {
    local port=$1 t=${2:-20} i
    for ((i = 0; i < t * 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.01
    done
    return 1
}

# port_free PORT - true if nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pids_of_master PID - PID plus its direct children (nginx master + workers).
pids_of_master() {
    local m=$1
    [ -d "/proc/$m" ] || return 0
    echo "$m"
    if [ -r "/proc/$m/task/$m/children" ]; then
        tr ' ' '\n' < "/proc/$m/task/$m/children" | grep -v '^$'
    else
        pgrep -P "$m"
    fi
}

# rss_kb PID... - sum of VmRSS (kB) over the given processes.
rss_kb() {
    local p s=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null)
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

# cpu_ticks PID... - sum of utime+stime (clock ticks) over the given processes
# (whole thread group each).
cpu_ticks() {
    local p s=0 v
    for p in "$@"; do
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

# render TEMPLATE OUT - replace @VAR@ with the shell variable VAR.
render() {
    local in=$1 out=$2 v
    local args=()
    for v in BENCH_DIR RUN_DIR MOCK_JSON_PORT MOCK_SSE_PORT NGINX_JSON_PORT NGINX_SSE_PORT \
             TOLLGATE_PORT JSON_MODEL SSE_MODEL; do
        args+=(-e "s|@$v@|${!v}|g")
    done
    sed "${args[@]}" "$in" > "$out"
}

# pidfile helpers: RUN_DIR/<name>.pid holds the PID of a process we started.
read_pid() { local f="$RUN_DIR/$1.pid"; [ -s "$f" ] && cat "$f"; }
# alive PID - running (a zombie waiting for init to reap it counts as gone).
alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local st; st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$st" ] && [ "$st" != Z ]
}

# stop_pid NAME PID [SIGNAL] - signal one process we started and wait for it.
stop_pid() {
    local name=$1 pid=$2 sig=${3:-TERM} i
    alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null
    for ((i = 0; i < 500; i++)); do alive "$pid" || { echo "stopped $name (pid $pid)"; return 0; }; sleep 0.01; done
    kill -KILL "$pid" 2>/dev/null
    echo "killed $name (pid $pid)"
}

# target NAME json|sse - the URL that reaches the mock through NAME (direct, nginx or
# tollgate) on the first line, then one extra request header per line.
target() {
    local name=$1 mode=${2:-json}
    case $name:$mode in
    direct:json) echo "http://127.0.0.1:$MOCK_JSON_PORT/v1/chat/completions" ;;
    direct:sse) echo "http://127.0.0.1:$MOCK_SSE_PORT/v1/chat/completions" ;;
    nginx:json) echo "http://127.0.0.1:$NGINX_JSON_PORT/v1/chat/completions" ;;
    nginx:sse) echo "http://127.0.0.1:$NGINX_SSE_PORT/v1/chat/completions" ;;
    tollgate:*)
        # One port for both modes: the payload's model picks the upstream.
        [ -s "$RUN_DIR/tollgate/project.key" ] || die "no tollgate project key; run tollgate.sh start"
        echo "http://127.0.0.1:$TOLLGATE_PORT/v1/chat/completions"
        echo "Authorization: Bearer $(cat "$RUN_DIR/tollgate/project.key")"
        ;;
    *) die "unknown target $name:$mode" ;;
    esac
}
