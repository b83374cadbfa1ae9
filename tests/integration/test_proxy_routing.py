#!/usr/bin/env python3
"""Group routing through both proxies: fallback to the default group, no
agent at all, wrong proxy credentials, group names with dots, round-robin.

Each case starts its own gateway (user / proxy_pass) and agents, so the
streams_total deltas it checks are its own.
"""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WRONG_PASS = "itest-Proxy-Wrong-93fa1"


def target(env):
    t = h.HttpTarget("127.0.0.1", name="A")
    env.servers.append(t)
    return t


def curl_http(env, gw, user, url, password=h.PROXY_PASS, extra=()):
    return h.curl(["-x", "http://%s:%s@127.0.0.1:%d" % (user, password, gw.http_port),
                   "-w", "\n%{http_code}"] + list(extra) + [url], timeout=20)


def curl_socks(env, gw, user, url, password=h.PROXY_PASS):
    return h.curl(["--socks5-hostname", "%s:%s@127.0.0.1:%d" % (user, password, gw.socks_port),
                   url], timeout=20)


def split_code(stdout):
    body, _, code = stdout.rpartition(b"\n")
    return body, int(code or 0)


# ---- fallback --------------------------------------------------------------------------

def test_unknown_group_falls_back_to_default(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "prod", "production")
    h.proxy_agent(env, "def")
    t = target(env)
    for proto in ("http", "socks5"):
        before = h.stream_totals(env)
        mark = gw.mark()
        if proto == "http":
            r = curl_http(env, gw, "user.nonexistent", t.url("/info"))
            body, code = split_code(r.stdout)
            h.check(r.returncode == 0 and code == 200, "HTTP: rc %d code %d %r"
                    % (r.returncode, code, r.stderr))
        else:
            r = curl_socks(env, gw, "user.nonexistent", t.url("/info"))
            body = r.stdout
            h.check(r.returncode == 0, "SOCKS5: rc %d %r" % (r.returncode, r.stderr))
        h.check(json.loads(body)["server"] == "A", "%s: answer %r" % (proto, body[:200]))
        h.expect_streams(env, before, {"def": 1}, proto + " user.nonexistent")
        # the spec's text, as its "Fallback Logging" shows it and a grep finds it
        spec = "WARN No clients available in group group=nonexistent, falling back to default"
        warn = gw.find(spec, mark)
        h.check(warn and warn[-1].level == "WARN" and warn[-1].get("group") == "nonexistent",
                "%s: expected %r: %r\n%s" % (proto, spec, warn, gw.tail(10)))
        sel = gw.find("Selected client from default group", mark)
        h.check(sel and sel[-1].get("client_id") == "def",
                "%s: expected 'Selected client from default group client_id=def': %r"
                % (proto, sel))


def test_empty_group_is_the_default_group(env):
    """'user.' and 'user' both mean the default group (no fallback WARN)."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "prod", "production")
    h.proxy_agent(env, "def")
    t = target(env)
    for user in ("user", "user."):
        before = h.stream_totals(env)
        mark = gw.mark()
        r = curl_http(env, gw, user, t.url("/info"))
        h.check(split_code(r.stdout)[1] == 200, "%s: %r" % (user, r.stdout[-200:]))
        r = curl_socks(env, gw, user, t.url("/info"))
        h.check(r.returncode == 0, "%s SOCKS5: %r" % (user, r.stderr))
        h.expect_streams(env, before, {"def": 2}, "user %r" % user)
        h.check(not gw.find("falling back", mark), "%r is the default group: no fallback" % user)


def test_group_is_the_text_after_the_first_dot(env):
    """user.prod.eu selects group 'prod.eu', not 'prod' and not 'eu'."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "eu", "prod.eu")
    h.proxy_agent(env, "prod", "prod")
    h.proxy_agent(env, "def")
    t = target(env)
    before = h.stream_totals(env)
    mark = gw.mark()
    r = curl_http(env, gw, "user.prod.eu", t.url("/info"))
    h.check(split_code(r.stdout)[1] == 200, "HTTP: %r" % r.stdout[-200:])
    r = curl_socks(env, gw, "user.prod.eu", t.url("/info"))
    h.check(r.returncode == 0, "SOCKS5: %r" % r.stderr)
    h.expect_streams(env, before, {"eu": 2}, "user.prod.eu")
    got = gw.find("Gateway received request", mark)
    h.check(got and all(l.get("group") == "prod.eu" for l in got), "groups logged: %r" % got)


