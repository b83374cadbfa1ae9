#!/usr/bin/env python3
"""Two agent processes configured with the same client_id.

Defined behaviour (docs/operations.md "Client identity"), as observed here:
- newest wins: when the second process connects, the gateway replaces
  every tunnel of the first one ("Client tunnel replaced", WARN) and apctl
  lists one client with that id, with the new process's tunnels and address;
- the first process gets ERROR REPLACED on each tunnel, logs "Gateway
  replaced this tunnel: another agent process uses the same client_id ..."
  (ERROR), keeps running, and backs off with its delay ceiling jumped
  straight to reconnect_max_delay_ms;
- it waits the whole cap before its next attempt (delay_ms equals
  max_delay_ms in its "Reconnecting to gateway" line);
- when it comes back it is itself the newest and replaces the other: two
  live processes with one id alternate, loudly on both sides, at most once
  per cap. The registry stays exact throughout: one client row, never more
  tunnels than one process has, the group's counts matching.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

LONG_CAP_MS = 3600000  # the first process stays away for the whole test




def replaced_lines(agent, since=0):
    return agent.find("Gateway replaced this tunnel", since)


def test_newest_wins(env):
    gw = env.gateway()
    old = env.agent("twin", group_id="g", replicas=2, name="twin-old",
                    reconnect_max_delay_ms=LONG_CAP_MS)
    old_addrs = h.local_addrs(old.pid)
    h.check(env.clients()["twin"]["remote_addr"] in old_addrs, "first process not listed")
    mark = gw.mark()

    new = env.agent("twin", group_id="g", replicas=2, name="twin-new", wait=False)

    def new_listed():
        c = env.clients().get("twin")
        return c and c["tunnels"] == 2 and c["remote_addr"] in h.local_addrs(new.pid) and c
    row = h.wait_until(new_listed, 5 + h.slack(), "the newer process to own client twin")
    h.check(row["remote_addr"] not in old_addrs, "apctl shows the old process's address")

    # the old process was told, on each of its tunnels, and stays away
    old.wait_for_log("Gateway replaced this tunnel", 3 + h.slack(), count=2)
    err = replaced_lines(old)[0]
    h.check(err.level == "ERROR" and "client_id" in err.raw, "replaced line: %r" % err)
    retry = old.wait_for_log("Reconnecting to gateway", 2 + h.slack(), count=2)
    h.check(all(l.get("max_delay_ms") == str(LONG_CAP_MS)
                for l in old.find("Reconnecting to gateway")),
            "after REPLACED the delay ceiling should jump to the cap %d: %r"
            % (LONG_CAP_MS, [l.get("max_delay_ms") for l in old.find("Reconnecting to gateway")]))
    h.check(old.alive(), "the replaced process exited")
    h.check(gw.find("Client tunnel replaced", since=mark),
            "the gateway did not log the replacement")
    h.check(not replaced_lines(new), "the newer process was told it was replaced")

    # the registry is exact: one client, the new process's two tunnels
    time.sleep(h.PING_INTERVAL * 2)
    c, g = env.clients(), env.groups()
    h.check(list(c) == ["twin"] and c["twin"]["tunnels"] == 2, "clients: %r" % c)
    h.check(g["g"]["clients"] == 1 and g["g"]["tunnels"] == 2, "groups: %r" % g)
    h.check(c["twin"]["remote_addr"] in h.local_addrs(new.pid), "owner changed: %r" % c)
    h.note("observed: old delay after REPLACED %s ms (cap %d ms)" % (retry.get("delay_ms"),
                                                                     LONG_CAP_MS))


def test_replaced_process_waits_full_cap(env):
    # docs/operations.md: the replaced process "waits the full
    # reconnect_max_delay_ms before its next attempt", so two processes with
    # one id alternate at most once per cap
    env.gateway()
    cap_ms = 2000
    old = env.agent("twin2", name="twin2-old", reconnect_max_delay_ms=cap_ms)
    env.agent("twin2", name="twin2-new", wait=False, reconnect_max_delay_ms=cap_ms)
    old.wait_for_log("Gateway replaced this tunnel", 3 + h.slack())
    line = old.wait_for_log("Reconnecting to gateway", 2 + h.slack())
    h.check(line.get("max_delay_ms") == str(cap_ms), "ceiling after REPLACED: %r" % line)
    h.check(line.get("delay_ms") == str(cap_ms),
            "the replaced process should wait the full cap (%d ms), it waits %s ms: %r"
            % (cap_ms, line.get("delay_ms"), line))


def test_two_processes_alternate_registry_stays_exact(env):
    gw = env.gateway()
    a = env.agent("twin3", group_id="g", name="twin3-a")
    b = env.agent("twin3", group_id="g", name="twin3-b", wait=False)
    owners = []
    shown = set()
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        # socket snapshots before and after apctl: an address apctl shows
        # belongs to a socket that exists in one of them
        before = {"a": h.local_addrs(a.pid), "b": h.local_addrs(b.pid)}
        c = env.clients()
        g = env.groups()
        after = {"a": h.local_addrs(a.pid), "b": h.local_addrs(b.pid)}
        h.check(set(c) <= {"twin3"}, "unexpected clients: %r" % c)
        if "twin3" in c:
            h.check(c["twin3"]["tunnels"] == 1, "twin3 has %d tunnels" % c["twin3"]["tunnels"])
            h.check(g["g"]["clients"] == 1 and g["g"]["tunnels"] == 1, "group g: %r" % g)
            addr = c["twin3"]["remote_addr"]
            shown.add(addr)
            owner = None  # a socket may live only between two snapshots
            for k in ("a", "b"):
                if addr in before[k] | after[k]:
                    owner = k
            if owner and (not owners or owners[-1] != owner):
                owners.append(owner)
        else:
            h.check("g" not in g, "group g without a client: %r" % g)
        time.sleep(0.05)
    h.check(a.alive() and b.alive(), "a process with a duplicate id exited")
    h.check("b" in owners, "the newer process never owned the id: %r" % owners)
    registered = {l.get("remote_addr") for l in gw.find("Tunnel registered")
                  if l.get("client_id") == "twin3"}
    h.check(shown <= registered, "apctl showed addresses no tunnel of twin3 had: %r"
            % (shown - registered))
    # the replaced process waits the whole cap before it comes back, so
    # replacements are at least one cap apart
    times = [l.time for l in gw.find("Client tunnel replaced")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    h.check(len(times) >= 2, "expected the processes to alternate: %d replacements" % len(times))
    h.check(min(gaps) >= 0.9 * h.RECONNECT_MAX,
            "replacements %.3f s apart, less than the %.1f s cap: gaps %r"
            % (min(gaps), h.RECONNECT_MAX, ["%.3f" % g for g in gaps]))
    h.note("owners over 4 s: %s; replacements logged by the gateway: %d, gaps %s s"
           % ("".join(owners), len(times), " ".join("%.2f" % g for g in gaps)))


if __name__ == "__main__":
    h.run([
        test_newest_wins,
        test_replaced_process_waits_full_cap,
        test_two_processes_alternate_registry_stays_exact,
    ])
