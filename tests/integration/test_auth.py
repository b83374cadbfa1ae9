#!/usr/bin/env python3
"""Gateway credentials: a wrong password is refused clearly on both sides,
the agent retries with growing delays, and no password is ever logged."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WRONG_PASS = "itest-Wrong-Pass-77c1d0"
WRONG_USER = "itest_wrong_user_4e1"


def reconnect_lines(agent, since=0):
    return agent.find("Reconnecting to gateway", since)


def assert_backoff_grows(lines):
    """max_delay_ms: starts at the initial delay, doubles per attempt, stops
    at the cap; every delay is drawn under its ceiling."""
    ceilings = [int(l.get("max_delay_ms", -1)) for l in lines]
    delays = [int(l.get("delay_ms", -1)) for l in lines]
    attempts = [int(l.get("attempt", -1)) for l in lines]
    h.check(ceilings[0] == h.RECONNECT_INITIAL_MS,
            "first max_delay_ms should be reconnect_initial_delay_ms %d: %r"
            % (h.RECONNECT_INITIAL_MS, ceilings))
    for prev, cur in zip(ceilings, ceilings[1:]):
        h.check(cur == min(prev * 2, h.RECONNECT_MAX_MS),
                "max_delay_ms should double up to the cap %d: %r" % (h.RECONNECT_MAX_MS, ceilings))
    h.check(ceilings[-1] == h.RECONNECT_MAX_MS, "never reached the cap: %r" % ceilings)
    for d, c in zip(delays, ceilings):
        h.check(0 <= d <= c, "delay_ms %d outside [0, max_delay_ms %d]" % (d, c))
    for prev, cur in zip(attempts, attempts[1:]):
        h.check(cur == prev + 1, "attempt numbers should count up by one: %r" % attempts)


def assert_no_secret(daemons, secrets):
    for d in daemons:
        text = d.log()
        for s in secrets:
            h.check(s not in text, "%s log contains the password %r" % (d.name, s))


def test_wrong_password(env):
    gw = env.gateway()
    good = env.agent("good", group_id="g")
    bad = env.agent("intruder", group_id="g", wait=False, auth_password=WRONG_PASS)

    err = bad.wait_for_log("Gateway rejected our credentials", 3 + h.slack())
    h.check(err.level == "ERROR", "the credentials error should be an ERROR: %r" % err)
    h.check("auth_password" in err.raw and "[client]" in err.raw,
            "the agent should say which keys to check: %r" % err)

    # keep retrying, delays growing until the cap, and beyond it
    def capped_and_more():
        lines = reconnect_lines(bad)
        caps = [i for i, l in enumerate(lines) if l.get("max_delay_ms") == str(h.RECONNECT_MAX_MS)]
        return lines if caps and len(lines) >= caps[0] + 2 else None
    seen_listed = []

    def watch():
        if "intruder" in env.clients():
            seen_listed.append(time.monotonic())
        return capped_and_more()
    lines = h.wait_until(watch, 10 + h.slack(2.0), "the rejected agent to retry up to the cap")
    h.check(not seen_listed, "apctl listed the rejected agent")
    assert_backoff_grows(lines)
    h.check(len(bad.find("Gateway rejected our credentials")) >= len(lines) - 1,
            "every attempt should be rejected with the credentials error")
    h.check(bad.alive(), "the agent must keep running")

    # the gateway: one WARN per attempt, with who and why, never the secret
    rejected = [l for l in gw.find("Client rejected") if l.get("client_id") == "intruder"]
    h.check(len(rejected) >= 3, "gateway should log 'Client rejected' per attempt: %r" % rejected)
    for l in rejected:
        h.check(l.level == "WARN", "Client rejected should be WARN: %r" % l)
        h.check("password" in l.get("reason", ""), "reason should be about the credentials: %r" % l)
        h.check(l.get("remote_addr", "").startswith("127.0.0.1:"), "remote_addr missing: %r" % l)
    h.check(not [l for l in gw.find("Client connected") if l.get("client_id") == "intruder"],
            "the gateway logged the rejected agent as connected")
    assert_no_secret([gw, good, bad], [WRONG_PASS, h.GW_PASS])

    c = env.clients()
    h.check("intruder" not in c, "apctl lists the rejected agent: %r" % c)
    h.check(c.get("good", {}).get("tunnels") == 1, "the good agent should stay: %r" % c)
    h.check(not good.find("Disconnected from gateway"), "the good agent was disconnected")


def test_wrong_username_same_answer(env):
    # a wrong username and a wrong password look the same from outside
    # (nothing tells an attacker which half was right)
    gw = env.gateway()
    u = env.agent("wrong-user", wait=False, auth_username=WRONG_USER)
    p = env.agent("wrong-pass", wait=False, auth_password=WRONG_PASS)
    u.wait_for_log("Gateway rejected our credentials", 3 + h.slack())
    p.wait_for_log("Gateway rejected our credentials", 3 + h.slack())
    h.wait_until(lambda: len(gw.find("Client rejected")) >= 2, 3, "two rejections")
    reasons = {l.get("client_id"): l.get("reason") for l in gw.find("Client rejected")}
    h.check(reasons.get("wrong-user") == reasons.get("wrong-pass"),
            "the gateway gives different reasons: %r" % reasons)
    h.check(env.clients() == {}, "no client should be listed")
    assert_no_secret([gw, u, p], [WRONG_PASS, h.GW_PASS])


def test_raw_hello_wrong_password(env):
    # what the gateway answers on the wire: ERROR(AUTH), then it closes
    env.gateway()
    with h.tls_connect(env.port, os.path.join(env.certs, "ca.crt")) as s:
        s.sendall(h.hello("raw-client", password=WRONG_PASS))
        how, secs, data = h.read_until_closed(s, h.HANDSHAKE_TIMEOUT + h.slack())
    frames = h.parse_frames(data)
    h.check(frames and frames[0][0] == h.FRAME_ERROR,
            "expected an ERROR frame, got %r (%s)" % (frames, how))
    h.check(h.error_code(frames[0][2]) == h.ERR_AUTH,
            "expected ERROR code AUTH (1), got %d" % h.error_code(frames[0][2]))
    h.check("raw-client" not in env.clients(), "rejected HELLO is listed")


if __name__ == "__main__":
    h.run([test_wrong_password, test_wrong_username_same_answer, test_raw_hello_wrong_password])
