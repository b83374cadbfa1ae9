#!/usr/bin/env bash
# run.sh [SYSTEM...] -- the http-64 scenario: 64 keep-alive clients sending small
# absolute-URI GETs through an HTTP proxy to one keep-alive origin, for SECONDS
# seconds; systems interleaved A B C A B C ... for ROUNDS rounds.
#
# SYSTEM: name[:variant] of a script in tools/bench/http64/systems, tools/bench/systems
#         or the shared harness's systems/ (same start/stop contract, lib.sh):
#         direct, tinyproxy[:auth], haproxy-http, anyproxy:http.
#         Default: direct tinyproxy haproxy-http anyproxy:http
# Environment: ROUNDS (3), SECONDS_PER_RUN (5), CONNS (64), BENCH_PORT_BASE (17000;
#              the origin is base+3), SHARED_BENCH (../shared/bench of the checkout),
#              HTTP64_EXTRA_SYSTEMS (a folder of more system scripts, looked at first),
#              HTTP64_BIN (build/bench-http64), ANYPROXY_BUILD (build/gcc),
#              KALOAD_ARGS (more kaload arguments, e.g. --close),
#              RESULTS_TSV (copy raw results there), KEEP_SCRATCH=1 (keep logs).
# Prints a markdown report on stdout; progress goes to stderr.
set -euo pipefail
set -f # CURL_ARGS/PROXY_ARGS are word-split on purpose; never glob them

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../../.." && pwd)"
SHARED_BENCH="${SHARED_BENCH:-$top/../shared/bench}"
[ -f "$SHARED_BENCH/systems/lib.sh" ] || { echo "no shared bench at $SHARED_BENCH (set SHARED_BENCH)" >&2; exit 2; }
export BENCH_LIB="$SHARED_BENCH/systems/lib.sh"
. "$BENCH_LIB"
HTTP64_BIN="${HTTP64_BIN:-$top/build/bench-http64}"
export HTTP64_BIN
ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
CONNS="${CONNS:-64}"

sys_script() {
    local d
    for d in ${HTTP64_EXTRA_SYSTEMS:-} "$here/systems" "$top/tools/bench/systems" "$SHARED_BENCH/systems"; do
        [ -x "$d/$1.sh" ] && { echo "$d/$1.sh"; return; }
    done
    echo "/nonexistent/$1.sh"
}
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
case "${1:-}" in -h | --help) usage ;; esac
if [ $# -gt 0 ]; then systems=("$@"); else systems=(direct tinyproxy haproxy-http anyproxy:http); fi
for s in "${systems[@]}"; do
    [ -x "$(sys_script "${s%%:*}")" ] || { echo "unknown system: $s" >&2; exit 2; }
done
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ ! -x "$HTTP64_BIN/kaload" ] || [ ! -x "$HTTP64_BIN/origin" ] ||
    [ "$here/kaload.c" -nt "$HTTP64_BIN/kaload" ] || [ "$here/origin.c" -nt "$HTTP64_BIN/origin" ]; then
    "$here/build.sh" >&2
fi
ulimit -n "$(ulimit -Hn)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/http64bench.XXXXXX")
results="$scratch/results.tsv"
: >"$results"
ORIGIN_PID=""
CUR_SYS_SCRIPT=""
CUR_SYS_DIR=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$CUR_SYS_SCRIPT" ]; then "$CUR_SYS_SCRIPT" stop "$CUR_SYS_DIR" >/dev/null 2>&1; fi
    if [ -n "$ORIGIN_PID" ]; then
        kill -TERM "$ORIGIN_PID" 2>/dev/null
        wait "$ORIGIN_PID" 2>/dev/null
    fi
    if [ -n "${RESULTS_TSV:-}" ] && [ -s "$results" ]; then cp "$results" "$RESULTS_TSV"; fi
    if [ "${KEEP_SCRATCH:-0}" = 1 ]; then log "scratch kept: $scratch"; else rm -rf "$scratch"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- origin (the system scripts take it as their "rr" target) ----
export BENCH_PORT_BASE
oport=$((BENCH_PORT_BASE + 3))
export BENCH_TARGET_RR="127.0.0.1:$oport"
export BENCH_TARGET_BULK="127.0.0.1:$oport"
port_free $oport || die "port $oport busy"
"$HTTP64_BIN/origin" --port $oport --stats-file "$scratch/origin.stats" --max-seconds 14400 \
    </dev/null >"$scratch/origin.log" 2>&1 &
ORIGIN_PID=$!
wait_port 127.0.0.1 $oport

