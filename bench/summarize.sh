#!/usr/bin/env bash
# Turn load.sh RESULTS rows into markdown tables.
#
#   summarize.sh RESULTS.tsv [BASE_LABEL] [LABEL_REGEX] [CONNS_LIST]
#
# BASE_LABEL (default "direct"): rows are compared with this label's row of
# the same mode and connection count (added p50/p99 latency, throughput ratio).
# LABEL_REGEX (default: all): only labels matching it (the base is always kept).
# CONNS_LIST (default: all): only these connection counts, e.g. "1 64".
# A (label, mode, conns) measured several times is reported as the median of
# each column, and a noise table lists min/median/max of those repeats.
# Several result files can be concatenated first (header rows are skipped);
# "-" or empty cells (e.g. no PIDS given) are left out of medians.
#
# When rows labelled REF (default "nginx") are present, a last table gives each
# other label as ratios to REF: throughput (req/s / REF req/s) and added latency
# ((p - base p) / (REF p - base p)) at p50 and p99, and checks the targets at
# TARGET_CONNS (64) connections: throughput >= MIN_RPS_RATIO (0.7) and added
# p99 <= MAX_P99_RATIO (2.0) times REF's. The err and non2xx columns are the largest of the
# repeats, not the median, and a row with any is marked INVALID instead of judged.
set -u
[ $# -ge 1 ] || { sed -n '2,20p' "$0"; exit 2; }
f=$1; base=${2:-direct}; re=${3:-.}; conns=${4:-}
ref=${REF:-nginx}

awk -F'\t' -v base="$base" -v re="$re" -v conns=" $conns " -v ref="$ref" \
    -v tconns="${TARGET_CONNS:-64}" -v min_rps="${MIN_RPS_RATIO:-0.7}" -v max_p99="${MAX_P99_RATIO:-2.0}" '
function isnum(x) { return x ~ /^-?[0-9]+(\.[0-9]+)?$/ }
# collect the numeric values of column col for key into a[1..n], sorted; returns n
function vals(key, col, a,    i, j, n, t) {
    n = 0
    for (i = 1; i <= cnt[key]; i++) if (((key, i, col) in val) && isnum(val[key, i, col])) a[++n] = val[key, i, col] + 0
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n
}
function med(key, col,    a, n) { n = vals(key, col, a); if (!n) return ""; return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function lo(key, col,    a, n) { n = vals(key, col, a); return n ? a[1] : "" }
function hi(key, col,    a, n) { n = vals(key, col, a); return n ? a[n] : "" }
function f(x, fmt) { return x == "" ? "-" : sprintf(fmt, x) }
$1 == "time" { next }          # header rows (also of concatenated files)
{
    if ($2 != base && $2 != ref && $2 !~ re) next
    if (conns != "  " && index(conns, " " $4 " ") == 0) next
    key = $2 SUBSEP $3 SUBSEP $4
    if (!(key in cnt)) { order[++nk] = key; cnt[key] = 0 }
    n = ++cnt[key]
    for (c = 1; c <= 20; c++) val[key, n, c] = $c
    if (NF >= 24) val[key, n, 21] = $21          # steal_pct (newer files only)
}
END {
    print "| label | mode | conns | runs | req/s | p50 ms | p90 ms | p99 ms | max ms | err | non2xx | resp B | srv CPU % | srv CPU µs/req | srv peak RSS MB | cpu0 % | cpu1 % | bg % | steal % |"
    print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, p, SUBSEP)
        rss = med(k, 16); if (rss != "") rss /= 1024
        printf "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
            p[1], p[2], p[3], cnt[k], f(med(k, 5), "%.0f"), f(med(k, 6), "%.3f"), f(med(k, 7), "%.3f"),
            f(med(k, 8), "%.3f"), f(med(k, 10), "%.2f"), f(hi(k, 11), "%d"), f(hi(k, 12), "%d"),
            f(med(k, 13), "%.0f"), f(med(k, 14), "%.0f"), f(med(k, 15), "%.1f"), f(rss, "%.1f"),
            f(med(k, 18), "%.0f"), f(med(k, 19), "%.0f"), f(med(k, 20), "%.0f"), f(med(k, 21), "%.1f")
    }
    print ""
    print "Compared with `" base "` (same mode and connections; medians where repeated):"
    print ""
    print "| label | mode | conns | req/s | x base req/s | p50 ms | +p50 ms | p99 ms | +p99 ms |"
    print "|---|---|--:|--:|--:|--:|--:|--:|--:|"
    for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, p, SUBSEP)
        if (p[1] == base) continue
        b = base SUBSEP p[2] SUBSEP p[3]
        if (!(b in cnt)) continue
        printf "| %s | %s | %s | %.0f | %.2f | %.3f | %+.3f | %.3f | %+.3f |\n", p[1], p[2], p[3],
            med(k, 5), med(k, 5) / med(b, 5), med(k, 6), med(k, 6) - med(b, 6), med(k, 8), med(k, 8) - med(b, 8)
    }
    hdr = 0
    for (i = 1; i <= nk; i++) {
        k = order[i]; if (cnt[k] < 2) continue
        if (!hdr) {
            print ""
            print "Repeated runs (noise):"
            print ""
            print "| label | mode | conns | runs | req/s min / median / max | spread % | p50 ms min-max | p99 ms min-max | srv CPU µs/req min-max | bg % max | steal % max |"
            print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
            hdr = 1
        }
        split(k, p, SUBSEP); m = med(k, 5)
        us = lo(k, 15) == "" ? "-" : sprintf("%.1f-%.1f", lo(k, 15), hi(k, 15))
        printf "| %s | %s | %s | %d | %.0f / %.0f / %.0f | %.1f | %.3f-%.3f | %.3f-%.3f | %s | %.0f | %s |\n", p[1], p[2], p[3], cnt[k],
            lo(k, 5), m, hi(k, 5), 100 * (hi(k, 5) - lo(k, 5)) / m,
            lo(k, 6), hi(k, 6), lo(k, 8), hi(k, 8), us, hi(k, 20), f(hi(k, 21), "%.1f")
    }
    ratios()
}
# added latency of key k over the base row b at column col (ms), "" if either is missing
function added(k, b, col,    x, y) { x = med(k, col); y = med(b, col); return (x == "" || y == "") ? "" : x - y }
# a / r, "" when r is too small to divide by (REF adds no measurable latency)
function ratio(a, r) { return (a == "" || r == "" || r < 0.001) ? "" : a / r }
function ratios(    i, k, p, b, r, hdr, rr, a50, a99, r50, r99, ok) {
    for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, p, SUBSEP)
        if (p[1] == base || p[1] == ref) continue
        b = base SUBSEP p[2] SUBSEP p[3]; r = ref SUBSEP p[2] SUBSEP p[3]
        if (!(r in cnt)) continue
        if (!hdr) {
            print ""
            print "Ratios to `" ref "` (same mode and connections; added latency is over `" base "`;"
            print "targets at " tconns " connections: req/s ratio >= " min_rps ", added p99 ratio <= " max_p99 "):"
            print ""
            print "| label | mode | conns | req/s | " ref " req/s | x " ref " req/s | +p50 ms | " ref " +p50 ms | x " ref " +p50 | +p99 ms | " ref " +p99 ms | x " ref " +p99 | targets |"
            print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
            hdr = 1
        }
        rr = med(k, 5) / med(r, 5)
        a50 = (b in cnt) ? added(k, b, 6) : ""; r50 = (b in cnt) ? added(r, b, 6) : ""
        a99 = (b in cnt) ? added(k, b, 8) : ""; r99 = (b in cnt) ? added(r, b, 8) : ""
        ok = "-"
        if (hi(k, 11) > 0 || hi(k, 12) > 0) {
            ok = "INVALID: a run had errors or non-2xx answers"
        } else if (p[3] == tconns) {
            ok = (rr >= min_rps) ? "req/s met" : "req/s NOT met"
            if (ratio(a99, r99) == "") ok = ok ", p99 n/a"
            else ok = ok ((ratio(a99, r99) <= max_p99) ? ", p99 met" : ", p99 NOT met")
        }
        printf "| %s | %s | %s | %.0f | %.0f | %.2f | %s | %s | %s | %s | %s | %s | %s |\n", p[1], p[2], p[3],
            med(k, 5), med(r, 5), rr, f(a50, "%+.3f"), f(r50, "%+.3f"), f(ratio(a50, r50), "%.2f"),
            f(a99, "%+.3f"), f(r99, "%+.3f"), f(ratio(a99, r99), "%.2f"), ok
    }
}' "$f"
