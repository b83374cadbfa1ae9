#!/usr/bin/env bash
# anyproxy in the shared benchmark harness (../shared/bench): the full
# encrypted chain user -SOCKS5/HTTP-> gateway =TLS tunnel=> agent -> target.
# Variant: socks5 (default) or http (CONNECT). Binaries from ANYPROXY_BUILD
# (default build/gcc of this checkout); certificates made in SCRATCH.
# ANYPROXY_REPLICAS (default 1) and ANYPROXY_AGENT_WORKERS (default 0: one
# per CPU, never more than the tunnels) set the agent's [client] replicas
# and workers: ANYPROXY_REPLICAS=2 ANYPROXY_AGENT_WORKERS=2 runs two agent
# threads. ANYPROXY_GATEWAY_WORKERS (default 0: one per CPU) sets the
# gateway's [gateway] workers.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../../.." && pwd)"
bench_lib="${BENCH_LIB:-$top/../shared/bench/systems/lib.sh}"
. "$bench_lib"
verb=${1:-}; scratch=${2:-}; variant=${3:-socks5}
[ -n "$scratch" ] || die "usage: $0 start|stop SCRATCH [socks5|http]"
build="${ANYPROXY_BUILD:-$top/build/gcc}"
replicas="${ANYPROXY_REPLICAS:-1}"; agent_workers="${ANYPROXY_AGENT_WORKERS:-0}"
gateway_workers="${ANYPROXY_GATEWAY_WORKERS:-0}"
tport=$((BENCH_PORT_BASE + 151)); sport=$((BENCH_PORT_BASE + 152)); hport=$((BENCH_PORT_BASE + 153))
case "$verb" in
start)
    [ -x "$build/src/gateway/anyproxy-gateway" ] || die "build anyproxy first (tools/setup.sh build/gcc)"
    for p in $tport $sport $hport; do port_free $p || die "port $p busy"; done
    "$top/tools/gen-certs.sh" "$scratch/certs"
    cat >"$scratch/gateway.ini" <<INI
[gateway]
listen_addr = 127.0.0.1:$tport
tls_cert = $scratch/certs/server.crt
tls_key = $scratch/certs/server.key
auth_username = bench
auth_password = bench-tunnel-secret
workers = $gateway_workers
[proxy.socks5]
listen_addr = 127.0.0.1:$sport
[proxy.http]
listen_addr = 127.0.0.1:$hport
[log]
level = warn
[control]
socket = $scratch/gateway.sock
INI
    cat >"$scratch/client.ini" <<INI
[client]
gateway_addr = 127.0.0.1:$tport
gateway_tls_cert = $scratch/certs/ca.crt
gateway_server_name = localhost
client_id = bench-agent
replicas = $replicas
workers = $agent_workers
auth_username = bench
auth_password = bench-tunnel-secret
[log]
level = warn
INI
    spawn "$scratch" gateway "$build/src/gateway/anyproxy-gateway" -c "$scratch/gateway.ini"
    spawn "$scratch" client "$build/src/client/anyproxy-client" -c "$scratch/client.ini"
    wait_port 127.0.0.1 $sport
    for i in $(seq 100); do
        # every tunnel up: the load spreads over all of them from the start
        "$build/tools/apctl/apctl" -s "$scratch/gateway.sock" --json clients 2>/dev/null |
            grep -q "\"tunnels\": *$replicas[,}]" && break
        sleep 0.05
    done
    if [ "$variant" = http ]; then
        echo "PROXY_ARGS=--http-connect 127.0.0.1:$hport"
        echo "CURL_ARGS=-p -x http://127.0.0.1:$hport"
    else
        emit_socks5 "127.0.0.1:$sport"
    fi
    ;;
stop) stop_recorded "$scratch" ;;
*) die "usage: $0 start|stop SCRATCH [socks5|http]" ;;
esac
