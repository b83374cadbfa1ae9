#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS [TARGET...]] — build the libFuzzer targets (clang,
# ASan+UBSan) and run each for SECONDS (default 60) on a scratch copy of its
# seed corpus in tests/fuzz/corpus/TARGET/ (the checked-in seeds are never
# modified). Targets: frame config socks5 http http_connect acl username grammar
# aesgcm (where the CPU and wolfSSL allow it)
# (default: all).
# Prints one line per target ("fuzz NAME: N executions, clean" or the crash)
# and exits non-zero if any target failed. BUILD_ROOT as in tools/test.sh.
#
# A longer campaign, e.g. ten minutes per target:
#     tools/fuzz.sh 600
set -uo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=${1:-60}
shift || true
build_root=${BUILD_ROOT:-$top/build}
dir="$build_root/fuzz"

if [ -z "${PKG_CONFIG_PATH:-}" ]; then
    wolf_prefix=$("$top/tools/setup.sh") || exit 1
    export PKG_CONFIG_PATH="$wolf_prefix/lib/pkgconfig"
fi
mkdir -p "$build_root"
if [ ! -f "$dir/build.ninja" ]; then
    CC=clang meson setup "$dir" "$top" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false >"$build_root/fuzz.setup.log" 2>&1 || { cat "$build_root/fuzz.setup.log"; exit 1; }
fi
ninja -C "$dir" >"$build_root/fuzz.build.log" 2>&1 || { tail -50 "$build_root/fuzz.build.log"; exit 1; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for t in "$dir"/tests/fuzz/fuzz_*; do
        [ -f "$t" ] && [ -x "$t" ] && targets+=("${t##*/fuzz_}")
    done
fi
failed=0
for name in "${targets[@]}"; do
    work=$(mktemp -d)
    cp -r "$top/tests/fuzz/corpus/$name/." "$work/" 2>/dev/null || true
    log="$build_root/fuzz-$name.log"
    if "$dir/tests/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "$work" >"$log" 2>&1; then
        echo "fuzz $name: $(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}') executions in ${seconds}s, clean"
    else
        echo "fuzz $name: FAILED (log: $log)"
        tail -40 "$log"
        failed=$((failed + 1))
    fi
    rm -rf "$work"
done
[ "$failed" = 0 ]