def test_round_robin_within_a_group(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "p1", "production")
    h.proxy_agent(env, "p2", "production")
    h.proxy_agent(env, "def")
    t = target(env)
    before = h.stream_totals(env)
    for i in range(10):
        if i % 2:
            r = curl_socks(env, gw, "user.production", t.url("/info"))
            h.check(r.returncode == 0, "SOCKS5 %d: %r" % (i, r.stderr))
        else:
            r = curl_http(env, gw, "user.production", t.url("/info"))
            h.check(split_code(r.stdout)[1] == 200, "HTTP %d: %r" % (i, r.stdout[-200:]))
    h.expect_streams(env, before, {"p1": 5, "p2": 5}, "10 requests over two production agents")


def test_streams_spread_over_replicas(env):
    """One agent with replicas=3: its streams use more than one tunnel.
    Stream ids are per tunnel (each starts at 1), so 9 streams over one
    tunnel would be ids 1..9; spread over three they repeat."""
    gw = h.proxy_gateway(env)
    agent = h.proxy_agent(env, "multi", "production", replicas=3)
    t = target(env)
    mark = agent.mark()
    for i in range(9):
        r = curl_http(env, gw, "user.production", t.url("/info"))
        h.check(split_code(r.stdout)[1] == 200, "request %d: %r" % (i, r.stdout[-200:]))
    ids = [int(l.get("stream", 0)) for l in agent.find("Stream open requested", mark)]
    h.check(len(ids) == 9, "the agent should log 9 stream opens: %r" % ids)
    h.check(max(ids) < 9 and len(set(ids)) < 9,
            "all 9 streams went over one of the 3 tunnels (stream ids %r)" % ids)


def test_spec_geographic_groups(env):
    """The spec's "Geographic Distribution" example, verbatim but for the
    address: curl -x http://user.us-east:pass@gateway:8080 URL."""
    gw = h.proxy_gateway(env, password="pass")
    for cid, group in (("us-east-001", "us-east"), ("eu-west-001", "eu-west"),
                       ("ap-001", "asia-pacific")):
        h.proxy_agent(env, cid, group)
    t = target(env)
    for user, cid in (("user.us-east", "us-east-001"), ("user.eu-west", "eu-west-001"),
                      ("user.asia-pacific", "ap-001")):
        before = h.stream_totals(env)
        r = curl_http(env, gw, user, t.url("/info"), password="pass")
        h.check(split_code(r.stdout)[1] == 200, "%s: %r %r" % (user, r.stdout[-200:], r.stderr))
        r = curl_socks(env, gw, user, t.url("/info"), password="pass")
        h.check(r.returncode == 0, "%s SOCKS5: %r" % (user, r.stderr))
        h.expect_streams(env, before, {cid: 2}, user)


# ---- no agent to route to ---------------------------------------------------------------------

