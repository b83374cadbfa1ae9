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


# ---- retry inside the group -----------------------------------------------------------

DENY_LOOPBACK = "@loopback"  # forbidden_hosts of an agent that refuses the test targets


def socks_rep(gw, user, host, port):
    r = h.socks5_open(gw.socks_port, host, port, user=user)
    r.sock.close()
    return r.rep


def all_succeed_through_ok(env, gw, before, url, host, port):
    """10 HTTP requests for url and 4 SOCKS5 CONNECTs to host:port by
    user.g all succeed, answered by the target through agent "ok"; returns
    the streams each agent carried since before (h.stream_totals)."""
    for i in range(10):
        r, body, code = curl_http(gw, "user.g", url)
        h.check(r.returncode == 0 and code == 200,
                "HTTP request %d: rc %d code %d %r" % (i, r.returncode, code, r.stderr))
        h.check(json.loads(body)["server"] == "A", "request %d answered %r" % (i, body[:100]))
    for i in range(4):
        rep = socks_rep(gw, "user.g", host, port)
        h.check(rep == 0, "SOCKS5 request %d: REP %r" % (i, rep))
    d = {}

    def counted():
        d.clear()
        d.update(h.stream_delta(before, h.stream_totals(env)))
        return d.get("ok") == 14
    h.wait_until(counted, 3 + h.slack(), "14 streams on ok")
    return d


