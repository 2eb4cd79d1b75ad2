#!/usr/bin/env bash
# nginx as the reference reverse proxy in front of the mock upstream, pinned to $PROXY_CPU.
#
#   nginx.sh start        :$NGINX_JSON_PORT -> mock JSON, :$NGINX_SSE_PORT -> mock SSE
#                         (proxy_pass, upstream keepalive, proxy_buffering off for SSE)
#   nginx.sh stop
#   nginx.sh pids         master + worker PIDs (load.sh PIDS=...)
#   nginx.sh status       PIDs, affinity, RSS
#   nginx.sh pin CPULIST  move the running proxy to CPULIST
#
# Env: PROXY_CPU (default 0), RUN_DIR, NGINX_JSON_PORT, NGINX_SSE_PORT.
set -u
. "$(dirname "$0")/lib.sh"

D=$RUN_DIR/nginx-proxy
master() { [ -s "$D/nginx.pid" ] && cat "$D/nginx.pid"; }

case "${1:-}" in
start)
    m=$(master); alive "$m" && die "nginx proxy already running (pid $m)"
    port_free "$NGINX_JSON_PORT" || die "port $NGINX_JSON_PORT busy"
    port_free "$NGINX_SSE_PORT" || die "port $NGINX_SSE_PORT busy"
    mkdir -p "$D/tmp"
    render "$BENCH_DIR/conf/proxy-nginx.conf.in" "$D/nginx.conf"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null
    taskset -c "$PROXY_CPU" nginx -p "$D" -c "$D/nginx.conf" -e "$D/error.log" || die "nginx failed; see $D/error.log"
    wait_port "$NGINX_JSON_PORT" && wait_port "$NGINX_SSE_PORT" || die "nginx proxy did not come up"
    echo "started nginx proxy: pids $(pids_of_master "$(master)" | tr '\n' ' ')(cpu $PROXY_CPU)"
    ;;
stop)
    stop_pid "nginx proxy" "$(master)" QUIT
    ;;
pids)
    m=$(master); alive "$m" && pids_of_master "$m"
    ;;
pin)
    [ -n "${2:-}" ] || die "usage: $0 pin CPULIST"
    m=$(master); alive "$m" || die "nginx proxy not running"
    for p in $(pids_of_master "$m"); do taskset -a -p -c "$2" "$p" > /dev/null; done
    echo "nginx proxy pinned to cpu $2"
    ;;
status)
    m=$(master)
    alive "$m" || { echo "nginx proxy not running"; exit 1; }
    for p in $(pids_of_master "$m"); do
        echo "pid $p $(tr -d '\0' < /proc/$p/comm) cpus=$(taskset -p -c $p | sed 's/.*: //') rss_kb=$(rss_kb $p)"
    done
    ;;
*)
    sed -n '2,11p' "$0"; exit 2
    ;;
esac