def test_no_default_agent(env):
    """No agent in the group nor in the default group: SOCKS5 REP 0x03, HTTP
    503 (absolute URI and CONNECT) with the spec's text."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "prod", "production")
    t = target(env)
    before = h.stream_totals(env)
    for user, text in (("user.nonexistent",
                        "no clients available in group 'nonexistent' or default group"),
                       ("user", "no clients available in the default group"),
                       ("user.", "no clients available in the default group")):
        mark = gw.mark()
        r = h.socks5_open(gw.socks_port, "127.0.0.1", t.port, user=user)
        try:
            h.check(r.auth_status == 0 and r.rep == 0x03,
                    "SOCKS5 %s: expected REP 0x03 (network unreachable): %r" % (user, r))
            how, _, _ = h.read_until_closed(r.sock, 5)
        finally:
            r.sock.close()
        # HTTP, absolute URI
        r = curl_http(env, gw, user, t.url("/info"))
        body, code = split_code(r.stdout)
        h.check(code == 503, "HTTP %s: status %d, expected 503: %r" % (user, code, body))
        h.check(text.encode() in body, "HTTP %s: 503 body %r should say %r" % (user, body, text))
        # HTTP, CONNECT
        s, status, headers, head, rest = h.http_connect(gw.http_port, "127.0.0.1", t.port,
                                                        user=user)
        try:
            body = h.read_http_body(s, headers, rest, timeout=5)
        finally:
            s.close()
        h.check(status == 503 and text.encode() in body,
                "CONNECT %s: %r %r, expected 503 with %r" % (user, status, body, text))
        # (the DEBUG close line of the previous user's connection may come
        # after the mark: look for the ERROR line itself)
        lines = gw.find(text, mark)
        h.check(any(l.level == "ERROR" for l in lines), "gateway should log ERROR %r: %r"
                % (text, lines))
        # curl reports the failures too
        r = curl_socks(env, gw, user, t.url("/info"))
        h.check(r.returncode != 0, "curl --socks5 should fail")
    h.expect_streams(env, before, {}, "no agent: no stream")
    h.check(not t.requests, "the target must not be reached: %r" % t.requests)


def test_no_agent_at_all(env):
    gw = h.proxy_gateway(env)
    t = target(env)
    r = h.socks5_open(gw.socks_port, "localhost", t.port, user="user.production")
    try:
        h.check(r.rep == 0x03, "SOCKS5 with no agent: %r" % r)
    finally:
        r.sock.close()
    r = curl_http(env, gw, "user.production", t.url("/info"))
    body, code = split_code(r.stdout)
    h.check(code == 503 and b"no clients available in group 'production' or default group"
            in body, "HTTP with no agent: %d %r" % (code, body))


# ---- wrong credentials ---------------------------------------------------------------------

def test_wrong_password(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "prod", "production")
    h.proxy_agent(env, "def")
    t = target(env)
    before = h.stream_totals(env)
    for user, password in (("user.production", WRONG_PASS), ("user", WRONG_PASS),
                           ("intruder.production", h.PROXY_PASS)):
        # SOCKS5: RFC 1929 status 0x01, then close, no CONNECT reply
        r = h.socks5_open(gw.socks_port, "127.0.0.1", t.port, user=user, password=password)
        try:
            h.check(r.method == 0x02 and r.auth_status not in (None, 0),
                    "SOCKS5 %r/%r: expected auth failure: %r" % (user, password, r))
            h.check(r.auth_status == 0x01, "SOCKS5 auth status %r, expected 0x01" % r.auth_status)
            h.check(r.rep is None, "no CONNECT reply after a failed auth: %r" % r)
            how, _, _ = h.read_until_closed(r.sock, 5)
        finally:
            r.sock.close()
        # HTTP absolute URI: 407 + Proxy-Authenticate
        r = curl_http(env, gw, user, t.url("/info"), password=password, extra=["-i"])
        body, code = split_code(r.stdout)
        h.check(code == 407, "HTTP %r/%r: status %d, expected 407" % (user, password, code))
        h.check(b"\nProxy-Authenticate: Basic" in body.replace(b"\r\n", b"\n"),
                "407 without 'Proxy-Authenticate: Basic': %r" % body)
        # CONNECT
        s, status, headers, head, rest = h.http_connect(gw.http_port, "127.0.0.1", t.port,
                                                        user=user, password=password)
        s.close()
        h.check(status == 407 and headers.get("proxy-authenticate", "").startswith("Basic"),
                "CONNECT %r/%r: %r\n%s" % (user, password, status, head))
    # no credentials at all
    s, status, headers, head, rest = h.http_connect(gw.http_port, "127.0.0.1", t.port, user=None)
    s.close()
    h.check(status == 407, "CONNECT without credentials: %r" % status)
    r = h.curl(["-x", "http://127.0.0.1:%d" % gw.http_port, "-w", "\n%{http_code}",
                t.url("/info")], timeout=20)
    h.check(split_code(r.stdout)[1] == 407, "no credentials: %r" % r.stdout[-100:])
    h.expect_streams(env, before, {}, "wrong credentials must open no stream")
    h.check(not t.requests, "the target must not be reached: %r" % t.requests)
    # 3 wrong pairs x (SOCKS5, GET, CONNECT); the two requests without
    # credentials are challenges, not failures (test_replies.py)
    fails = gw.find("Proxy authentication failed")
    h.check(len(fails) == 9 and all(l.level == "WARN" for l in fails),
            "each refusal should log WARN 'Proxy authentication failed': %d" % len(fails))
    asked = gw.find("Proxy credentials required")
    h.check(len(asked) == 2 and all(l.level == "INFO" for l in asked),
            "each request without credentials: INFO 'Proxy credentials required': %r" % asked)
    for d in env.daemons:
        h.check(WRONG_PASS not in d.log(), "%s logged the password" % d.name)
        h.check(h.PROXY_PASS not in d.log(), "%s logged the proxy password" % d.name)


def test_right_password_after_wrong_one_same_connection(env):
    """HTTP: after a 407 a new connection with the right password works (no
    state leaks between connections; the retry on the same connection is
    test_replies.py's)."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "def")
    t = target(env)
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                   % (t.url("/info"), h.basic_auth("user", WRONG_PASS))).encode())
        status, headers, head, rest = h.read_http_head(s)
        h.check(status == 407, "status %r" % status)
    finally:
        s.close()
    r = curl_http(env, gw, "user", t.url("/info"))
    h.check(split_code(r.stdout)[1] == 200, "right password afterwards: %r" % r.stdout[-200:])


if __name__ == "__main__":
    h.run([
        test_unknown_group_falls_back_to_default,
        test_empty_group_is_the_default_group,
        test_group_is_the_text_after_the_first_dot,
        test_round_robin_within_a_group,
        test_streams_spread_over_replicas,
        test_spec_geographic_groups,
        test_no_default_agent,
        test_no_agent_at_all,
        test_wrong_password,
        test_right_password_after_wrong_one_same_connection,
    ])
