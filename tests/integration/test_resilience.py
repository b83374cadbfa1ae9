#!/usr/bin/env python3
"""Resilience inside a group (issue 11): replicas weigh in the spread of
streams, a request an agent refuses or does not answer goes to the next
agent of its group, and a hung agent leaves the rotation until it answers.

Each case starts its own gateway (user / proxy_pass) and agents.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def target(env, name="A"):
    t = h.HttpTarget("127.0.0.1", name=name)
    env.servers.append(t)
    return t


def curl_http(gw, user, url, timeout=20):
    r = h.curl(["-x", "http://%s:%s@127.0.0.1:%d" % (user, h.PROXY_PASS, gw.http_port),
                "-w", "\n%{http_code}", url], timeout=timeout)
    body, _, code = r.stdout.rpartition(b"\n")
    return r, body, int(code or 0)


def curl_socks(gw, user, url, timeout=20):
    return h.curl(["--socks5-hostname", "%s:%s@127.0.0.1:%d" % (user, h.PROXY_PASS,
                                                                 gw.socks_port), url],
                  timeout=timeout)


# ---- replicas weigh ----------------------------------------------------------------

def test_replicas_weigh_in_the_spread(env):
    """An agent with 3 tunnels carries about 3 times the streams of one
    with 1 (docs/usage.md "Replicas"): the pick goes round the group's
    tunnels, not its clients."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "big", "g", replicas=3)
    h.proxy_agent(env, "small", "g", replicas=1)
    t = target(env)
    before = h.stream_totals(env)
    for i in range(40):
        r, body, code = curl_http(gw, "user.g", t.url("/info"))
        h.check(r.returncode == 0 and code == 200,
                "request %d: rc %d code %d %r" % (i, r.returncode, code, r.stderr))
    d = {}

    def counted():
        d.update(h.stream_delta(before, h.stream_totals(env)))
        return sum(d.values()) == 40
    h.wait_until(counted, 3, "40 streams counted")
    h.check(d.get("big", 0) >= 2 * d.get("small", 0) and d.get("small", 0) > 0,
            "3 replicas against 1 should carry about 30 of 40 streams: %r" % d)


# ---- suspect tunnels ----------------------------------------------------------------

def stopped(daemon):
    """SIGSTOP daemon for a with-block; SIGCONT however the block ends."""
    class _Stopped:
        def __enter__(self):
            daemon.send_signal(signal.SIGSTOP)
            return daemon

        def __exit__(self, *exc):
            daemon.send_signal(signal.SIGCONT)
            return False
    return _Stopped()


def test_missed_pong_marks_suspect_until_it_answers(env):
    """A hung agent (SIGSTOP) misses a PONG: its tunnel is suspect (apctl
    column suspect = its replica), the group's streams go to the other agent,
    and the first frame after SIGCONT clears it."""
    gw = h.proxy_gateway(env)  # ping every 1 s, dead after 10 s of silence
    h.proxy_agent(env, "live", "g")
    hung = h.proxy_agent(env, "hung", "g")
    t = target(env)
    mark = gw.mark()
    with stopped(hung):
        h.wait_until(lambda: env.clients()["hung"]["suspect"] == "0", 4 + h.slack(),
                     "apctl to show hung's tunnel suspect")
        line = gw.wait_for_log("Tunnel suspect, no new streams until it answers", 2,
                               since=mark)
        h.check(line.level == "WARN" and line.get("client_id") == "hung"
                and "PONG" in line.get("reason", ""), "suspect line: %r" % line)
        h.check(env.clients()["live"]["suspect"] == "",
                "live's tunnel must not be suspect: %r" % env.clients()["live"])
        rc, out, _ = env.apctl("clients")
        rows = {r[0]: r for r in h.parse_table(out)[1]}
        h.check(rows["hung"][-1] == "0" and rows["live"][-1] == "-",
                "apctl clients shows the suspect column:\n%s" % out)
        before = h.stream_totals(env)
        for i in range(6):
            r, body, code = curl_http(gw, "user.g", t.url("/info"), timeout=8)
            h.check(r.returncode == 0 and code == 200,
                    "request %d with hung suspect: rc %d code %d" % (i, r.returncode, code))
        h.expect_streams(env, before, {"live": 6}, "streams while hung is suspect")
    h.wait_until(lambda: env.clients()["hung"]["suspect"] == "", 4 + h.slack(),
                 "hung's tunnel to answer again after SIGCONT")
    line = gw.wait_for_log("Tunnel answers again", 2, since=mark)
    h.check(line.get("client_id") == "hung", "answers-again line: %r" % line)


if __name__ == "__main__":
    h.run([
        test_replicas_weigh_in_the_spread,
        test_missed_pong_marks_suspect_until_it_answers,
    ])
