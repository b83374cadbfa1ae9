#!/usr/bin/env bash
# tools/demo.sh — the demo: certificates, a gateway and three agents in two
# groups (production: 2 agents x 2 tunnels; default group: 1 agent), all on
# loopback, a local web server as the target, requests through both proxies
# with group routing, and what an operator sees with apctl. Runs until
# Ctrl-C when started from a terminal; otherwise stops by itself.
# Everything it starts is stopped by PID on exit.
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wolf_prefix=$("$top/tools/setup.sh")
export PKG_CONFIG_PATH="$wolf_prefix/lib/pkgconfig"
build="$top/build/gcc"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$top" >/dev/null
fi
ninja -C "$build" >/dev/null

demo="$top/build/demo"
mkdir -p "$demo/run" "$demo/logs" "$demo/www"
echo "hello from the demo target" >"$demo/www/index.txt"
"$top/tools/gen-certs.sh" "$demo/certs"
# the configurations hold passwords: owner only (the daemons warn otherwise)
chmod 600 "$top"/configs/demo/*.ini
cd "$demo"

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 0' INT TERM

start() { # NAME BINARY CONFIG
    "$2" -c "$3" >"logs/$1.log" 2>&1 &
    pids+=($!)
}

apctl=("$build/tools/apctl/apctl" -s run/gateway.sock)
target_port=${DEMO_TARGET_PORT:-18181}
python3 -m http.server "$target_port" --bind 127.0.0.1 --directory www >logs/target.log 2>&1 &
pids+=($!)
start gateway "$build/src/gateway/anyproxy-gateway" "$top/configs/demo/gateway.ini"
for i in $(seq 50); do "${apctl[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
for agent in prod-1 prod-2 default-1; do
    start "$agent" "$build/src/client/anyproxy-client" "$top/configs/demo/$agent.ini"
done
# wait until all five tunnels are registered
for i in $(seq 100); do
    n=$("${apctl[@]}" --json groups 2>/dev/null | python3 -c \
        'import json,sys; print(sum(g["tunnels"] for g in json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "$n" -ge 5 ] && break
    sleep 0.1
done

echo "anyproxy demo — logs in $demo/logs"
echo
echo "\$ apctl groups"
"${apctl[@]}" groups
url="http://127.0.0.1:$target_port/index.txt"
echo
echo "\$ curl -x http://demo.production:demo_proxy_pass@127.0.0.1:8080 $url"
curl -sS --max-time 10 -x http://demo.production:demo_proxy_pass@127.0.0.1:8080 "$url"
echo "\$ curl --socks5-hostname demo:demo_proxy_pass@127.0.0.1:1080 ${url/127.0.0.1/localhost}"
curl -sS --max-time 10 --socks5-hostname demo:demo_proxy_pass@127.0.0.1:1080 "${url/127.0.0.1/localhost}"
echo
echo "\$ apctl clients    (STREAMS_TOTAL shows which agents carried the requests)"
"${apctl[@]}" clients
echo
grep -hE "Client connected|Gateway received request|Selected client" logs/gateway.log || true

if [ -t 0 ]; then
    echo
    echo "Running. Try: $build/tools/apctl/apctl -s $demo/run/gateway.sock clients   (Ctrl-C stops)"
    wait
fi
