#!/usr/bin/env bash
# tools/check-format.sh — fail if a C file of the tree differs from what
# clang-format makes of it with .clang-format (CONTRIBUTING.md, "Code").
# Fix with: clang-format -i FILE...   Run by meson test 'clang-format'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cf=${CLANG_FORMAT:-clang-format}
command -v "$cf" >/dev/null || { echo "clang-format not installed (tools/setup.sh installs it)"; exit 77; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files '*.c' '*.h')
else
    mapfile -t files < <(find include src tests tools -name '*.[ch]' | sort)
fi
"$cf" --dry-run -Werror "${files[@]}"
echo "clang-format: ${#files[@]} files formatted as .clang-format says"