def test_denying_agent_is_retried_on_the_other(env):
    """One agent's host rules refuse the target: every request still
    succeeds, through the other agent; each retry is logged and counted."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "deny", "g", forbidden_hosts=DENY_LOOPBACK)
    h.proxy_agent(env, "ok", "g")
    t = target(env)
    before = h.stream_totals(env)
    mark = gw.mark()
    d = all_succeed_through_ok(env, gw, before, t.url("/info"), "127.0.0.1", t.port)
    h.check(d.get("deny", 0) >= 1, "the denying agent was never tried: %r" % d)
    retries = gw.find("Retrying the request with another agent of the group", mark)
    h.check(len(retries) == d["deny"],
            "one retry line per denial (%d streams on deny), found %d:\n%s"
            % (d["deny"], len(retries), gw.tail(20)))
    last = retries[-1]
    h.check(last.get("failed_client_id") == "deny" and last.get("client_id") == "ok"
            and last.get("reason") == "NOT_ALLOWED" and last.get("group") == "g"
            and int(last.get("retries_total")) == len(retries),
            "retry line: %r" % last)


SVC = "svc.test"  # resolved by each agent's own hosts_file, never by DNS


def hosts_file(env, name, address):
    path = os.path.join(env.dir, name + ".hosts")
    with open(path, "w") as f:
        f.write("# test hosts file (never /etc/hosts)\n%s %s\n" % (address, SVC))
    return path


def retries_metric(gw):
    m = h.scrape_metrics(gw.metrics_port)
    return m.get(("anyproxy_gateway_open_retries_total", ()), 0)


def test_agent_whose_network_refuses_is_retried_on_the_other(env):
    """Three agents of one group resolve the same name differently (each
    its own hosts_file), so two fail by their network, not by their host
    rules: for "dark" svc.test is 127.0.0.3, where nothing listens
    (REFUSED); for "void" it is 127.255.255.255 (ENETUNREACH, nothing
    sent: HOST_UNREACHABLE); for "ok" it is the target's 127.0.0.1. Every
    request succeeds through "ok"; every stream a failing agent carried is
    one retry, logged with that agent's reason and counted in
    anyproxy_gateway_open_retries_total."""
    gw = h.proxy_gateway(env, metrics=True)
    bad = {"dark": ("127.0.0.3", "REFUSED"), "void": ("127.255.255.255", "HOST_UNREACHABLE")}
    daemons = {cid: h.proxy_agent(env, cid, "g", hosts_file=hosts_file(env, cid, addr))
               for cid, (addr, _) in bad.items()}
    h.proxy_agent(env, "ok", "g", hosts_file=hosts_file(env, "ok", "127.0.0.1"))
    t = target(env)
    url = "http://%s:%d/info" % (SVC, t.port)
    before = h.stream_totals(env)
    retries0 = retries_metric(gw)
    mark = gw.mark()
    d = all_succeed_through_ok(env, gw, before, url, SVC, t.port)
    h.note("streams: %r" % d)
    failures = sum(d.get(cid, 0) for cid in bad)
    for cid in bad:
        h.check(d.get(cid, 0) >= 1, "%s, whose network fails, was never tried: %r" % (cid, d))
    # each agent is picked first only in its turn (a retry does not move the
    # round-robin): 3 failed streams per 3 requests, 28 if every request
    # began with the two failing agents
    h.check(failures <= 14 + 2, "%d failed streams for 14 requests: the failing agents "
            "were picked first out of turn: %r" % (failures, d))
    retries = gw.find("Retrying the request with another agent of the group", mark)
    h.check(len(retries) == failures,
            "one retry line per failed stream (%r), found %d:\n%s"
            % (d, len(retries), gw.tail(20)))
    for line in retries:
        failed = line.get("failed_client_id")
        h.check(failed in bad and line.get("reason") == bad[failed][1] and
                line.get("client_id") not in (None, failed) and line.get("group") == "g" and
                line.get("attempt") in ("2", "3"), "retry line: %r" % line)
    for cid, (_, reason) in bad.items():
        lines = daemons[cid].find("Target connection failed")
        h.check(len(lines) == d[cid] and all(l.get("reason") == reason for l in lines),
                "%s logs one %s per stream (%d): %r" % (cid, reason, d[cid], lines))
    h.check(not gw.find("Every agent of the group failed the request", mark),
            "no request failed everywhere:\n%s" % gw.tail(20))
    moved = retries_metric(gw) - retries0
    h.check(moved == failures, "anyproxy_gateway_open_retries_total moved by %r, want %d"
            % (moved, failures))


def test_denial_everywhere_stays_a_denial(env):
    """Both agents refuse the target: HTTP 403 and SOCKS5 0x02 after both
    were tried; with one denial and one refused connection the denial wins
    (the most specific failure)."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "deny1", "both", forbidden_hosts=DENY_LOOPBACK)
    h.proxy_agent(env, "deny2", "both", forbidden_hosts=DENY_LOOPBACK)
    h.proxy_agent(env, "deny3", "mixed", forbidden_hosts=DENY_LOOPBACK)
    h.proxy_agent(env, "open", "mixed")
    t = target(env)
    closed = h.free_port()  # nothing listens there: the open agent gets REFUSED
    for group, port in (("both", t.port), ("mixed", closed)):
        before = h.stream_totals(env)
        mark = gw.mark()
        r, body, code = curl_http(gw, "user." + group, "http://127.0.0.1:%d/info" % port)
        h.check(code == 403, "%s: HTTP %d, expected 403: %r" % (group, code, body[:200]))
        line = gw.wait_for_log("Every agent of the group failed the request", 2, since=mark)
        h.check(line.get("agents_tried") == "2" and line.get("reason") == "NOT_ALLOWED",
                "%s: %r" % (group, line))
        rep = socks_rep(gw, "user." + group, "127.0.0.1", port)
        h.check(rep == 2, "%s: SOCKS5 REP %r, expected 0x02" % (group, rep))
        d = h.stream_delta(before, h.stream_totals(env))
        h.check(sorted(d.values()) == [2, 2], "%s: each agent tried once per request: %r"
                % (group, d))
    # refused everywhere stays refused (SOCKS5 0x05, HTTP 502)
    h.proxy_agent(env, "r1", "refused")
    h.proxy_agent(env, "r2", "refused")
    h.check(socks_rep(gw, "user.refused", "127.0.0.1", closed) == 5, "refused everywhere")
    r, body, code = curl_http(gw, "user.refused", "http://127.0.0.1:%d/info" % closed)
    h.check(code == 502, "refused everywhere: HTTP %d, expected 502" % code)


