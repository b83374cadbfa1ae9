#!/usr/bin/env python3
"""Target failures through both proxies: each maps to its SOCKS5 REP and
HTTP status (DESIGN non-negotiable 1, docs/protocol.md "Open reasons"), and
the answer waits for the agent's verdict.

  refused       a bound port nobody listens on       0x05  502
  unresolvable  a name the agent's resolver rejects  0x04  502
  unreachable   127.255.255.255 (ENETUNREACH)        0x04  502
  silent        a listener whose accept queue is     0x06  504
                full: SYNs are dropped, the agent's
                connect_timeout_ms (1 s here) expires
  forbidden     the agent's forbidden_hosts          0x02  403

No packet leaves loopback: the unresolvable name starts with '-', which
glibc refuses before asking any DNS server (a plain "nonexistent.invalid"
would be sent to the resolver in /etc/resolv.conf), and connect() to a
broadcast address fails with ENETUNREACH without sending anything.
"""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CONNECT_TIMEOUT_MS = 1000
UNRESOLVABLE = "-nonexistent.invalid"

# kind -> (SOCKS5 REP, HTTP status, agent's reason name)
EXPECT = {
    "refused": (0x05, 502, "REFUSED"),
    "refused6": (0x05, 502, "REFUSED"),
    "unresolvable": (0x04, 502, "DNS_FAILED"),
    "unreachable": (0x04, 502, "HOST_UNREACHABLE"),
    "silent": (0x06, 504, "TIMEOUT"),
}


def setup(env):
    env.gwp = h.proxy_gateway(env)
    env.agent_d = h.proxy_agent(env, "def", connect_timeout_ms=CONNECT_TIMEOUT_MS)
    # bound, never listening: connects are refused, the port stays ours
    env.closed4 = socket.socket()
    env.closed4.bind(("127.0.0.1", 0))
    env.closed6 = socket.socket(socket.AF_INET6)
    env.closed6.bind(("::1", 0))
    env.servers += [env.closed4, env.closed6]
    env.blackhole = h.Blackhole()
    env.servers.append(env.blackhole)
    env.targets = {
        "refused": ("127.0.0.1", env.closed4.getsockname()[1]),
        "refused6": ("::1", env.closed6.getsockname()[1]),
        "unresolvable": (UNRESOLVABLE, 80),
        "unreachable": ("127.255.255.255", 80),
        "silent": ("127.0.0.1", env.blackhole.port),
    }


def socks5_case(env, kind):
    host, port = env.targets[kind]
    rep, _status, reason = EXPECT[kind]
    mark = env.agent_d.mark()
    t0 = time.monotonic()
    r = h.socks5_open(env.gwp.socks_port, host, port, timeout=10)
    elapsed = time.monotonic() - t0
    try:
        h.check(r.auth_status == 0, "SOCKS5 auth: %r" % r)
        h.check(r.rep == rep, "SOCKS5 CONNECT to %s (%s:%d): REP %r, expected 0x%02x\n%s"
                % (kind, host, port, r.rep, rep, env.gwp.tail(6)))
        how, _, _ = h.read_until_closed(r.sock, 5)
    finally:
        r.sock.close()
    check_agent_reason(env, mark, kind, reason)
    return elapsed


def http_case(env, kind, connect):
    host, port = env.targets[kind]
    _rep, status, reason = EXPECT[kind]
    mark = env.agent_d.mark()
    t0 = time.monotonic()
    if connect:
        s, got, headers, head, rest = h.http_connect(env.gwp.http_port, host, port, timeout=10)
    else:
        s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=10)
        authority = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        s.sendall(("GET http://%s/info HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n"
                   % (authority, authority, h.basic_auth(h.PROXY_USER, h.PROXY_PASS))).encode())
        got, headers, head, rest = h.read_http_head(s)
    elapsed = time.monotonic() - t0
    try:
        body = h.read_http_body(s, headers, rest, timeout=5)
    finally:
        s.close()
    what = "%s to %s (%s:%d)" % ("CONNECT" if connect else "GET", kind, host, port)
    h.check(got == status, "%s: status %r, expected %d\n%s\n%s" % (what, got, status, head,
                                                                   env.gwp.tail(6)))
    h.check(0 < len(body) < 512 and headers.get("content-type", "").startswith("text/plain"),
            "%s: expected a short text body: %r %r" % (what, headers, body))
    check_agent_reason(env, mark, kind, reason)
    return elapsed


def check_agent_reason(env, mark, kind, reason):
    lines = env.agent_d.find("Target connection failed", mark)
    h.check(lines, "agent: no 'Target connection failed' for %s:\n%s" % (kind,
                                                                       env.agent_d.tail(5)))
    h.check(lines[-1].get("reason") == reason, "agent: reason %r for %s, expected %s"
            % (lines[-1].get("reason"), kind, reason))


