#!/usr/bin/env python3
"""Memory per idle tunnel and per idle stream of anyproxy-gateway and
anyproxy-client, the sizing numbers of docs/scaling.md.

    AP_BUILD_DIR=$PWD/build/gcc python3 tools/bench/scaling_memory.py [AGENTS [STREAMS]]

Loopback only, with the integration harness (tests/integration/harness):
generated certificates, free ports, daemons stopped by PID at the end.

Tunnels: a fresh gateway; one agent with replicas = 1, one with replicas =
64 (the agent's cost per tunnel is their RSS difference / 63), then AGENTS
(default 8) more agents with 64 replicas each; the gateway's cost per
tunnel is its RSS growth / all tunnels (its per-client entries included).

Streams: another fresh gateway and one agent (replicas = 4); STREAMS
(default 5000) SOCKS5 connections through it to a local target that
accepts and holds them, all idle once open; the cost per stream is each
process's RSS growth / STREAMS.

RSS is VmRSS from /proc, read after the processes have settled. Prints one
line per measurement.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import harness as h  # noqa: E402

MAX_REPLICAS = 64
SETTLE_S = 1.0
LOG = {"log_level": "warn"}


def settled_rss(pid):
    """The least of a few VmRSS samples over SETTLE_S (KiB)."""
    least = None
    for _ in range(5):
        time.sleep(SETTLE_S / 5)
        v = h.rss_kib(pid)
        least = v if least is None else min(least, v)
    return least


class HoldingTarget:
    """Accepts connections and holds them, reading nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def agent(env, cid, replicas):
    keys = dict(h.PROXY_CLIENT)
    keys.update(LOG)
    return env.agent(cid, replicas=replicas, **keys)


def tunnels(n_agents):
    env = h.TestEnv("scaling-tunnels")
    try:
        gw = h.proxy_gateway(env, log_level="info")
        gw0 = settled_rss(gw.pid)
        one = agent(env, "t-1", 1)
        many = agent(env, "t-64", MAX_REPLICAS)
        r1, r64 = settled_rss(one.pid), settled_rss(many.pid)
        print("agent RSS: %d KiB with 1 tunnel, %d KiB with %d tunnels: %.1f KiB per tunnel"
              % (r1, r64, MAX_REPLICAS, (r64 - r1) / (MAX_REPLICAS - 1)))
        for i in range(n_agents):
            agent(env, "t-more-%d" % i, MAX_REPLICAS)
        n = 1 + MAX_REPLICAS * (n_agents + 1)
        listed = sum(c["tunnels"] for c in env.clients().values())
        h.check(listed == n, "gateway lists %d tunnels, expected %d" % (listed, n))
        gw1 = settled_rss(gw.pid)
        print("gateway RSS: %d KiB idle, %d KiB with %d tunnels of %d agents: "
              "%.1f KiB per tunnel" % (gw0, gw1, n, n_agents + 2, (gw1 - gw0) / n))
    finally:
        env.cleanup()


def streams(count):
    env = h.TestEnv("scaling-streams")
    target = HoldingTarget()
    socks = []
    try:
        gw = h.proxy_gateway(env, log_level="info")
        ag = agent(env, "s-1", 4)
        # one stream first: the relay's first-use allocations are not per stream
        first = h.socks5_open(gw.socks_port, "127.0.0.1", target.port)
        h.check(first.rep == 0, "SOCKS5 reply %r" % first.rep)
        socks.append(first.sock)
        g0, a0 = settled_rss(gw.pid), settled_rss(ag.pid)
        for i in range(count):
            r = h.socks5_open(gw.socks_port, "127.0.0.1", target.port)
            h.check(r.rep == 0, "stream %d: SOCKS5 reply %r" % (i, r.rep))
            socks.append(r.sock)
        g1, a1 = settled_rss(gw.pid), settled_rss(ag.pid)
        open_now = env.clients()["s-1"]["streams_active"]
        h.check(open_now == count + 1, "apctl shows %d streams, expected %d"
                % (open_now, count + 1))
        print("gateway RSS: %d -> %d KiB with %d more idle streams: %.2f KiB per stream"
              % (g0, g1, count, (g1 - g0) / count))
        print("agent RSS: %d -> %d KiB with %d more idle streams: %.2f KiB per stream"
              % (a0, a1, count, (a1 - a0) / count))
    finally:
        for s in socks:
            s.close()
        target.close()
        env.cleanup()


def main():
    n_agents = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    h.build_dir()
    tunnels(n_agents)
    streams(count)


if __name__ == "__main__":
    main()
