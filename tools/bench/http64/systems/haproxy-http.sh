#!/usr/bin/env bash
# haproxy-http: one HAProxy process in HTTP mode in front of the http-64 origin
# (user -> haproxy -> origin). The frontend takes the absolute-URI requests of
# the load generator like any other; the backend is the origin. Keep-alive on
# both sides ("option http-keep-alive", the default "http-reuse safe").
# A reverse proxy, so it routes nothing by URI: the peer for the HTTP work
# (parse, rewrite, frame, keep-alive), not for tunnelling.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "${BENCH_LIB:-$here/../../../../../shared/bench/systems/lib.sh}"
verb=${1:-}; scratch=${2:-}
[ -n "$scratch" ] || die "usage: $0 start|stop SCRATCH"
port=$((BENCH_PORT_BASE + 161))
case "$verb" in
start)
    need_bin haproxy
    port_free $port || die "port $port busy"
    cat >"$scratch/haproxy-http.cfg" <<CONF
global
    maxconn 9950
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 10s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$port
    default_backend origin
backend origin
    server s1 $BENCH_TARGET_RR
CONF
    spawn "$scratch" haproxy-http haproxy -db -f "$scratch/haproxy-http.cfg"
    wait_port 127.0.0.1 $port
    echo "PROXY_ARGS=--http-get 127.0.0.1:$port"
    echo "CURL_ARGS=-x http://127.0.0.1:$port"
    ;;
stop) stop_recorded "$scratch" ;;
*) die "usage: $0 start|stop SCRATCH" ;;
esac
