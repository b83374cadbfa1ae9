#!/bin/sh
# check.sh check|regen AP_CONFIGDOC SOURCE_ROOT
#
# check: fail, showing a diff, if docs/config.md or configs/*.reference.ini
#        differ from what ap-configdoc prints now.
# regen: rewrite them from ap-configdoc.
set -eu

if [ $# -ne 3 ] || { [ "$1" != check ] && [ "$1" != regen ]; }; then
	echo "usage: $0 check|regen AP_CONFIGDOC SOURCE_ROOT" >&2
	exit 2
fi
mode=$1 configdoc=$2 root=$3

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
stale=0

# one generated file: its path under the source root, then ap-configdoc's arguments
one() {
	file=$1
	shift
	"$configdoc" "$@" >"$tmp"
	if [ "$mode" = regen ]; then
		cp "$tmp" "$root/$file"
		echo "wrote $file"
	elif ! cmp -s "$tmp" "$root/$file"; then
		echo "$file is stale:" >&2
		diff -u "$root/$file" "$tmp" >&2 || true
		stale=1
	fi
}

one docs/config.md markdown
one configs/gateway.reference.ini example gateway
one configs/client.reference.ini example client

if [ $stale -ne 0 ]; then
	echo "the config docs are stale: run 'meson compile -C <builddir> regen-config-docs'" >&2
	exit 1
fi
