#!/usr/bin/env bash
# tools/bench/ab.sh MODE ROUNDS BUILD... — compare anyproxy builds on a busy
# machine: every BUILD (a directory holding src/gateway/anyproxy-gateway,
# src/client/anyproxy-client and tools/apctl/apctl, e.g. build/gcc or a copy)
# is started once on its own ports, then the shared harness's loadgen runs
# against them in alternation, ROUNDS times. One line per run: the rate
# (MB/s or connections/s) and the CPU of gateway + agent from /proc/PID/stat,
# user and system apart, per GB (bulk, bulk16) or in microseconds per
# connection (rr); target's and loadgen's CPU in the same unit; and the
# machine's idle share during the run (/proc/stat idle plus iowait: a
# thread waiting in io_uring_enter with requests in flight counts as
# iowait, so idle alone shows an io_uring program's idle CPU as busy) and
# steal share. Alternating single runs without restarts lets many pairs
# fit in a few minutes; take medians over them.
#
# MODE: bulk (1 stream, 1 GiB), bulk16 (16 x 64 MiB), rr (64 loops, 5 s).
# Needs the harness's loadgen and target in BENCH_BIN (build them with
# BENCH_BIN=DIR ../shared/bench/build.sh); BENCH_LIB as for
# tools/bench/systems/anyproxy.sh. Ports: AB_PORT_BASE (24300) + 1, 2 for
# the target, + 200 + 100 * i + 151..153 for build i.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
mode=${1:-}; rounds=${2:-}
[ $# -ge 3 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
shift 2
export BENCH_LIB="${BENCH_LIB:-$top/../shared/bench/systems/lib.sh}"
bin="${BENCH_BIN:?set BENCH_BIN to the folder with loadgen and target}"
base=${AB_PORT_BASE:-24300}
export BENCH_TARGET_BULK=127.0.0.1:$((base + 1)) BENCH_TARGET_RR=127.0.0.1:$((base + 2))
scratch=$(mktemp -d "${TMPDIR:-/tmp}/anyproxy-ab.XXXXXX")
"$bin/target" --bulk-port $((base + 1)) --rr-port $((base + 2)) --max-seconds 3600 \
    >"$scratch/target.out" 2>&1 &
tpid=$!
n=0
cleanup() {
    local j
    for ((j = 0; j < n; j++)); do
        BENCH_PORT_BASE=$((base + 200 + 100 * j)) "$here/systems/anyproxy.sh" stop "$scratch/s$j" || true
    done
    kill "$tpid" 2>/dev/null || true
    wait "$tpid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT
sleep 0.3
names=() gws=() ags=() socks=()
for b in "$@"; do
    d="$scratch/s$n"
    mkdir -p "$d"
    BENCH_PORT_BASE=$((base + 200 + 100 * n)) ANYPROXY_BUILD="$b" \
        "$here/systems/anyproxy.sh" start "$d" >"$d/start.out"
    n=$((n + 1))
    names+=("$b")
    gws+=("$(sed -n 1p "$d/pids")") # spawned by anyproxy.sh: gateway, then agent
    ags+=("$(sed -n 2p "$d/pids")")
    socks+=("127.0.0.1:$((base + 200 + 100 * (n - 1) + 152))")
done
tck=$(getconf CLK_TCK)
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime
cpu_line() { head -1 /proc/stat; }                   # user nice system idle iowait irq softirq steal
for ((r = 1; r <= rounds; r++)); do
    for ((j = 0; j < n; j++)); do
        read -r gu0 gs0 < <(ticks "${gws[j]}")
        read -r au0 as0 < <(ticks "${ags[j]}")
        case "$mode" in
        bulk) args=(bulk --target "$BENCH_TARGET_BULK" --conns 1 --bytes 1073741824) ;;
        bulk16) args=(bulk --target "$BENCH_TARGET_BULK" --conns 16 --bytes 67108864) ;;
        rr) args=(rr --target "$BENCH_TARGET_RR" --conns 64 --duration 5) ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
        esac
        read -r tu0 ts0 < <(ticks "$tpid")
        read -r -a st0 < <(cpu_line)
        res=$("$bin/loadgen" "${args[@]}" --socks5 "${socks[j]}" --max-time 120 2>/dev/null | tail -1)
        read -r -a st1 < <(cpu_line)
        read -r tu1 ts1 < <(ticks "$tpid")
        read -r gu1 gs1 < <(ticks "${gws[j]}")
        read -r au1 as1 < <(ticks "${ags[j]}")
        all=0
        for q in 1 2 3 4 5 6 7 8; do all=$((all + st1[q] - st0[q])); done
        lg=$(sed -n 's/.* cpu_user_s=\([^ ]*\) cpu_sys_s=\([^ ]*\).*/\1 \2/p' <<<"$res" | awk '{print $1 + $2}')
        if [ "$mode" = rr ]; then
            rate=$(sed -n 's/.* cps=\([^ ]*\).*/\1/p' <<<"$res")
            unit=$(sed -n 's/.* completed=\([^ ]*\).*/\1/p' <<<"$res" | awk '{print $1 / 1e6}')
        else
            rate=$(sed -n 's/.* MBps=\([^ ]*\).*/\1/p' <<<"$res")
            unit=$(sed -n 's/.* total_bytes=\([^ ]*\).*/\1/p' <<<"$res" | awk '{print $1 / 1e9}')
        fi
        awk -v nm="${names[j]}" -v r="$r" -v rate="$rate" -v u="$unit" -v t="$tck" \
            -v gu=$((gu1 - gu0)) -v gs=$((gs1 - gs0)) -v au=$((au1 - au0)) -v as=$((as1 - as0)) \
            -v tg=$((tu1 + ts1 - tu0 - ts0)) -v lg="${lg:-0}" -v all=$((all > 0 ? all : 1)) \
            -v idle=$((st1[4] - st0[4] + st1[5] - st0[5])) -v steal=$((st1[8] - st0[8])) \
            'BEGIN { printf "%s r%d rate=%s user=%.3f sys=%.3f total=%.3f gw=%.3f ag=%.3f target=%.3f loadgen=%.3f idle=%.0f%% steal=%.0f%%\n",
                     nm, r, rate, (gu + au) / t / u, (gs + as) / t / u,
                     (gu + gs + au + as) / t / u, (gu + gs) / t / u, (au + as) / t / u,
                     tg / t / u, lg / u, 100 * idle / all, 100 * steal / all }'
        sleep 0.5
    done
done
