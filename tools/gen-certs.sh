#!/usr/bin/env bash
# tools/gen-certs.sh DIR [NAME...] — a private CA and an ECDSA P-256 server
# certificate for the gateway, valid for localhost, 127.0.0.1 and ::1 (plus
# any extra DNS NAMEs given). Idempotent: existing files are kept.
#
#   DIR/ca.crt      give this to agents as gateway_tls_cert
#   DIR/server.crt  DIR/server.key   the gateway's tls_cert / tls_key
#
# tools/gen-certs.sh --agent DIR NAME [GROUP/CLIENT...] — an agent
# certificate for mutual TLS signed by DIR's CA (made first if missing),
# bound to each GROUP/CLIENT pair given (URI SAN anyproxy://agent/GROUP/CLIENT;
# "/CLIENT" is the default group; docs/operations.md "Binding agent
# certificates"). No pair: an unbound certificate. The gateway's client_ca
# is DIR/ca.crt; the agent's tls_cert / tls_key are DIR/NAME.crt, DIR/NAME.key.
set -euo pipefail
if [ "${1:-}" = "--agent" ]; then
    dir=${2:?usage: gen-certs.sh --agent DIR NAME [GROUP/CLIENT...]}
    name=${3:?usage: gen-certs.sh --agent DIR NAME [GROUP/CLIENT...]}
    shift 3
    bash "${BASH_SOURCE[0]}" "$dir"
    cd "$dir"
    ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    san=""
    for pair in "$@"; do
        case "$pair" in
            */*/*|*,*|"") echo "gen-certs.sh: bad GROUP/CLIENT '$pair'" >&2; exit 2 ;;
            */*) san="$san${san:+,}URI:anyproxy://agent/$pair" ;;
            *) echo "gen-certs.sh: '$pair' is not GROUP/CLIENT" >&2; exit 2 ;;
        esac
    done
    [ -n "$san" ] && ext="${ext}subjectAltName=$san\n"
    umask 077
    openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
    openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr" 2>/dev/null
    printf '%b' "$ext" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
        -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext" ca.srl
    chmod 644 "$name.crt"
    exit 0
fi
dir=${1:?usage: gen-certs.sh DIR [DNS-NAME...]}
shift
mkdir -p "$dir"
cd "$dir"
if [ -s server.crt ] && [ -s server.key ] && [ -s ca.crt ]; then
    exit 0
fi
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for n in "$@"; do san="$san,DNS:$n"; done
umask 077
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=anyproxy test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$san" >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
    -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
chmod 600 server.key ca.key