def run_kind(env, kind):
    before = h.stream_totals(env)
    times = [socks5_case(env, kind), http_case(env, kind, False), http_case(env, kind, True)]
    h.expect_streams(env, before, {"def": 3}, kind)
    # nothing left open on the agent's account
    h.wait_until(lambda: env.clients()["def"]["streams_active"] == 0, 5,
                 "streams_active to return to 0 after %s" % kind)
    h.note("%s: answered in %s s" % (kind, ", ".join("%.2f" % t for t in times)))
    return times


def test_refused(env):
    for t in run_kind(env, "refused"):
        h.check(t < 2, "a refused connect should be answered at once, took %.2f s" % t)


def test_refused_ipv6(env):
    run_kind(env, "refused6")


def test_unresolvable(env):
    run_kind(env, "unresolvable")


def test_unreachable(env):
    run_kind(env, "unreachable")


def test_silent_target_times_out(env):
    """The answer waits for the agent's connect timeout, then 0x06 / 504."""
    for t in run_kind(env, "silent"):
        h.check(CONNECT_TIMEOUT_MS / 1000 * 0.9 <= t <= CONNECT_TIMEOUT_MS / 1000 + 3 + h.slack(),
                "a silent target should be answered after connect_timeout_ms (%d ms), took "
                "%.2f s" % (CONNECT_TIMEOUT_MS, t))


def test_curl_sees_the_failures(env):
    """curl's view: HTTP codes through -x, a failed CONNECT through -p, and
    curl --socks5-hostname failing (not hanging)."""
    def url(kind):
        host, port = env.targets[kind]
        return "http://%s:%d/" % ("[%s]" % host if ":" in host else host, port)
    px = "http://%s:%s@127.0.0.1:%d" % (h.PROXY_USER, h.PROXY_PASS, env.gwp.http_port)
    for kind in ("refused", "unreachable", "silent"):
        _rep, status, _reason = EXPECT[kind]
        r = h.curl(["-g", "-x", px, "-o", "/dev/null", "-w", "%{http_code}", url(kind)],
                   timeout=20)
        h.check(r.stdout == str(status).encode(), "curl -x %s: %r, expected %d" % (
            kind, r.stdout, status))
        r = h.curl(["-g", "-p", "-x", px, "-o", "/dev/null", "-w", "%{http_connect}", url(kind)],
                   timeout=20)
        h.check(r.returncode != 0 and r.stdout == str(status).encode(),
                "curl -p -x %s: rc %d, CONNECT answered %r, expected %d" % (
                    kind, r.returncode, r.stdout, status))
        r = h.curl(["-g", "--socks5-hostname", "%s:%s@127.0.0.1:%d" % (
            h.PROXY_USER, h.PROXY_PASS, env.gwp.socks_port), url(kind)], timeout=20)
        h.check(r.returncode != 0, "curl --socks5-hostname %s should fail" % kind)


