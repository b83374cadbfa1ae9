#!/usr/bin/env python3
"""Gateway restart: every agent is back within the reconnect backoff cap.

The agents back off while the gateway is away (100 ms doubling to the
1000 ms cap); the gateway stays down long enough for every agent to reach
the cap, so the bound tested is the cap itself, not a lucky short delay.
"""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

AGENTS = {"r-prod-1": ("production", 2), "r-prod-2": ("production", 2), "r-default": (None, 1)}


def start_agents(env):
    daemons = {}
    for cid, (group, replicas) in AGENTS.items():
        daemons[cid] = env.agent(cid, group_id=group, replicas=replicas, wait=False)
    for cid, (group, replicas) in AGENTS.items():
        env.wait_listed(cid, tunnels=replicas, daemon=daemons[cid])
    return daemons


def all_back(env):
    c = env.clients()
    return all(c.get(cid, {}).get("tunnels") == r for cid, (_g, r) in AGENTS.items())


def test_restart_same_port(env):
    gw = env.gateway()
    agents = start_agents(env)
    marks = {cid: d.mark() for cid, d in agents.items()}

    gw.send_signal(signal.SIGTERM)
    rc = gw.wait_exit(5 + h.slack())
    h.check(rc == 0, "gateway exited %d after SIGTERM" % rc)
    h.check(gw.find("Gateway stopping"), "gateway did not log 'Gateway stopping'")
    for cid, d in agents.items():
        d.wait_for_log(re.compile("Gateway is going away|Disconnected from gateway"),
                       2 + h.slack(), since=marks[cid])
    # away long enough for every agent to reach the backoff cap
    for cid, d in agents.items():
        def capped():
            return any(l.get("max_delay_ms") == str(h.RECONNECT_MAX_MS)
                       for l in d.find("Reconnecting to gateway", since=marks[cid]))
        h.wait_until(capped, 10 + h.slack(), "%s to back off to the %d ms cap"
                     % (cid, h.RECONNECT_MAX_MS))
    for cid, d in agents.items():
        h.check(d.alive(), "%s exited while the gateway was away:\n%s" % (cid, d.tail()))

    mark = gw.mark()
    gw.start()
    gw.wait_for_log("Gateway started", 5 + h.slack(), since=mark)
    t0 = time.monotonic()
    h.wait_until(lambda: all_back(env), h.RECONNECT_MAX + h.slack(2.0),
                 "every agent back with all its tunnels within the backoff cap")
    elapsed = time.monotonic() - t0
    g = env.groups()
    h.check(g.get("production", {}).get("clients") == 2 and g["production"]["tunnels"] == 4,
            "production after the restart: %r" % g)
    h.check(g.get("", {}).get("clients") == 1, "default group after the restart: %r" % g)
    h.note("all back %.2f s after the restart" % elapsed)


def test_restart_twice_quickly(env):
    # two restarts in a row, the second before the agents have settled:
    # the registry ends up exact, nothing is counted twice
    gw = env.gateway()
    start_agents(env)
    for _ in range(2):
        mark = gw.mark()
        gw.send_signal(signal.SIGTERM)
        h.check(gw.wait_exit(5 + h.slack()) == 0, "gateway did not exit 0 after SIGTERM")
        gw.start()
        gw.wait_for_log("Gateway started", 5 + h.slack(), since=mark)
        time.sleep(0.2)
    h.wait_until(lambda: all_back(env), h.RECONNECT_MAX + h.slack(2.0),
                 "every agent back after two restarts")
    time.sleep(h.PING_INTERVAL * 2)
    c = env.clients()
    h.check(sorted(c) == sorted(AGENTS), "clients after two restarts: %r" % sorted(c))
    g = env.groups()
    h.check(g["production"]["tunnels"] == 4 and g[""]["tunnels"] == 1,
            "groups after two restarts: %r" % g)


if __name__ == "__main__":
    h.run([test_restart_same_port, test_restart_twice_quickly])
