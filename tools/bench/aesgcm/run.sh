#!/usr/bin/env bash
# tools/bench/aesgcm/run.sh — build speed.c against the wolfSSL of
# tools/setup.sh and print nanoseconds per AES-128-GCM seal and open, by
# record size, for wolfSSL's own code and src/tls/aesgcm.c (three passes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../../.." && pwd)"
wolf=$("$top/tools/setup.sh")
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cc -O2 -std=gnu11 -I"$wolf/include" -I"$top/include/tls" -o "$bin/speed" "$here/speed.c" \
    "$top/src/tls/aesgcm.c" "$wolf/lib/libwolfssl.a" -lm -lpthread
"$bin/speed"
