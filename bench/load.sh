#!/usr/bin/env bash
# Run the wrk matrix against one URL and print a compact table.
#
#   load.sh [-s] [-l LABEL] URL ['Header: value' ...]
#
#   -s        streaming: send payloads/chat-request-stream.json ("stream": true)
#             and expect an SSE body ending in "data: [DONE]"
#   -l LABEL  name for the rows (default: host:port of URL)
#   headers   extra request headers, e.g. routing/auth headers of the gateway
#             under test ('Authorization: Bearer ...' replaces the default key)
#
# Environment (defaults in brackets):
#   CONNS     connection counts to run                     ["1 16 64 256"]
#   DURATION  seconds per measured run                     [20]
#   WARMUP    seconds of unmeasured load before each run   [3]
#   THREADS   wrk threads                                  [1]
#   WRK_CPU   core(s) wrk is pinned to, '' = no pinning    [1]
#   TIMEOUT   wrk per-request timeout in seconds           [10]
#   PIDS      PIDs of the server under test: sampled for CPU time and RSS
#             (e.g. PIDS="$(bench/nginx.sh pids)")       []
#   AUX_PIDS  other PIDs of the setup (the mock upstream) so they are not
#             counted as background load                   [mock-upstream PIDs if running]
#   BODY      request body file                            [payloads/chat-request*.json]
#   EXPECT    string the preflight response must contain   ['"usage"' / 'data: [DONE]']
#   API_KEY   bearer token when no Authorization header is given
#   RESULTS   TSV file to append one row per run to        []
#   LOG_DIR   where full wrk outputs go                    [$RUN_DIR/logs]
#
# Columns: rps; latency p50/p90/p99/max in ms (wrk, whole response);
# err = socket errors + timeouts; non2xx = HTTP status >= 400; resp_B = bytes
# read per response (headers + body); srv_cpu% = CPU used by PIDS (100 = one
# core); srv_us/req = PIDS CPU microseconds per request; srv_rss_MB = peak
# RSS of PIDS during the run (sum); cpuN% = busy share of each core;
# bg% = CPU used by processes outside this bench (100 = one core; >5 means
# the run was disturbed); steal% = CPU time the hypervisor took from this VM.
set -u
. "$(dirname "$0")/lib.sh"

stream=0 label=""
while [ $# -gt 0 ]; do
    case $1 in
    -s) stream=1; shift ;;
    -l) label=$2; shift 2 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || { sed -n '2,36p' "$0"; exit 2; }
URL=$1; shift
HEADERS=("$@")

CONNS=${CONNS:-"1 16 64 256"}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-1}
WRK_CPU=${WRK_CPU-1}
TIMEOUT=${TIMEOUT:-10}
PIDS=$(echo ${PIDS:-})
if [ -z "${AUX_PIDS+x}" ]; then AUX_PIDS=$("$BENCH_DIR/mock-upstream.sh" pids 2>/dev/null | tr '\n' ' '); fi
LOG_DIR=${LOG_DIR:-$RUN_DIR/logs}
RESULTS=${RESULTS:-}
mode=json; [ "$stream" = 1 ] && mode=sse
if [ "$stream" = 1 ]; then
    BODY=${BODY:-$BENCH_DIR/payloads/chat-request-stream.json}; EXPECT=${EXPECT:-'data: [DONE]'}
else
    BODY=${BODY:-$BENCH_DIR/payloads/chat-request.json}; EXPECT=${EXPECT:-'"usage"'}
fi
[ -n "$label" ] || label=$(echo "$URL" | sed -E 's|^[a-z]+://([^/]+).*|\1|')
command -v wrk > /dev/null || die "wrk not installed (apt-get install wrk)"
mkdir -p "$LOG_DIR"
CLK=$(getconf CLK_TCK)

wrk_args=(-t "$THREADS" --timeout "${TIMEOUT}s" -s "$BENCH_DIR/wrk/post.lua")
curl_h=()
for h in "${HEADERS[@]}"; do wrk_args+=(-H "$h"); curl_h+=(-H "$h"); done
pin=(); [ -n "$WRK_CPU" ] && pin=(taskset -c "$WRK_CPU")
export BODY_FILE=$BODY

# --- preflight: one request must succeed and look right -----------------------
has_auth=0
for h in "${HEADERS[@]}"; do case ${h,,} in authorization:*) has_auth=1 ;; esac; done
[ $has_auth = 1 ] || curl_h+=(-H "Authorization: Bearer ${API_KEY:-bench-placeholder-key}")
pre=$(curl -s -m 10 -o "$LOG_DIR/preflight.body" -w '%{http_code}' -X POST "$URL" \
      -H 'Content-Type: application/json' "${curl_h[@]}" --data-binary "@$BODY") || true
if [ "$pre" != 200 ] || ! grep -qF -- "$EXPECT" "$LOG_DIR/preflight.body"; then
    echo "preflight failed: HTTP $pre from $URL; body:" >&2
    head -c 600 "$LOG_DIR/preflight.body" >&2; echo >&2
    exit 1
fi

# --- helpers --------------------------------------------------------------------
# core_stat N -> "busy total accountable steal" jiffies of cpuN ('' = all cpus);
# accountable = user+nice+system+irq+softirq, compared with process times to
# estimate background load; steal = time the hypervisor ran something else.
core_stat() { awk -v c="cpu$1" '$1 == c { busy = $2+$3+$4+$7+$8+$9; tot = busy+$5+$6; print busy, tot, $2+$3+$4+$7+$8, $9 }' /proc/stat; }
self_children() { sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }   # cutime+cstime

