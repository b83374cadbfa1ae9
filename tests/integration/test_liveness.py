#!/usr/bin/env python3
"""Liveness: dead or frozen agents leave apctl in bounded time, come back on
their own, and never disturb the other agents.

Timings (harness.FAST_*): ping every 300 ms, a tunnel silent for 1500 ms is
dead, reconnect delays 100 ms doubling up to 1000 ms.
"""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def test_kill9_agent_leaves_and_returns(env):
    gw = env.gateway()
    victim = env.agent("victim", group_id="g1", replicas=2)
    bystander = env.agent("bystander", group_id="g1", replicas=1)
    mark = gw.mark()
    t0 = time.monotonic()
    victim.kill9()
    env.wait_gone("victim", h.PING_TIMEOUT + h.slack())
    elapsed = time.monotonic() - t0
    # a killed agent's kernel closes its connections: no need to wait for
    # the liveness deadline (docs/operations.md "Liveness")
    h.check(elapsed < h.PING_TIMEOUT + h.slack(),
            "killed agent left apctl after %.2f s" % elapsed)
    line = gw.wait_for_log("Client disconnected", 2, since=mark)
    h.check(line.get("client_id") == "victim",
            "Client disconnected names %r" % line.get("client_id"))
    h.check(line.get("reason"), "Client disconnected should give a reason: %r" % line)
    g = env.groups()["g1"]
    h.check(g["clients"] == 1 and g["tunnels"] == 1, "group g1 after the kill: %r" % g)
    h.check(env.clients()["bystander"]["tunnels"] == 1, "bystander lost a tunnel")

    victim.start()
    env.wait_listed("victim", tunnels=2, daemon=victim, timeout=3 + h.slack())
    g = env.groups()["g1"]
    h.check(g["clients"] == 2 and g["tunnels"] == 3, "group g1 after the restart: %r" % g)
    h.check(not bystander.find("Disconnected from gateway"),
            "the bystander agent was disconnected:\n%s" % bystander.tail())


def test_sigstop_agent_dropped_within_deadline(env):
    gw = env.gateway()
    frozen = env.agent("frozen", group_id="g2", replicas=2)
    bystander = env.agent("bystander", group_id="g2")
    mark = gw.mark()
    t0 = time.monotonic()
    frozen.send_signal(signal.SIGSTOP)  # its sockets stay open: only liveness can tell
    try:
        env.wait_gone("frozen", h.PING_TIMEOUT + h.slack(2.0))
        elapsed = time.monotonic() - t0
        # The gateway last heard from it at most one ping interval before the
        # stop, so it may decide up to ping_interval early, never earlier.
        earliest = h.PING_TIMEOUT - h.PING_INTERVAL - 0.1
        h.check(elapsed >= earliest,
                "frozen agent dropped after %.2f s, before the liveness deadline "
                "(ping_timeout %.1f s)" % (elapsed, h.PING_TIMEOUT))
        h.check(elapsed <= h.PING_TIMEOUT + h.slack(2.0),
                "frozen agent dropped after %.2f s (deadline %.1f s)" % (elapsed, h.PING_TIMEOUT))
        line = gw.wait_for_log("Client disconnected", 2, since=mark)
        h.check(line.get("client_id") == "frozen", "disconnected: %r" % line)
        m = re.search(r"(\d+) ms", line.get("reason", ""))
        h.check(m and "liveness" in line.get("reason", ""),
                "reason should name the liveness deadline: %r" % line)
        h.check(int(m.group(1)) >= h.PING_TIMEOUT_MS,
                "reported silence %s ms is below ping_timeout_ms %d"
                % (m.group(1), h.PING_TIMEOUT_MS))
        c = env.clients()
        h.check(c.get("bystander", {}).get("tunnels") == 1,
                "the bystander must stay listed: %r" % c)
    finally:
        frozen.send_signal(signal.SIGCONT)
    # thawed, it notices its tunnels are gone and reconnects on its own
    t1 = time.monotonic()
    env.wait_listed("frozen", tunnels=2, daemon=frozen, timeout=h.PING_TIMEOUT + h.RECONNECT_MAX
                    + h.slack(2.0))
    _ = time.monotonic() - t1
    h.check(not bystander.find("Disconnected from gateway"),
            "the bystander agent was disconnected:\n%s" % bystander.tail())
    g = env.groups()["g2"]
    h.check(g["clients"] == 2 and g["tunnels"] == 3, "group g2 at the end: %r" % g)


def test_sigstop_gateway_agents_notice_and_return(env):
    gw = env.gateway()
    a = env.agent("a", group_id="g3", replicas=2)
    mark = a.mark()
    t0 = time.monotonic()
    gw.send_signal(signal.SIGSTOP)
    try:
        # the agent's own deadline: both tunnels are declared dead
        a.wait_for_log("Disconnected from gateway", h.PING_TIMEOUT + h.slack(2.0), since=mark,
                       count=2)
        elapsed = time.monotonic() - t0
        h.check(elapsed >= h.PING_TIMEOUT - h.PING_INTERVAL - 0.1,
                "agent gave up on the gateway after %.2f s, before ping_timeout" % elapsed)
        reasons = [l.get("reason", "") for l in a.find("Disconnected from gateway", since=mark)]
        h.check(all("liveness" in r for r in reasons),
                "the agent should name the liveness deadline: %r" % reasons)
        a.wait_for_log("Reconnecting to gateway", 2, since=mark)
    finally:
        gw.send_signal(signal.SIGCONT)
    # the gateway wakes up with stale tunnels and new ones from the same
    # agent instance: the registry must settle on exactly one client with
    # exactly its two tunnels
    env.wait_listed("a", tunnels=2, daemon=a, timeout=h.PING_TIMEOUT + h.RECONNECT_MAX
                    + h.slack(3.0))
    time.sleep(h.PING_TIMEOUT)  # let every stale tunnel be reaped
    c = env.clients()
    h.check(list(c) == ["a"] and c["a"]["tunnels"] == 2, "registry after the thaw: %r" % c)
    g = env.groups()
    h.check(list(g) == ["g3"] and g["g3"]["tunnels"] == 2 and g["g3"]["clients"] == 1,
            "groups after the thaw: %r" % g)


if __name__ == "__main__":
    h.run([
        test_kill9_agent_leaves_and_returns,
        test_sigstop_agent_dropped_within_deadline,
        test_sigstop_gateway_agents_notice_and_return,
    ])
