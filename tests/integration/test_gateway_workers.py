#!/usr/bin/env python3
"""The gateway on several threads ([gateway] workers, docs/scaling.md
"Gateway workers").

One gateway with workers = 2 (SOCKS5, HTTP and HTTPS proxies, metrics) and
three agents: g1 and g2 with 4 tunnels each, g3 with one. Each worker has
its own listeners, so the kernel spreads tunnels and users over both; a
user whose request picks a tunnel of the other worker is handed over to
it (g3's single tunnel lives on one worker: about half of its users move).

- SOCKS5, HTTP CONNECT and HTTPS-proxy CONNECT streams of every group all
  relay the right bytes; absolute-URI requests on one keep-alive
  connection alternate between groups (a next request may move the
  connection again);
- anyproxy_gateway_worker_streams_total shows both workers carried streams
  (when the kernel gave each worker a tunnel) and
  anyproxy_gateway_handovers_total counts the moves;
- apctl clients, groups and stats add up over the workers;
- SIGHUP with a new proxy password: the old one is refused and the new one
  served, whichever worker accepts the user;
- apctl drain of g3's agent: no new stream of g3 on any worker; undrain;
- SIGTERM exits 0 with streams open on both workers, and the stopped
  listeners' last accepts end without a warning (they used to log
  "Accept failed ... Invalid argument" once per listener and worker).
"""
import os
import signal
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WORKERS = 2
AGENTS = {"wa": ("g1", 4), "wb": ("g2", 4), "wc": ("g3", 1)}
NEW_PASS = "proxy_pass_two"


# ---- helpers ---------------------------------------------------------------------------


def per_worker(metrics, series):
    return [metrics.get((series, (("worker", str(i)),)), 0) for i in range(WORKERS)]


def user_of(group):
    return "%s.%s" % (h.PROXY_USER, group)




def https_connect(env, host, port, user, password=h.PROXY_PASS):
    """CONNECT through the HTTPS proxy (TLS to the gateway); the TLS socket."""
    ctx = ssl.create_default_context(cafile=os.path.join(env.certs, "ca.crt"))
    raw = socket.create_connection(("127.0.0.1", env.gwp.https_port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n\r\n"
               % (host, port, host, port, h.basic_auth(user, password))).encode())
    status, _, head, rest = h.read_http_head(s)
    h.check(status == 200 and not rest, "HTTPS-proxy CONNECT as %s: %r" % (user, head))
    return s


def open_stream(env, how, group, seed):
    """A relaying stream to the echo server through proxy `how`."""
    port = env.echo.port
    if how == "https":
        return https_connect(env, "127.0.0.1", port, user_of(group))
    return h.proxy_stream(env.gwp, how, "127.0.0.1", port, user=user_of(group))


def http_get(sock, url, user, password=h.PROXY_PASS):
    host = url.split("/")[2]
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n"
                  % (url, host, h.basic_auth(user, password))).encode())
    status, headers, _, rest = h.read_http_head(sock)
    body = h.read_http_body(sock, headers, rest) if status else b""
    return status, body


def socks5_ok(env, group, password):
    r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", env.echo.port, user=user_of(group),
                      password=password)
    r.sock.close()
    return r.rep == 0


def setup(env):
    env.metrics = h.free_port()
    env.gwp = h.proxy_gateway(env, https=True, workers=WORKERS,
                              gw_env={"METRICS_LISTEN_ADDR": "127.0.0.1:%d" % env.metrics})
    for cid, (group, replicas) in AGENTS.items():
        h.proxy_agent(env, cid, group, replicas)
    env.echo = h.RawServer(h.echo_handler)
    env.servers.append(env.echo)
    env.origin = h.HttpTarget(name="origin")
    env.servers.append(env.origin)


# ---- the case --------------------------------------------------------------------------