# origin_accepted: TCP connections the origin accepted so far
origin_accepted() {
    rm -f "$scratch/origin.stats"
    kill -USR1 "$ORIGIN_PID"
    local i
    for ((i = 0; i < 50; i++)); do
        [ -s "$scratch/origin.stats" ] && break
        sleep 0.02
    done
    sed -n 's/.*accepted=\([0-9]*\).*/\1/p' "$scratch/origin.stats" 2>/dev/null || echo 0
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local f=() p
    for p in "$@"; do f+=("/proc/$p/stat"); done
    [ ${#f[@]} -gt 0 ] || { echo 0; return; }
    cat "${f[@]}" 2>/dev/null | sed 's/^.*) //' | awk '{s += $12 + $13 + $14 + $15} END {print s + 0}'
}
sys_pids() { [ -s "$1/pids" ] && descendants $(cat "$1/pids") || true; }
kv() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" <<<" $2"; }

measure() {
    local sys=$1 round=$2
    local name=${sys%%:*} variant=""
    [ "$sys" != "$name" ] && variant=${sys#*:}
    local sdir="$scratch/http-64.$round.${sys//[^A-Za-z0-9_.-]/_}"
    mkdir -p "$sdir"
    CUR_SYS_SCRIPT="$(sys_script "$name")"
    CUR_SYS_DIR="$sdir"
    local out
    if ! out=$("$CUR_SYS_SCRIPT" start "$sdir" $variant 2>"$sdir/start.err"); then
        log "  $sys: START FAILED: $(head -c 300 "$sdir/start.err")"
        printf 'http-64\t%s\t%s\tstatus=start_failed\n' "$sys" "$round" >>"$results"
        "$CUR_SYS_SCRIPT" stop "$sdir" >/dev/null 2>&1 || true
        CUR_SYS_SCRIPT=""
        return
    fi
    local proxy_args curl_args rr_t
    proxy_args=$(sed -n 's/^PROXY_ARGS=//p' <<<"$out")
    curl_args=$(sed -n 's/^CURL_ARGS=//p' <<<"$out")
    rr_t=$(sed -n 's/^RR_TARGET=//p' <<<"$out")
    rr_t=${rr_t:-$BENCH_TARGET_RR}
    # the systems print CONNECT/GET arguments; here every proxy gets absolute-URI GETs
    proxy_args=$(sed -e 's/--http-connect /--proxy /; s/--http-get /--proxy /' <<<"$proxy_args")
    curl_args=$(sed -e 's/^-p //; s/ -p / /' <<<"$curl_args")
    if [[ " $proxy_args " == *" --socks5 "* ]]; then
        log "  $sys: not an HTTP proxy ($proxy_args)"
        printf 'http-64\t%s\t%s\tstatus=not_http\n' "$sys" "$round" >>"$results"
        "$CUR_SYS_SCRIPT" stop "$sdir" >/dev/null 2>&1 || true
        CUR_SYS_SCRIPT=""
        return
    fi
    local v
    v=$(curl -sS --max-time 10 $curl_args "http://$rr_t/rr" 2>>"$sdir/verify.err" || true)
    if [ "$v" != "ok" ]; then
        log "  $sys: VERIFY FAILED (got '$v') $(head -c 200 "$sdir/verify.err")"
        printf 'http-64\t%s\t%s\tstatus=verify_failed\n' "$sys" "$round" >>"$results"
        "$CUR_SYS_SCRIPT" stop "$sdir" >/dev/null 2>&1 || true
        CUR_SYS_SCRIPT=""
        return
    fi
    sleep 0.3
    local pids0 cpu0 oc0 rc=0
    pids0=$(sys_pids "$sdir")
    cpu0=$(cpu_ticks $pids0)
    oc0=$(origin_accepted)
    "$HTTP64_BIN/kaload" $proxy_args ${KALOAD_ARGS:-} --target "$rr_t" --conns "$CONNS" \
        --duration "$SECONDS_PER_RUN" --label "$sys" </dev/null >"$sdir/kaload.out" \
        2>"$sdir/kaload.err" || rc=$?
    local pids1 cpu1 oc1 res pcpu="-"
    pids1=$(sys_pids "$sdir")
    cpu1=$(cpu_ticks $pids1)
    oc1=$(origin_accepted)
    res=$(grep '^RESULT ' "$sdir/kaload.out" | tail -1 | sed 's/^RESULT //')
    [ -n "$res" ] || res="status=no_result"
    [ -n "$pids0" ] && pcpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')
    printf 'http-64\t%s\t%s\t%s loadgen_rc=%s proxy_cpu_s=%s origin_conns=%s nprocs_start=%s\n' \
        "$sys" "$round" "$res" "$rc" "$pcpu" "$((oc1 - oc0))" "$(wc -w <<<"$pids0")" >>"$results"
    log "  $sys: rps=$(kv rps "$res") p99=$(kv lat_us_p99 "$res")us errors=$(kv errors "$res") proxy_cpu_s=$pcpu origin_conns=$((oc1 - oc0)) rc=$rc"
    if [ "$rc" != 0 ]; then
        grep -v '^RESULT' "$sdir/kaload.err" | head -3 | sed 's/^/      /' >&2 || true
    fi
    "$CUR_SYS_SCRIPT" stop "$sdir" >/dev/null 2>&1 || true
    CUR_SYS_SCRIPT=""
    sleep 1
}

start_ts=$(date -u '+%Y-%m-%d %H:%M UTC')
for ((r = 1; r <= ROUNDS; r++)); do
    log "http-64 round $r/$ROUNDS"
    for s in "${systems[@]}"; do measure "$s" "$r"; done
done
{
    echo "## Proxy benchmark: http-64"
    echo
    echo "- date: $start_ts; host: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
    echo "- rounds: $ROUNDS, systems interleaved per round; values are medians over rounds; $CONNS connections, ${SECONDS_PER_RUN} s each${KALOAD_ARGS:+; kaload $KALOAD_ARGS}"
    echo
    "$here/report.sh" "$results"
} | tee "$scratch/report.md"