def test_hung_agent_costs_one_open_deadline(env):
    """One of two agents is hung (SIGSTOP) and its tunnel has not missed a
    PONG yet (pings every 10 s): the request sent to it is retried on the
    other after open_timeout_ms, the hung tunnel is suspect from then on,
    and all 10 requests succeed, far from ping_timeout_ms."""
    open_ms = 800
    gw = h.proxy_gateway(env, open_timeout_ms=open_ms, ping_interval_ms=10000,
                         ping_timeout_ms=30000)
    h.proxy_agent(env, "live", "g")
    hung = h.proxy_agent(env, "hung", "g")
    t = target(env)
    mark = gw.mark()
    with stopped(hung):
        started = time.monotonic()
        for i in range(10):
            t0 = time.monotonic()
            r, body, code = curl_http(gw, "user.g", t.url("/info"), timeout=20)
            took = time.monotonic() - t0
            h.check(r.returncode == 0 and code == 200,
                    "request %d: rc %d code %d %r" % (i, r.returncode, code, r.stderr))
            h.check(took < open_ms / 1000.0 + 3 + h.slack(),
                    "request %d took %.2f s: more than open_timeout_ms and a margin"
                    % (i, took))
        total = time.monotonic() - started
        h.check(total < 30, "10 requests took %.1f s: waited for ping_timeout_ms" % total)
        line = gw.wait_for_log("Agent did not answer the OPEN in time", 2, since=mark)
        h.check(line.level == "WARN" and line.get("client_id") == "hung", "%r" % line)
        h.check(len(gw.find("Agent did not answer the OPEN in time", mark)) == 1,
                "only the first request should wait for the hung agent:\n%s" % gw.tail(30))
        line = gw.wait_for_log("Tunnel suspect, no new streams until it answers", 2,
                               since=mark)
        h.check(line.get("client_id") == "hung" and "OPEN" in line.get("reason", ""),
                "%r" % line)
        retry = gw.find("Retrying the request with another agent of the group", mark)
        h.check(len(retry) == 1 and retry[0].get("reason") == "TIMEOUT"
                and retry[0].get("client_id") == "live", "retry lines: %r" % retry)
        h.check(env.clients()["hung"]["suspect"] == "0", "apctl: %r" % env.clients()["hung"])
    h.wait_until(lambda: env.clients()["hung"]["suspect"] == "", 4 + h.slack(),
                 "hung's tunnel to answer again after SIGCONT")


def test_open_timeout_everywhere_is_a_timeout(env):
    """Every agent hung: the user gets a timeout (HTTP 504) once each agent
    had its open_timeout_ms, not a closed connection."""
    gw = h.proxy_gateway(env, open_timeout_ms=500, ping_interval_ms=10000,
                         ping_timeout_ms=30000)
    a = h.proxy_agent(env, "a", "g")
    b = h.proxy_agent(env, "b", "g")
    t = target(env)
    with stopped(a), stopped(b):
        r, body, code = curl_http(gw, "user.g", t.url("/info"), timeout=20)
        h.check(code == 504, "HTTP %d, expected 504: %r" % (code, body[:200]))
        # both now suspect: tried anyway rather than refused at once
        r, body, code = curl_http(gw, "user.g", t.url("/info"), timeout=20)
        h.check(code == 504, "second request: HTTP %d, expected 504" % code)
        c = env.clients()
        h.check(c["a"]["suspect"] == "0" and c["b"]["suspect"] == "0", "apctl: %r" % c)
    r, body, code = curl_http(gw, "user.g", t.url("/info"), timeout=20)
    h.check(code == 200, "after SIGCONT: HTTP %d" % code)


if __name__ == "__main__":
    h.run([
        test_replicas_weigh_in_the_spread,
        test_missed_pong_marks_suspect_until_it_answers,
        test_denying_agent_is_retried_on_the_other,
        test_agent_whose_network_refuses_is_retried_on_the_other,
        test_denial_everywhere_stays_a_denial,
        test_hung_agent_costs_one_open_deadline,
        test_open_timeout_everywhere_is_a_timeout,
    ])
