#!/usr/bin/env bash
# tools/package.sh [BUILD_DIR] — build the Debian package
# build/pkg/anyproxy_VERSION_ARCH.deb (docs/operations.md "Installing and the
# package").
#
# The binaries link the project's own AES-NI wolfSSL statically (the one
# tools/setup.sh builds into /opt/anyproxy-deps), so the package depends only
# on Debian's libraries, computed with dpkg-shlibdeps (liburing2, libinih1,
# libpcre2-8-0, libc6) plus adduser for the system user.
#
# Without BUILD_DIR a release build folder build/pkg-build (prefix /usr) is
# set up and built. With one (an existing meson build folder, e.g. build/gcc,
# to reuse what is compiled) its prefix is set to /usr first if it is not:
# that only changes what `meson install` writes, not the binaries.
#
# Contents: /usr/bin/{anyproxy-gateway,anyproxy-client,apctl} (stripped),
# the man pages, /lib/systemd/system/anyproxy-gateway.service and
# anyproxy-client@.service, the example and reference configurations in
# /usr/share/doc/anyproxy/examples (the example deployments of
# configs/examples in a folder each below it), the Grafana dashboard in
# /usr/share/doc/anyproxy/grafana, and the top-level examples again as
# conffiles in /etc/anyproxy (mode 0640, group anyproxy after installation). Installing
# creates the system user and group anyproxy and /etc/anyproxy/certs; no
# service is enabled or started (the examples hold example passwords).
# Purging removes the user, /var/log/anyproxy and the enablement links.
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "package: $*" >&2; }

wolf_prefix=$("$top/tools/setup.sh")
export PKG_CONFIG_PATH="$wolf_prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

build=${1:-$top/build/pkg-build}
# Debian 12 packages keep units in /lib (merged /usr or not)
unitdir=/lib/systemd/system
if [ ! -f "$build/build.ninja" ]; then
    say "setting up $build (prefix /usr)"
    meson setup "$build" "$top" --prefix=/usr -Dsystemdunitdir=$unitdir >&2
