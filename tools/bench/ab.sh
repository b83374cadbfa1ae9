#!/usr/bin/env bash
# tools/bench/ab.sh MODE ROUNDS SUBJECT... — compare anyproxy builds, or any
# systems of the shared harness, on a busy machine. A SUBJECT is a build
# directory (holding src/gateway/anyproxy-gateway, src/client/anyproxy-client
# and tools/apctl/apctl, e.g. build/gcc or a copy), or a system NAME[:VARIANT]
# (tools/bench/systems/NAME.sh, else the harness's systems/NAME.sh, e.g.
# haproxy-tcp). Each is started once on its own ports, then the harness's
# loadgen runs against them in alternation, ROUNDS times. One line per run:
# the rate (MB/s or connections/s) and, per GB (bulk, bulk16) or in
# microseconds per connection (rr): the CPU of the subject's processes from
# /proc/PID/stat, user and system apart and each process's total (procs=, in
# the order started: gateway + agent for anyproxy); the target's and the
# loadgen's; other (the machine's busy CPU minus all those: kernel threads
# and softirqs run elsewhere); and the machine's idle share during the run
# (/proc/stat idle plus iowait: a thread waiting in io_uring_enter with
# requests in flight counts as iowait, so idle alone shows an io_uring
# program's idle CPU as busy) and steal share. Alternating single runs
# without restarts lets many pairs fit in a few minutes; take medians.
#
# MODE: bulk (1 stream, 1 GiB), bulk16 (16 x 64 MiB), rr (64 loops, 5 s).
# Needs the harness's loadgen and target in BENCH_BIN (build them with
# BENCH_BIN=DIR ../shared/bench/build.sh); BENCH_LIB as for
# tools/bench/systems/anyproxy.sh. Ports: AB_PORT_BASE (24300) + 1, 2 for
# the target, BENCH_PORT_BASE = AB_PORT_BASE + 200 + 300 * i for subject i.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
mode=${1:-}; rounds=${2:-}
[ $# -ge 3 ] || { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
shift 2
export BENCH_LIB="${BENCH_LIB:-$top/../shared/bench/systems/lib.sh}"
shared_systems="$(dirname "$BENCH_LIB")"
bin="${BENCH_BIN:?set BENCH_BIN to the folder with loadgen and target}"
base=${AB_PORT_BASE:-24300}
export BENCH_TARGET_BULK=127.0.0.1:$((base + 1)) BENCH_TARGET_RR=127.0.0.1:$((base + 2))
scratch=$(mktemp -d "${TMPDIR:-/tmp}/anyproxy-ab.XXXXXX")
"$bin/target" --bulk-port $((base + 1)) --rr-port $((base + 2)) --max-seconds 3600 \
    >"$scratch/target.out" 2>&1 &
tpid=$!
n=0
scripts=()
cleanup() {
    local j
    for ((j = 0; j < n; j++)); do
        BENCH_PORT_BASE=$((base + 200 + 300 * j)) ANYPROXY_BUILD="${builds[j]}" \
            "${scripts[j]}" stop "$scratch/s$j" || true
    done
    kill "$tpid" 2>/dev/null || true
    wait "$tpid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT
sleep 0.3
names=() builds=() pids=() proxy=() bulk_to=() rr_to=()
for subject in "$@"; do
    d="$scratch/s$n"
    mkdir -p "$d"
    build="" variant=""
    if [ -x "$subject/src/gateway/anyproxy-gateway" ]; then
        script="$here/systems/anyproxy.sh" build="$subject"
    else
        name=${subject%%:*}
        [ "$subject" != "$name" ] && variant=${subject#*:}
        script="$here/systems/$name.sh"
        [ -x "$script" ] || script="$shared_systems/$name.sh"
        [ -x "$script" ] || { echo "unknown subject: $subject" >&2; exit 2; }
    fi
    build=${build:-${ANYPROXY_BUILD:-}}
    scripts+=("$script") builds+=("$build")
    n=$((n + 1))
    BENCH_PORT_BASE=$((base + 200 + 300 * (n - 1))) ANYPROXY_BUILD="$build" \
        "$script" start "$d" $variant >"$d/start.out"
    names+=("$subject")
    pids+=("$(tr '\n' ' ' <"$d/pids")") # in the order the script started them
    read -r -a pa < <(sed -n 's/^PROXY_ARGS=//p' "$d/start.out")
    proxy+=("${pa[*]}")
    bulk_to+=("$(sed -n 's/^BULK_TARGET=//p' "$d/start.out")")
    rr_to+=("$(sed -n 's/^RR_TARGET=//p' "$d/start.out")")
done
tck=$(getconf CLK_TCK)
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime
# every process of subject j: "user system" summed, then each one's total
subject_ticks() {
    local p u s tu=0 ts=0 each=""
    for p in ${pids[$1]}; do
        read -r u s < <(ticks "$p")
        tu=$((tu + u)) ts=$((ts + s)) each="$each $((u + s))"
    done
    echo "$tu $ts$each"
}
cpu_line() { head -1 /proc/stat; } # user nice system idle iowait irq softirq steal
for ((r = 1; r <= rounds; r++)); do
    for ((j = 0; j < n; j++)); do
        read -r -a p0 < <(subject_ticks "$j")
        case "$mode" in
        bulk) args=(bulk --target "${bulk_to[j]:-$BENCH_TARGET_BULK}" --conns 1 --bytes 1073741824) ;;
        bulk16) args=(bulk --target "${bulk_to[j]:-$BENCH_TARGET_BULK}" --conns 16 --bytes 67108864) ;;
        rr) args=(rr --target "${rr_to[j]:-$BENCH_TARGET_RR}" --conns 64 --duration 5) ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
        esac
        read -r -a px <<<"${proxy[j]}"
        read -r tu0 ts0 < <(ticks "$tpid")
        read -r -a st0 < <(cpu_line)
        res=$("$bin/loadgen" "${args[@]}" "${px[@]}" --max-time 120 2>/dev/null | tail -1)
        read -r -a st1 < <(cpu_line)
        read -r tu1 ts1 < <(ticks "$tpid")
        read -r -a p1 < <(subject_ticks "$j")
        all=0
        for q in 1 2 3 4 5 6 7 8; do all=$((all + st1[q] - st0[q])); done
        idle=$((st1[4] - st0[4] + st1[5] - st0[5])) steal=$((st1[8] - st0[8]))
        each=""
        for ((q = 2; q < ${#p1[@]}; q++)); do each="$each $((p1[q] - p0[q]))"; done
        lg=$(sed -n 's/.* cpu_user_s=\([^ ]*\) cpu_sys_s=\([^ ]*\).*/\1 \2/p' <<<"$res" | awk '{print $1 + $2}')
        if [ "$mode" = rr ]; then
            rate=$(sed -n 's/.* cps=\([^ ]*\).*/\1/p' <<<"$res")
            unit=$(sed -n 's/.* completed=\([^ ]*\).*/\1/p' <<<"$res" | awk '{print $1 / 1e6}')
        else
            rate=$(sed -n 's/.* MBps=\([^ ]*\).*/\1/p' <<<"$res")
            unit=$(sed -n 's/.* total_bytes=\([^ ]*\).*/\1/p' <<<"$res" | awk '{print $1 / 1e9}')
        fi
        awk -v nm="${names[j]}" -v r="$r" -v rate="$rate" -v u="$unit" -v t="$tck" \
            -v pu=$((p1[0] - p0[0])) -v ps=$((p1[1] - p0[1])) -v each="$each" \
            -v tg=$((tu1 + ts1 - tu0 - ts0)) -v lg="${lg:-0}" -v all=$((all > 0 ? all : 1)) \
            -v idle=$idle -v steal=$steal \
            'BEGIN { k = split(each, e, " "); procs = ""
                     for (i = 1; i <= k; i++) procs = procs (i > 1 ? "+" : "") sprintf("%.3f", e[i] / t / u)
                     other = ((all - idle - steal) - pu - ps - tg) / t - lg
                     printf "%s r%d rate=%s user=%.3f sys=%.3f total=%.3f procs=%s target=%.3f loadgen=%.3f other=%.3f idle=%.0f%% steal=%.0f%%\n",
                     nm, r, rate, pu / t / u, ps / t / u, (pu + ps) / t / u, procs,
                     tg / t / u, lg / u, other / u, 100 * idle / all, 100 * steal / all }'
        sleep 0.5
    done
done
