#!/usr/bin/env bash
# report.sh RESULTS.TSV -- the http-64 markdown table from run.sh's raw results:
# medians over rounds per system, the ratio to "direct", like the shared
# harness's rr table (requests instead of connections), plus the origin's
# TCP connections per measurement (how much the path reuses them).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RESULTS.TSV" >&2; exit 2; }
awk -F'\t' '
function med(list,   a, n, i, j, t) {
    n = split(list, a, " "); if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function mx(list,   a, n, i, m) { n = split(list, a, " "); m = ""; for (i = 1; i <= n; i++) if (m == "" || a[i] + 0 > m + 0) m = a[i]; return m }
function sum(list,   a, n, i, s) { n = split(list, a, " "); s = 0; for (i = 1; i <= n; i++) s += a[i]; return s }
function get(s, k) { return V[s SUBSEP k] }
function f0(x) { return x == "" ? "-" : sprintf("%.0f", x) }
function f1(x) { return x == "" ? "-" : sprintf("%.1f", x) }
function f2(x) { return x == "" ? "-" : sprintf("%.2f", x) }
function ratio(x, d) { return (x == "" || d == "" || d + 0 == 0) ? "-" : sprintf("%.2fx", x / d) }
{
    y = $2
    if (!(y in seen)) { seen[y] = 1; Y[++ny] = y }
    rounds[y]++
    n = split($4, kvs, " ")
    for (i = 1; i <= n; i++) {
        p = index(kvs[i], "="); if (!p) continue
        k = substr(kvs[i], 1, p - 1); v = substr(kvs[i], p + 1)
        if (k == "status") { bad[y] = bad[y] " " v; continue }
        if (v == "-" || v !~ /^-?[0-9.]+$/) continue
        V[y SUBSEP k] = V[y SUBSEP k] " " v
    }
}
END {
    print "### http-64"
    print ""
    print "| system | req/s (median) | vs direct | p50 us | p90 us | p99 us | max us | proxy CPU us/req | proxy CPU s | origin conns | errors | rounds ok |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    d = med(get("direct", "rps"))
    for (i = 1; i <= ny; i++) {
        y = Y[i]
        n = split(get(y, "loadgen_rc"), t, " "); ok = 0
        for (j = 1; j <= n; j++) if (t[j] == 0) ok++
        m = med(get(y, "rps")); c = med(get(y, "completed")); cpu = med(get(y, "proxy_cpu_s"))
        note = bad[y] != "" ? " (" substr(bad[y], 2) ")" : ""
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d/%d%s |\n", y, f0(m), ratio(m, d),
            f0(med(get(y, "lat_us_p50"))), f0(med(get(y, "lat_us_p90"))), f0(med(get(y, "lat_us_p99"))),
            f0(mx(get(y, "lat_us_max"))), (cpu == "" || c == 0) ? "-" : f1(cpu * 1e6 / c), f2(cpu),
            f0(med(get(y, "origin_conns"))), sum(get(y, "errors")), ok, rounds[y], note
    }
    print ""
}' "$1"
