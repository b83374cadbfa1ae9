#!/usr/bin/env bash
# tools/test.sh — install what is needed, build, and run every test:
#   1. gcc build: unit + integration suites
#   2. clang build: warnings-as-errors compile + unit suite
#   3. ASan+UBSan build (gcc): the whole suite again
#   4. TSan build (clang): the whole suite again (the workers share state)
#   5. libFuzzer targets (clang, ASan+UBSan), each for FUZZ_SECONDS
# Ends with one line "N passed, N failed, N skipped".
# Environment: FUZZ_SECONDS (default 20), BUILD_ROOT (default ./build).
set -uo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"
build_root=${BUILD_ROOT:-$top/build}
fuzz_seconds=${FUZZ_SECONDS:-20}
passed=0 failed=0 skipped=0
failures=()
excerpts=$(mktemp)
trap 'rm -f "$excerpts"' EXIT

step() { echo; echo "=== $* ==="; }

wolf_prefix=$(tools/setup.sh) || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PKG_CONFIG_PATH="$wolf_prefix/lib/pkgconfig"

# count_meson BUILD_DIR: add that build's meson test results to the totals
count_meson() {
    local log="$1/meson-logs/testlog.json" line p f s
    [ -f "$log" ] || { failed=$((failed + 1)); failures+=("$1: no test log"); return; }
    read -r p f s < <(python3 - "$log" "$excerpts" <<'PY'
import json, sys
p = f = s = 0
with open(sys.argv[2], "a") as out:
    for line in open(sys.argv[1]):
        t = json.loads(line)
        r = t["result"]
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else:
            f += 1
            # CI shows only the end of this script's output: keep the lines
            # that say why, to print them again just before the totals.
            text = (t.get("stdout") or "") + (t.get("stderr") or "")
            lines = text.splitlines()
            keep = []
            for i, l in enumerate(lines):
                if (l.startswith(("not ok", "Bail out!")) or "ERROR: " in l or
                        "runtime error:" in l or "ThreadSanitizer" in l):
                    keep += lines[i:i + 12] + ["..."]
            out.write("--- %s (%s): %s\n" % (t["name"], sys.argv[1].split("/meson-logs")[0], r))
            out.write("\n".join(keep[:60] or lines[-30:]) + "\n")
print(p, f, s)
PY
)
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    [ "$f" = 0 ] || failures+=("$1: $f failed")
}

# build NAME CC [meson options...]
build() {
    local name=$1 cc=$2
    shift 2
    local dir="$build_root/$name"
    if [ ! -f "$dir/build.ninja" ]; then
        CC=$cc meson setup "$dir" "$top" "$@" >"$build_root/$name.setup.log" 2>&1 ||
            { cat "$build_root/$name.setup.log"; return 1; }
    fi
    ninja -C "$dir" >"$build_root/$name.build.log" 2>&1 || { tail -50 "$build_root/$name.build.log"; return 1; }
}

mkdir -p "$build_root"

run_suites() {
    local dir=$1
    shift
    meson test -C "$dir" --print-errorlogs "$@" || true
    count_meson "$dir"
}

step "gcc build: unit and integration tests"
if build gcc gcc; then run_suites "$build_root/gcc"; else failed=$((failed + 1)); failures+=("gcc build"); fi

step "clang build: unit tests"
if build clang clang; then run_suites "$build_root/clang" --suite unit; else failed=$((failed + 1)); failures+=("clang build"); fi

step "ASan+UBSan build: every test"
# A small quarantine: the default (256 MiB of freed memory held back) would
# swamp the RSS bounds the fault tests check; use-after-free is still caught
# for everything freed within the last 16 MiB of frees.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:quarantine_size_mb=16
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
if build asan gcc -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    run_suites "$build_root/asan"
else failed=$((failed + 1)); failures+=("asan build"); fi

step "TSan build: every test"
# The gateway's and the agent's workers share the registry, the budgets,
# the statistics and their inboxes (docs/scaling.md): a report fails the
# daemon's test (the harness looks for it in the daemon's log).
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
if build tsan clang -Db_sanitize=thread -Db_lundef=false; then
    run_suites "$build_root/tsan"
else failed=$((failed + 1)); failures+=("tsan build"); fi

step "libFuzzer targets, ${fuzz_seconds}s each"
fuzz_out=$(BUILD_ROOT="$build_root" tools/fuzz.sh "$fuzz_seconds")
echo "$fuzz_out"
while read -r line; do
    case "$line" in
    "fuzz "*": "*" executions"*", clean") passed=$((passed + 1)) ;;
    "fuzz "*": FAILED"*) failed=$((failed + 1)); failures+=("${line%% (log*}") ;;
    esac
done <<<"$fuzz_out"
if ! grep -q "^fuzz " <<<"$fuzz_out"; then failed=$((failed + 1)); failures+=("fuzz build"); fi

echo
if [ -s "$excerpts" ]; then echo "=== why the failed tests failed ==="; cat "$excerpts"; echo; fi
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