def test_forbidden_target(env):
    """An agent whose forbidden_hosts covers the target: SOCKS5 REP 0x02,
    HTTP 403 (absolute URI and CONNECT), and the target never sees a
    connection (the spec's production example forbids localhost and
    127.0.0.1)."""
    if "locked" not in env.clients():
        env.locked = h.proxy_agent(env, "locked", "locked",
                                   forbidden_hosts="localhost, 127.0.0.1, ::1")
    t = h.RawServer(lambda c: c.sendall(b"should not be reached\n"))
    env.servers.append(t)
    user = "user.locked"
    before = h.stream_totals(env)
    for host in ("127.0.0.1", "localhost"):
        mark = env.locked.mark()
        r = h.socks5_open(env.gwp.socks_port, host, t.port, user=user)
        try:
            h.check(r.rep == 0x02, "SOCKS5 to forbidden %s: %r, expected REP 0x02" % (host, r))
        finally:
            r.sock.close()
        s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=10)
        try:
            s.sendall(("GET http://%s:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                       % (host, t.port, h.basic_auth(user, h.PROXY_PASS))).encode())
            status, headers, head, rest = h.read_http_head(s)
        finally:
            s.close()
        h.check(status == 403, "GET to forbidden %s: status %r, expected 403" % (host, status))
        s, status, headers, head, rest = h.http_connect(env.gwp.http_port, host, t.port,
                                                        user=user)
        s.close()
        h.check(status == 403, "CONNECT to forbidden %s: status %r, expected 403" % (host, status))
        denied = env.locked.find("Target denied by host rules", mark)
        h.check(len(denied) == 3, "the agent should log 3 denials for %s: %r" % (host, denied))
    h.expect_streams(env, before, {"locked": 6}, "forbidden targets")
    h.check(t.accepted == 0, "the forbidden target was connected to %d times" % t.accepted)


# ---- bad input and slow handshakes (DESIGN non-negotiables 8 and 9) ---------------------

def closed_within(sock, limit):
    """Seconds until the gateway closed sock (EOF or reset); fails after limit."""
    how, seconds, data = h.read_until_closed(sock, limit)
    return seconds, data


def test_handshake_deadline(env):
    """A client that stalls in the SOCKS5 or HTTP handshake is closed after
    [gateway] handshake_timeout_ms (the docs: "Time allowed for a TLS, SOCKS5
    or HTTP handshake"), not kept for ever."""
    limit = h.HANDSHAKE_TIMEOUT + 2 + h.slack()
    cases = [("socks5", b""), ("socks5", b"\x05\x01"), ("socks5", b"\x05\x01\x02\x01\x04us"),
             ("http", b""), ("http", b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")]
    socks = []
    t0 = time.monotonic()
    for proto, first in cases:
        port = env.gwp.socks_port if proto == "socks5" else env.gwp.http_port
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first:
            s.sendall(first)
        socks.append((proto, first, s))
    late = []
    try:
        for proto, first, s in socks:
            # wait long enough to see the actual deadline, then judge it
            left = max(0.1, 15 - (time.monotonic() - t0))
            try:
                h.read_until_closed(s, left)
                closed = "closed after %.1f s" % (time.monotonic() - t0)
                ok = time.monotonic() - t0 <= limit
            except h.TestFailure:
                closed, ok = "still open after 15 s", False
            if not ok:
                late.append("%s after %r: %s" % (proto, first, closed))
    finally:
        for _, _, s in socks:
            s.close()
    h.check(not late, "stalled handshakes must be closed after handshake_timeout_ms = %d ms "
            "(limit %.1f s with slack):\n%s" % (h.HANDSHAKE_TIMEOUT_MS, limit, "\n".join(late)))


def test_garbage_is_refused_cleanly(env):
    """Wrong protocol, oversized and malformed input: a clear answer or a
    close, quickly, never a hang."""
    auth = "Proxy-Authorization: %s\r\n" % h.basic_auth(h.PROXY_USER, h.PROXY_PASS)
    http_cases = [
        (b"\x05\x01\x00", (400,)),                                   # SOCKS5 on the HTTP port
        (b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n" + auth.encode() +
         b"X-Big: " + b"a" * 40000 + b"\r\n\r\n", (431,)),             # head too large
        (b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n" + auth.encode() +
         b"".join(b"X-N%d: v\r\n" % i for i in range(150)) + b"\r\n", (431,)),  # too many fields
        (b"GET /relative HTTP/1.1\r\nHost: x\r\n" + auth.encode() + b"\r\n", (400,)),
        (b"GET http://127.0.0.1:1/ HTTP/9.9\r\nHost: x\r\n\r\n", (400, 505)),
        (b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n" + auth.encode() +
         b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", (400,)),  # smuggling
    ]
    problems = []
    for blob, statuses in http_cases:
        s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=5)
        t0 = time.monotonic()
        try:
            try:
                s.sendall(blob)
            except OSError:
                pass
            try:
                seconds, data = closed_within(s, 5)
            except h.TestFailure:
                problems.append("HTTP port given %r...: no answer and still open after 5 s"
                                % blob[:40])
                continue
        finally:
            s.close()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        if not (m and int(m.group(1)) in statuses):
            problems.append("HTTP port given %r...: answered %r after %.1f s, expected %r "
                            "then a close" % (blob[:40], data[:80], time.monotonic() - t0,
                                              statuses))
    socks_cases = [
        b"GET / HTTP/1.1\r\n\r\n",           # HTTP on the SOCKS5 port
        b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",  # SOCKS4
        b"\x05\x00",                         # no methods
        b"\x05\x01\x02\x01\x00\x00",          # empty user name and password
    ]
    for blob in socks_cases:
        s = socket.create_connection(("127.0.0.1", env.gwp.socks_port), timeout=5)
        try:
            s.sendall(blob)
            try:
                seconds, data = closed_within(s, 5)
            except h.TestFailure:
                problems.append("SOCKS5 port given %r: still open after 5 s" % blob)
                continue
        finally:
            s.close()
        # a malformed user/password message is bad credentials: 01 01
        if len(data) > 2 and data != b"\x05\x02\x01\x01":
            problems.append("SOCKS5 port given %r: answered %r" % (blob, data))
    h.check(not problems, "bad input not refused cleanly:\n" + "\n".join(problems))
    h.check(env.gwp.alive() and env.agent_d.alive(), "a daemon died")


def test_still_serves_after_failures(env):
    """The failures left the agent and gateway healthy."""
    t = h.HttpTarget("127.0.0.1", name="A")
    env.servers.append(t)
    r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", t.port)
    try:
        h.check(r.rep == 0, "SOCKS5 after the failures: %r" % r)
    finally:
        r.sock.close()
    r = h.curl(["-x", "http://user:proxy_pass@127.0.0.1:%d" % env.gwp.http_port, t.url("/info")],
               timeout=20)
    h.check(r.returncode == 0 and b'"server": "A"' in r.stdout, "HTTP after the failures: %r"
            % r.stdout)


if __name__ == "__main__":
    h.run([
        test_refused,
        test_refused_ipv6,
        test_unresolvable,
        test_unreachable,
        test_silent_target_times_out,
        test_curl_sees_the_failures,
        test_forbidden_target,
        test_handshake_deadline,
        test_garbage_is_refused_cleanly,
        test_still_serves_after_failures,
    ], fixture=setup)
