#!/usr/bin/env bash
# Build the http-64 tools (kaload, origin) with gcc -O2 into $HTTP64_BIN
# (default build/bench-http64 of this checkout; build*/ is git-ignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../../.." && pwd)"
HTTP64_BIN="${HTTP64_BIN:-$top/build/bench-http64}"
mkdir -p "$HTTP64_BIN"
CC="${CC:-gcc}"
CFLAGS="${CFLAGS:--O2 -g -Wall -Wextra}"
$CC $CFLAGS -o "$HTTP64_BIN/kaload" "$here/kaload.c"
$CC $CFLAGS -o "$HTTP64_BIN/origin" "$here/origin.c"
echo "built: $HTTP64_BIN/kaload $HTTP64_BIN/origin"