def test_two_workers_carry_hand_over_reload_drain(env):
    setup(env)
    line = env.gwp.find("Gateway started")
    h.check(line and line[0].get("workers") == str(WORKERS),
            "'Gateway started workers=%d' not logged: %r" % (WORKERS, line))
    workers_of = [l.get("worker") for l in env.gwp.find("Tunnel registered")]
    h.note("tunnels by worker: %r" % workers_of)
    before = h.scrape_metrics(env.metrics)

    # streams of every group through every proxy, several at once
    open_socks = []
    n = 0
    for how in ("socks5", "connect", "https"):
        for group in ("g1", "g2", "g3"):
            for i in range(6):
                s = open_stream(env, how, group, n)
                open_socks.append(s)
                h.echo_roundtrip(s, "%s %s #%d" % (how, group, i), size=16384, seed=n)
                n += 1
    for s in open_socks:
        h.echo_roundtrip(s, "again", size=4096, seed=7)
    for s in open_socks:
        s.close()

    # absolute-URI requests on one keep-alive connection, group after group
    for _ in range(4):
        c = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=10)
        try:
            for k, group in enumerate(("g1", "g3", "g2", "g3", "g1", "g2")):
                path = "/info?k=%d" % k
                status, body = http_get(c, env.origin.url(path), user_of(group))
                h.check(status == 200 and path.encode() in body,
                        "GET %s as %s on a kept-alive connection: %r %r"
                        % (path, group, status, body[:200]))
        finally:
            c.close()

    after = h.scrape_metrics(env.metrics)
    streams = [a - b for a, b in zip(per_worker(after, "anyproxy_gateway_worker_streams_total"),
                                     per_worker(before,
                                                "anyproxy_gateway_worker_streams_total"))]
    h.note("streams by worker: %r" % streams)
    h.check(sum(streams) >= n, "worker streams %r, expected at least %d" % (streams, n))
    if len(set(workers_of)) == WORKERS:
        h.check(all(x > 0 for x in streams), "a worker carried no stream: %r" % streams)
    else:
        h.note("every tunnel landed on one worker: the spread is not checked")
    moved = after.get(("anyproxy_gateway_handovers_total", ()), 0)
    h.note("handovers: %r" % moved)
    if len(set(workers_of)) == WORKERS:
        h.check(moved > 0, "no user connection was handed over between the workers")
    h.check(after.get(("anyproxy_gateway_workers", ()), 0) == WORKERS,
            "anyproxy_gateway_workers: %r" % after.get(("anyproxy_gateway_workers", ())))

    # apctl: every agent with its tunnels, the groups, the totals
    clients = env.clients()
    for cid, (group, replicas) in AGENTS.items():
        h.check(cid in clients and clients[cid]["tunnels"] == replicas,
                "apctl clients: %s should have %d tunnels: %r" % (cid, replicas,
                                                                  clients.get(cid)))
    total = sum(c["streams_total"] for c in clients.values())
    h.check(total >= n, "apctl clients streams_total %d, expected >= %d" % (total, n))
    groups = env.groups()
    h.check({"g1", "g2", "g3"} <= set(groups), "apctl groups: %r" % groups)
    stats = env.apctl_json("stats")
    if isinstance(stats, list):
        stats = stats[0]
    h.check(stats["tunnels"] == 9 and stats["agents"] == 3,
            "apctl stats tunnels/agents: %r" % stats)
    h.check(stats["user_connections_total"] >= n,
            "apctl stats user_connections_total: %r" % stats)

    # SIGHUP with a new proxy password: applies whichever worker accepts
    with open(env.gwp.config) as f:
        text = f.read()
    with open(env.gwp.config, "w") as f:
        f.write(text.replace("auth_password = %s" % h.PROXY_PASS,
                             "auth_password = %s" % NEW_PASS))
    mark = env.gwp.mark()
    env.gwp.send_signal(signal.SIGHUP)
    env.gwp.wait_for_log("Configuration reloaded", 10 + h.slack(), since=mark)
    for i in range(12):
        h.check(not socks5_ok(env, "g%d" % (1 + i % 3), h.PROXY_PASS),
                "the old proxy password still served after the reload (#%d)" % i)
        h.check(socks5_ok(env, "g%d" % (1 + i % 3), NEW_PASS),
                "the new proxy password refused after the reload (#%d)" % i)

    # drain g3's only agent: no new stream of g3 on any worker
    rc, _out, err = env.apctl("drain", "wc")
    h.check(rc == 0, "apctl drain wc: %r" % err)
    for i in range(8):
        h.check(not socks5_ok(env, "g3", NEW_PASS), "a stream of g3 opened while drained")
        h.check(socks5_ok(env, "g1", NEW_PASS), "g1 refused while g3 was drained")
    rc, _out, err = env.apctl("undrain", "wc")
    h.check(rc == 0, "apctl undrain wc: %r" % err)
    for i in range(4):
        h.check(socks5_ok(env, "g3", NEW_PASS), "g3 refused after the undrain")

    # SIGTERM with streams open on both workers: drained and exits 0
    held = [h.proxy_stream(env.gwp, "socks5", "127.0.0.1", env.echo.port,
                           user=user_of("g%d" % (1 + i % 3)), password=NEW_PASS)
            for i in range(6)]
    for s in held:
        s.close()
    rc = env.gwp.stop(timeout=30)
    h.check(rc == 0, "the gateway exited %r after SIGTERM" % rc)
    failed = [line for line in env.gwp.log().splitlines() if "Accept failed" in line]
    h.check(not failed, "accepts failed at shutdown: %r" % failed[:4])


if __name__ == "__main__":
    h.run([test_two_workers_carry_hand_over_reload_drain])