sample_rss() {   # background: peak RSS (kB) of PIDS, every second, into $1
    local out=$1 p k v s peak=0
    while :; do
        s=0
        for p in $PIDS; do
            while read -r k v _; do [ "$k" = VmRSS: ] && { s=$((s + v)); break; }; done < "/proc/$p/status" 2>/dev/null
        done
        [ "$s" -gt "$peak" ] && { peak=$s; echo "$peak" > "$out"; }
        sleep 1
    done
}

printf '# %s %s  url=%s  duration=%ss warmup=%ss threads=%s wrk_cpu=%s pids=[%s]\n' \
    "$label" "$mode" "$URL" "$DURATION" "$WARMUP" "$THREADS" "${WRK_CPU:-any}" "$PIDS"
fmt='%-16s %-4s %5s %9s %8s %8s %8s %8s %5s %6s %6s %8s %10s %10s %5s %5s %5s %6s\n'
printf "$fmt" label mode conns rps p50_ms p90_ms p99_ms max_ms err non2xx resp_B srv_cpu% srv_us/req srv_rss_MB cpu0% cpu1% bg% steal%
if [ -n "$RESULTS" ] && [ ! -s "$RESULTS" ]; then
    printf 'time\tlabel\tmode\tconns\trps\tp50_ms\tp90_ms\tp99_ms\tp999_ms\tmax_ms\terrors\tnon2xx\tresp_bytes\tsrv_cpu_pct\tsrv_us_per_req\tsrv_rss_kb_peak\tsrv_rss_kb_before\tcpu0_pct\tcpu1_pct\tbg_pct\tsteal_pct\trequests\tduration_s\turl\n' > "$RESULTS"
fi

for c in $CONNS; do
    if [ "$WARMUP" -gt 0 ]; then
        "${pin[@]}" wrk "${wrk_args[@]}" -c "$c" -d "${WARMUP}s" "$URL" > /dev/null 2>&1
    fi
    log="$LOG_DIR/$label-$mode-c$c-$(date +%H%M%S).txt"
    rss_before=$(rss_kb $PIDS)
    rssf=$(mktemp); echo "$rss_before" > "$rssf"
    sample_rss "$rssf" & sampler=$!
    read -r b0 t0 _ < <(core_stat 0); read -r b1 t1 _ < <(core_stat 1); read -r _ ta ua sa < <(core_stat "")
    s0=$(cpu_ticks $PIDS); x0=$(cpu_ticks $AUX_PIDS); k0=$(self_children)

    "${pin[@]}" wrk "${wrk_args[@]}" -c "$c" -d "${DURATION}s" --latency "$URL" > "$log" 2>&1

    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    s1=$(cpu_ticks $PIDS); x1=$(cpu_ticks $AUX_PIDS); k1=$(self_children)
    read -r b0e t0e _ < <(core_stat 0); read -r b1e t1e _ < <(core_stat 1); read -r _ tae uae sae < <(core_stat "")
    rss_peak=$(cat "$rssf"); rm -f "$rssf"

    res=$(grep '^RESULT ' "$log")
    [ -n "$res" ] || { echo "wrk failed, see $log" >&2; tail -5 "$log" >&2; continue; }
    awk -v res="$res" -v label="$label" -v mode="$mode" -v c="$c" -v fmt="$fmt" -v clk="$CLK" \
        -v srv=$((s1 - s0)) -v aux=$((x1 - x0)) -v kids=$((k1 - k0)) -v haspids="${PIDS:+1}" \
        -v b0=$((b0e - b0)) -v t0=$((t0e - t0)) -v b1=$((b1e - b1)) -v t1=$((t1e - t1)) \
        -v ua=$((uae - ua)) -v st=$((sae - sa)) -v rss_peak="$rss_peak" -v rss_before="$rss_before" \
        -v results="$RESULTS" -v url="$URL" -v now="$(date -u +%FT%TZ)" '
    BEGIN {
        n = split(res, kv, " ")
        for (i = 2; i <= n; i++) { split(kv[i], p, "="); r[p[1]] = p[2] }
        dur = r["duration_us"] / 1e6; req = r["requests"]
        rps = req / dur
        err = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
        respb = req > 0 ? r["bytes"] / req : 0
        srv_s = srv / clk
        cpu = haspids ? sprintf("%.0f", 100 * srv_s / dur) : "-"
        usreq = (haspids && req > 0) ? sprintf("%.1f", srv_s * 1e6 / req) : "-"
        rssmb = haspids ? sprintf("%.1f", rss_peak / 1024) : "-"
        c0 = t0 > 0 ? 100 * b0 / t0 : 0; c1 = t1 > 0 ? 100 * b1 / t1 : 0
        # user+nice+system of all cpus minus everything this bench ran
        bg = 100 * ((ua - srv - aux - kids) / clk) / dur; if (bg < 0) bg = 0
        stl = 100 * (st / clk) / dur
        printf fmt, label, mode, c, sprintf("%.0f", rps), sprintf("%.3f", r["p50_us"] / 1000),
            sprintf("%.3f", r["p90_us"] / 1000), sprintf("%.3f", r["p99_us"] / 1000),
            sprintf("%.2f", r["max_us"] / 1000), err, r["err_status"], sprintf("%.0f", respb),
            cpu, usreq, rssmb, sprintf("%.0f", c0), sprintf("%.0f", c1), sprintf("%.0f", bg), sprintf("%.1f", stl)
        if (results != "")
            printf "%s\t%s\t%s\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%.2f\t%s\n",
                now, label, mode, c, rps, r["p50_us"] / 1000, r["p90_us"] / 1000, r["p99_us"] / 1000,
                r["p999_us"] / 1000, r["max_us"] / 1000, err, r["err_status"], respb,
                cpu, usreq, haspids ? rss_peak : "-", haspids ? rss_before : "-", c0, c1, bg, stl, req, dur, url >> results
    }'
done
