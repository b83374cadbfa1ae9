#!/usr/bin/env bash
# tools/setup.sh — install everything anyproxy needs on Debian 12 and build it.
#
# Idempotent: packages already present are not reinstalled, the AES-NI wolfSSL
# build is cached under $ANYPROXY_DEPS (default /opt/anyproxy-deps) and reused by
# every later run and every clone, and meson reuses an existing build folder.
#
# Usage: tools/setup.sh [BUILD_DIR [extra meson options...]]
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${ANYPROXY_DEPS:-/opt/anyproxy-deps}"
wolf_ver=5.5.4
# every option that changes the library goes into the cache key
wolf_opts="--enable-aesni --enable-intelasm --enable-sp --enable-sp-asm --enable-tls13 \
--enable-curve25519 --enable-ed25519 --enable-session-ticket --enable-sni --enable-alpn \
--enable-ip-alt-name --enable-altcertchains --disable-oldtls --disable-examples \
--disable-crypttests --disable-benchmark --enable-static --disable-shared --enable-cryptocb"
# --enable-cryptocb: the tunnel hands AES-GCM records of 1 KiB and more to
# our VAES/AVX-512 code where the CPU has it (src/tls/aesgcm.c, about 1.7
# times wolfSSL's AVX2 speed on 16 KiB records); wolfSSL keeps the rest.
# LARGE_STATIC_BUFFERS: a whole record fits each WOLFSSL object's buffers, so
# bulk transfer does not malloc/free per record (measured: 4% of the
# gateway's CPU in ShrinkInputBuffer without it). Only tunnels use TLS.
# WOLFSSL_ALWAYS_VERIFY_CB: the verify callback also sees a peer certificate
# that passed, so the gateway can read an agent certificate's binding URI SAN
# (docs/operations.md "Binding agent certificates") without keeping a copy of
# every peer chain per connection (SESSION_CERTS would, ~18 KB each).
wolf_cflags="-O2 -g -fPIC -DWOLFSSL_AESNI -DLARGE_STATIC_BUFFERS -DWOLFSSL_ALWAYS_VERIFY_CB"
wolf_key=$(printf '%s debian-patched %s %s' "$wolf_ver" "$wolf_opts" "$wolf_cflags" | sha256sum | cut -c1-12)
wolf_prefix="$deps/wolfssl-$wolf_ver-$wolf_key"

say() { echo "setup: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
    liburing-dev libinih-dev libcmocka-dev uthash-dev libpcre2-dev
    autoconf automake libtool dpkg-dev
    clang-format scdoc curl openssl python3 iproute2 procps psmisc haproxy tinyproxy)
# Installed only as peers the tests start themselves (in the foreground, on
# free loopback ports): the system services their packages enable are
# stopped and disabled when we install them (an idle open proxy on
# localhost:8888 helps nobody).
test_only_services=(tinyproxy)

install_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
        for p in "${test_only_services[@]}"; do
            if [[ " ${missing[*]} " == *" $p "* ]] && [ -d /run/systemd/system ]; then
                as_root systemctl disable --now "$p" >/dev/null 2>&1 || true
            fi
        done
    fi
}

enable_deb_src() {
    # apt-get source needs deb-src entries; add a sibling of the deb entries.
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
        local src=/etc/apt/sources.list.d/debian.sources
        [ -f "$src" ] || { say "no $src to derive deb-src entries from"; return 1; }
        sed 's/^Types: deb$/Types: deb-src/' "$src" | as_root tee /etc/apt/sources.list.d/anyproxy-deb-src.sources >/dev/null
        as_root apt-get update -qq
    fi
}

build_wolfssl() {
    if [ -f "$wolf_prefix/.complete" ]; then
        say "wolfSSL $wolf_ver (AES-NI) cached at $wolf_prefix"
        return 0
    fi
    say "building wolfSSL $wolf_ver from Debian's source package with AES-NI (about 3 minutes)"
    enable_deb_src
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/anyproxy-wolfssl.XXXXXX")
    chmod 755 "$work" # apt's download user must be able to write there
    (
        cd "$work"
        apt-get source -qq --download-only wolfssl >&2
        ls wolfssl_"$wolf_ver"-*.dsc >/dev/null || { say "Debian's wolfssl source is not $wolf_ver"; exit 1; }
        # Debian's patches (security fixes) are applied by dpkg-source
        dpkg-source -x wolfssl_*.dsc src >/dev/null
        cd src
        ./autogen.sh >/dev/null 2>&1
        # shellcheck disable=SC2086
        ./configure --prefix="$wolf_prefix" $wolf_opts CFLAGS="$wolf_cflags" >"$work/configure.log" 2>&1 ||
            { tail -30 "$work/configure.log" >&2; exit 1; }
        make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
        as_root make install >"$work/install.log" 2>&1
    )
    grep -q 'WOLFSSL_AESNI' "$wolf_prefix/include/wolfssl/options.h" ||
        { say "wolfSSL at $wolf_prefix was built without AES-NI"; exit 1; }
    touch "$wolf_prefix/.complete"
    rm -rf "$work"
    say "wolfSSL installed at $wolf_prefix"
}

install_packages
build_wolfssl

if [ $# -ge 1 ]; then
    builddir=$1
    shift
    export PKG_CONFIG_PATH="$wolf_prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    if [ ! -f "$builddir/build.ninja" ]; then
        meson setup "$builddir" "$top" "$@" >&2
    fi
    ninja -C "$builddir" >&2
fi
echo "$wolf_prefix"
