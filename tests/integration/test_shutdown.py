#!/usr/bin/env python3
"""Signals: SIGTERM and SIGINT stop both programs cleanly (exit 0, GOAWAY to
the peer, the control socket removed); SIGHUP is logged and changes nothing.
(docs/operations.md "Programs and signals")"""
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

STOP_BOUND = 5 + h.slack(1.0)  # the programs promise at most 5 s


def stop_and_time(d, sig=signal.SIGTERM, bound=STOP_BOUND):
    t0 = time.monotonic()
    d.send_signal(sig)
    rc = d.wait_exit(bound)
    return rc, time.monotonic() - t0


def test_sigterm_gateway(env):
    gw = env.gateway()
    a = env.agent("a", group_id="g", replicas=2)
    b = env.agent("b")
    marks = {d: d.mark() for d in (a, b)}
    rc, secs = stop_and_time(gw)
    h.check(rc == 0, "gateway exited %d after SIGTERM:\n%s" % (rc, gw.tail()))
    h.check(secs < 2 + h.slack(), "gateway took %.2f s to stop with idle tunnels" % secs)
    h.check(gw.find("Gateway stopping"), "no 'Gateway stopping' line")
    h.check(not os.path.exists(env.control), "the control socket is left behind")
    rc, out, err = env.apctl("groups")
    h.check(rc == 1 and "gateway" in err, "apctl after the stop: rc %d %r" % (rc, err))
    for d in (a, b):
        d.wait_for_log(re.compile("Gateway is going away|Disconnected from gateway"),
                       2 + h.slack(), since=marks[d])
        # the gateway says goodbye before it closes (GOAWAY)
        goaway = d.find("Gateway is going away", since=marks[d])
        if not goaway:
            h.note("%s saw a disconnect but no GOAWAY" % d.name)
        d.wait_for_log("Reconnecting to gateway", 2 + h.slack(), since=marks[d])
        h.check(d.alive(), "%s stopped with the gateway" % d.name)


def test_sigterm_agent(env):
    gw = env.gateway()
    a = env.agent("leaving", group_id="g", replicas=2)
    stay = env.agent("staying", group_id="g")
    mark = gw.mark()
    rc, secs = stop_and_time(a)
    h.check(rc == 0, "agent exited %d after SIGTERM:\n%s" % (rc, a.tail()))
    h.check(secs < 2 + h.slack(), "agent took %.2f s to stop" % secs)
    h.check(a.find("Agent stopping"), "no 'Agent stopping' line")
    line = gw.wait_for_log("Client disconnected", 2 + h.slack(), since=mark)
    h.check(line.get("client_id") == "leaving", "Client disconnected names %r" % line)
    h.check(len([l for l in gw.find("Client disconnected", since=mark)
                 if l.get("client_id") == "leaving"]) == 1,
            "'Client disconnected' should be logged once per client, not per tunnel")
    c = env.clients()
    h.check(list(c) == ["staying"] and env.groups()["g"]["tunnels"] == 1,
            "after the agent left: %r" % c)
    h.check(stay.alive() and not stay.find("Disconnected from gateway"),
            "the other agent of the group was disturbed:\n%s" % stay.tail())


def test_sigint_stops_both(env):
    gw = env.gateway()
    a = env.agent("int-agent")
    rc, _ = stop_and_time(a, signal.SIGINT)
    h.check(rc == 0, "agent exited %d after SIGINT" % rc)
    rc, _ = stop_and_time(gw, signal.SIGINT)
    h.check(rc == 0, "gateway exited %d after SIGINT" % rc)


def test_sighup_keeps_running(env):
    gw = env.gateway()
    a = env.agent("hup", group_id="g", replicas=2)
    gmark, amark = gw.mark(), a.mark()
    gw.send_signal(signal.SIGHUP)
    a.send_signal(signal.SIGHUP)
    gw.wait_for_log("SIGHUP received", 2 + h.slack(), since=gmark)
    a.wait_for_log("SIGHUP received", 2 + h.slack(), since=amark)
    time.sleep(1.0)
    h.check(gw.alive() and a.alive(), "a SIGHUP stopped a program")
    h.check(env.clients().get("hup", {}).get("tunnels") == 2, "agent not listed after SIGHUP")
    h.check(not a.find("Disconnected from gateway", since=amark), "SIGHUP dropped a tunnel")
    # and they still stop cleanly afterwards (checked by the clean-up: exit 0)


def test_sigterm_agent_while_retrying(env):
    # nothing listens on env.port: the agent is between attempts
    a = env.agent("lonely", wait=False)
    a.wait_for_log("Reconnecting to gateway", 3 + h.slack(), count=2)
    rc, secs = stop_and_time(a, bound=2 + h.slack())
    h.check(rc == 0, "agent exited %d" % rc)
    # and in the middle of a TLS handshake with a peer that never answers
    srv = env.fake_server()
    b = env.agent("stuck", wait=False, gateway_addr="127.0.0.1:%d" % srv.port,
                  handshake_timeout_ms=60000)
    h.wait_until(lambda: srv.accepted >= 1, 3 + h.slack(), "the agent to connect")
    time.sleep(0.2)
    rc, secs = stop_and_time(b, bound=2 + h.slack())
    h.check(rc == 0, "agent stuck in a handshake exited %d" % rc)


def test_sigterm_gateway_with_stalled_connections(env):
    gw = env.gateway(handshake_timeout_ms=60000)
    env.agent("ok")
    socks = []
    hello = h.client_hello_bytes(os.path.join(env.certs, "ca.crt"))
    for i in range(6):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        if i % 2:
            s.sendall(hello[:40])
        socks.append(s)
    time.sleep(0.3)
    try:
        rc, secs = stop_and_time(gw)
        h.check(rc == 0, "gateway exited %d with stalled connections open:\n%s" % (rc, gw.tail()))
    finally:
        for s in socks:
            s.close()


if __name__ == "__main__":
    h.run([
        test_sigterm_gateway,
        test_sigterm_agent,
        test_sigint_stops_both,
        test_sighup_keeps_running,
        test_sigterm_agent_while_retrying,
        test_sigterm_gateway_with_stalled_connections,
    ])