fi
dirs=$(meson introspect --buildoptions "$build" | python3 -c '
import json, sys
o = {o["name"]: o["value"] for o in json.load(sys.stdin)}
print(o["prefix"], o["sysconfdir"], o["systemdunitdir"])')
if [ "$dirs" != "/usr /etc $unitdir" ]; then
    say "$build installs to prefix, sysconfdir and unit folder $dirs: setting /usr /etc $unitdir"
    meson configure "$build" -Dprefix=/usr -Dsysconfdir=/etc -Dsystemdunitdir=$unitdir >&2
fi
# only what is installed (not the tests and tools of a fresh folder)
mapfile -t installed < <(meson introspect --targets "$build" | python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    if t["installed"]:
        for f in t["filename"]:
            print(os.path.relpath(f, sys.argv[1]))' "$build")
ninja -C "$build" "${installed[@]}" >&2

version=$(meson introspect --projectinfo "$build" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
arch=$(dpkg --print-architecture)
out="$top/build/pkg"
root="$out/root"
deb="$out/anyproxy_${version}_${arch}.deb"

rm -rf "$root"
mkdir -p "$root/DEBIAN"
DESTDIR="$root" meson install -C "$build" --no-rebuild --strip --quiet >&2
# the reference to the build's wolfSSL is gone once it is linked in
for b in anyproxy-gateway anyproxy-client apctl; do
    [ -x "$root/usr/bin/$b" ] || { say "meson install did not install /usr/bin/$b"; exit 1; }
    if readelf -d "$root/usr/bin/$b" | grep -qi 'NEEDED.*wolfssl'; then
        say "/usr/bin/$b links wolfSSL dynamically; the package needs it static"
        exit 1
    fi
done
for d in lib/systemd/system usr/share/man/man8 usr/share/doc/anyproxy/examples \
    usr/share/doc/anyproxy/grafana; do
    [ -d "$root/$d" ] || { say "meson install wrote nothing to /$d"; exit 1; }
done
# every example deployment of the source tree, file for file
for f in "$top"/configs/examples/*/*.ini; do
    rel=${f#"$top/configs/"}
    [ -f "$root/usr/share/doc/anyproxy/$rel" ] ||
        { say "meson install did not install /usr/share/doc/anyproxy/$rel"; exit 1; }
done
gzip -9n "$root"/usr/share/man/man8/*.8
# the examples become the conffiles the units read (client-NAME.ini for
# anyproxy-client@NAME); they hold passwords: not world-readable
install -d -m 0755 "$root/etc/anyproxy"
for f in gateway.ini client-default.ini client-production.ini client-development.ini \
    client-testing.ini; do
    install -m 0640 "$root/usr/share/doc/anyproxy/examples/$f" "$root/etc/anyproxy/$f"
done
docdir="$root/usr/share/doc/anyproxy"
mkdir -p "$docdir"
cp "$top/README.md" "$docdir/"
cat >"$docdir/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: anyproxy
Files: *
License: MIT
Comment: wolfSSL (GPL-2+) is linked in statically from Debian's wolfssl
 source package; see /usr/share/doc/libwolfssl*/copyright on Debian.
EOF

# Depends: what the binaries need, by the libraries' own shlibs files
shlib_work=$(mktemp -d)
trap 'rm -rf "$shlib_work"' EXIT
mkdir -p "$shlib_work/debian"
printf 'Source: anyproxy\n\nPackage: anyproxy\nArchitecture: any\n' >"$shlib_work/debian/control"
depends=$(cd "$shlib_work" && dpkg-shlibdeps -O "$root/usr/bin/anyproxy-gateway" \
    "$root/usr/bin/anyproxy-client" "$root/usr/bin/apctl" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { say "dpkg-shlibdeps found no dependencies"; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: anyproxy
Version: $version
Architecture: $arch
Maintainer: anyproxy <dev@anyproxy>
Installed-Size: $installed_size
Depends: $depends, adduser
Section: net
Priority: optional
Description: group-routing proxy gateway and agents over TLS tunnels
 anyproxy-gateway accepts anyproxy-client agents over TLS 1.3 and routes
 users' HTTP and SOCKS5 proxy connections through the agents of the group
 named in the proxy user name (user.group). Built on io_uring; wolfSSL with
 AES-NI is linked in statically. apctl shows who is connected.
EOF

(cd "$root" && find etc -type f | sed 's#^#/#' | sort) >"$root/DEBIAN/conffiles"

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd anyproxy >/dev/null; then
        adduser --system --group --quiet --no-create-home --home /nonexistent anyproxy
    fi
    # the daemons read their files as group anyproxy; others may not
    install -d -m 0750 -o root -g anyproxy /etc/anyproxy /etc/anyproxy/certs
    for f in /etc/anyproxy/gateway.ini /etc/anyproxy/client-*.ini; do
        if [ -f "$f" ] && [ "$(stat -c %G "$f")" = root ]; then
            chgrp anyproxy "$f"
            chmod 0640 "$f"
        fi
    done
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # an upgrade: running daemons drain and start again on the new binaries
        if [ -n "$2" ]; then
            systemctl try-restart anyproxy-gateway.service 'anyproxy-client@*.service' || true
        fi
    fi
fi
exit 0
EOF

cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop anyproxy-gateway.service 'anyproxy-client@*.service' || true
fi
exit 0
EOF

cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -f /etc/systemd/system/*.wants/anyproxy-gateway.service \
        /etc/systemd/system/*.wants/anyproxy-client@*.service
    # certificates the operator put there stay (and so does the folder)
    rmdir /etc/anyproxy/certs 2>/dev/null || true
    rmdir /etc/anyproxy 2>/dev/null || true
    rm -rf /var/log/anyproxy
    if getent passwd anyproxy >/dev/null; then
        deluser --system --quiet anyproxy || true
    fi
    if getent group anyproxy >/dev/null; then
        delgroup --system --quiet anyproxy || true
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

dpkg-deb --build --root-owner-group "$root" "$deb" >&2
say "built $deb (Depends: $depends, adduser)"
echo "$deb"
