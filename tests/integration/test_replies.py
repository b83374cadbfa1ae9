#!/usr/bin/env python3
"""The gateway's replies and log lines that users and operators asked for
(issue 10, item 6): a request without credentials is a challenge, not a
failure; a 407 keeps the connection for the retry; the spec's fallback WARN
text; failure lines that say who, where and through which agent; the 503
text of the default group; the keep-alive deadline between requests; the
400 for an unbracketed IPv6 target.

Each case starts its own gateway (user / proxy_pass) and agents.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WRONG_PASS = "itest-Replies-Wrong-5b02e"


def target(env):
    t = h.HttpTarget("127.0.0.1", name="A")
    env.servers.append(t)
    return t


def send_request(sock, line, auth=None, extra=""):
    """One request head on sock; auth (user, password) or None."""
    head = line + "\r\nHost: x\r\n" + extra
    if auth:
        head += "Proxy-Authorization: %s\r\n" % h.basic_auth(*auth)
    sock.sendall((head + "\r\n").encode())


def read_reply(sock):
    """(status, headers, body) of one reply with a Content-Length body."""
    status, headers, text, rest = h.read_http_head(sock)
    h.check(status is not None, "no reply head: %r" % text)
    return status, headers, h.read_http_body(sock, headers, rest, timeout=10)


# ---- credentials -----------------------------------------------------------------------

def test_no_credentials_is_a_challenge_not_a_failure(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "def")
    t = target(env)
    mark = gw.mark()
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        send_request(s, "GET %s HTTP/1.1" % t.url("/info"))
        status, headers, _ = read_reply(s)
    finally:
        s.close()
    h.check(status == 407 and headers.get("proxy-authenticate", "").startswith("Basic"),
            "no credentials: %r %r" % (status, headers))
    # curl --proxy-anyauth: first without credentials, then with them
    r = h.curl(["--proxy-anyauth", "-x", "http://127.0.0.1:%d" % gw.http_port,
                "-U", "user:%s" % h.PROXY_PASS, t.url("/info")], timeout=20)
    h.check(r.returncode == 0 and json.loads(r.stdout)["server"] == "A",
            "curl --proxy-anyauth: rc %d %r" % (r.returncode, r.stderr))
    asked = gw.wait_for_log("Proxy credentials required", 3, since=mark, count=2)
    h.check(asked.level == "INFO" and asked.get("reason") == "no credentials",
            "a request without credentials: %r" % asked)
    h.check(not gw.find("Proxy authentication failed", mark),
            "no credentials is not an authentication failure:\n%s"
            % "\n".join(l.raw for l in gw.find("Proxy authentication failed", mark)))
    # wrong credentials still are
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        send_request(s, "GET %s HTTP/1.1" % t.url("/info"), auth=("user", WRONG_PASS))
        status, _, _ = read_reply(s)
    finally:
        s.close()
    h.check(status == 407, "wrong password: %r" % status)
    fail = gw.wait_for_log("Proxy authentication failed", 3, since=mark)
    h.check(fail.level == "WARN" and fail.get("user") == "user",
            "wrong credentials: WARN 'Proxy authentication failed': %r" % fail)
    h.check(WRONG_PASS not in gw.log(), "the gateway logged the password")



def expect_407_kept(sock, line, auth):
    send_request(sock, line, auth=auth)
    status, headers, _ = read_reply(sock)
    h.check(status == 407 and headers.get("connection") == "keep-alive",
            "%r with credentials %r: %r %r, expected 407 keep-alive"
            % (line, auth and auth[0], status, headers))


def test_407_keeps_the_connection_for_the_retry(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "def")
    t = target(env)
    # GET: 407, then the retry with credentials on the same connection
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        expect_407_kept(s, "GET %s HTTP/1.1" % t.url("/info"), None)
        send_request(s, "GET %s HTTP/1.1" % t.url("/info"), auth=("user", h.PROXY_PASS))
        status, _, body = read_reply(s)
        h.check(status == 200 and json.loads(body)["server"] == "A",
                "the retry on the same connection: %r %r" % (status, body[:200]))
    finally:
        s.close()
    # CONNECT: the same, then the tunnel works
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        expect_407_kept(s, "CONNECT 127.0.0.1:%d HTTP/1.1" % t.port, ("user", WRONG_PASS))
        send_request(s, "CONNECT 127.0.0.1:%d HTTP/1.1" % t.port, auth=("user", h.PROXY_PASS))
        status, _, _, rest = h.read_http_head(s)
        h.check(status == 200 and rest == b"", "CONNECT retry: %r" % status)
        s.sendall(b"GET /info HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, _, body = read_reply(s)
        h.check(status == 200 and json.loads(body)["server"] == "A",
                "through the CONNECT tunnel: %r %r" % (status, body[:200]))
    finally:
        s.close()
    # not forever: the 10th refusal on one connection closes it
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        seen = []
        for _ in range(10):
            send_request(s, "GET %s HTTP/1.1" % t.url("/info"), auth=("user", WRONG_PASS))
            status, headers, _ = read_reply(s)
            seen.append((status, headers.get("connection")))
        h.check(seen == [(407, "keep-alive")] * 9 + [(407, "close")],
                "10 refusals on one connection: %r" % seen)
        how, _, _ = h.read_until_closed(s, 5)
    finally:
        s.close()
    # curl --proxy-anyauth makes one connection, not two
    r = h.curl(["--proxy-anyauth", "-x", "http://127.0.0.1:%d" % gw.http_port,
                "-U", "user:%s" % h.PROXY_PASS, "-o", "/dev/null",
                "-w", "%{http_code} %{num_connects}", t.url("/info")], timeout=20)
    h.check(r.stdout == b"200 1", "curl --proxy-anyauth: %r (code, connections) %r"
            % (r.stdout, r.stderr))


def test_407_drops_a_small_body_and_closes_after_a_large_one(env):
    """The body of a refused request is never read as a request: a small
    Content-Length body is read and dropped (the connection stays), a
    chunked or larger one ends the connection after the 407."""
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "def")
    t = target(env)
    smuggled = ("GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                % (t.url("/smuggled"), h.basic_auth("user", h.PROXY_PASS)))
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        send_request(s, "POST %s HTTP/1.1" % t.url("/post"),
                     extra="Content-Length: %d\r\n" % len(smuggled))
        s.sendall(smuggled.encode())
        status, headers, _ = read_reply(s)
        h.check(status == 407 and headers.get("connection") == "keep-alive",
                "POST with a small body: %r %r" % (status, headers))
        send_request(s, "GET %s HTTP/1.1" % t.url("/after"), auth=("user", h.PROXY_PASS))
        status, _, body = read_reply(s)
        h.check(status == 200, "the retry after the dropped body: %r %r" % (status, body))
    finally:
        s.close()
    for framing, body in (("Transfer-Encoding: chunked\r\n",
                           "%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)),
                          ("Content-Length: %d\r\n" % (70000 + len(smuggled)),
                           smuggled + "x" * 70000)):
        s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
        try:
            send_request(s, "POST %s HTTP/1.1" % t.url("/post"), extra=framing)
            s.sendall(body.encode())
            status, headers, text, rest = h.read_http_head(s)
            h.check(status == 407 and headers.get("connection") == "close",
                    "%r: %r, expected 407 with Connection: close" % (framing, text))
            how, _, after = h.read_until_closed(s, 5)
            h.check(b"HTTP/1.1 200" not in rest + after,
                    "%r: the body was served as a request: %r" % (framing, after[:300]))
        finally:
            s.close()
    paths = [r["path"] for r in t.requests]
    h.check(not any("/smuggled" in str(p) for p in paths),
            "a refused request's body reached the target: %r" % t.requests)
    h.check(any("/after" in str(p) for p in paths), "the retry did not arrive: %r" % t.requests)


# ---- keep-alive --------------------------------------------------------------------------

def test_keepalive_timeout_between_requests(env):
    """A kept-alive connection waits [proxy.http] keepalive_timeout_ms for
    its next request, not the handshake deadline; a next request that has
    begun has the handshake deadline again (slowloris)."""
    handshake_s, keepalive_s = 1, 4
    gw = h.proxy_gateway(env, handshake_timeout_ms=str(handshake_s * 1000),
                         gw_env={"PROXY_HTTP_KEEPALIVE_TIMEOUT_MS": str(keepalive_s * 1000)})
    h.proxy_agent(env, "def")
    t = target(env)
    auth = ("user", h.PROXY_PASS)
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        send_request(s, "GET %s HTTP/1.1" % t.url("/info"), auth=auth)
        h.check(read_reply(s)[0] == 200, "first request")
        time.sleep(handshake_s * 2.5)  # idle past the handshake deadline
        send_request(s, "GET %s HTTP/1.1" % t.url("/info"), auth=auth)
        status, headers, _ = read_reply(s)
        h.check(status == 200, "a request %.1f s after the last one (handshake_timeout_ms "
                "%d s, keepalive_timeout_ms %d s): %r" % (handshake_s * 2.5, handshake_s,
                                                          keepalive_s, status))
        mark = gw.mark()
        how, secs, _ = h.read_until_closed(s, keepalive_s + 5 + h.slack(3))
        line = gw.wait_for_log("User connection timed out", 3, since=mark)
        h.check(line.get("phase") == "keep-alive", "the idle close: %r" % line)
    finally:
        s.close()
    # a request that has begun: the handshake deadline
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        send_request(s, "GET %s HTTP/1.1" % t.url("/info"), auth=auth)
        h.check(read_reply(s)[0] == 200, "first request")
        mark = gw.mark()
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n" % t.url("/info").encode())
        how, secs, _ = h.read_until_closed(s, keepalive_s + 5 + h.slack(3))
        line = gw.wait_for_log("User connection timed out", 3, since=mark)
        h.check(line.get("phase") == "handshake", "a half-sent head: %r" % line)
    finally:
        s.close()


# ---- failure lines -----------------------------------------------------------------------

def check_failure_line(gw, since, what, user, group, target, client_id, reason):
    lines = gw.find(what, since)
    h.check(lines, "no %r line:\n%s" % (what, gw.tail(20)))
    got = {k: lines[-1].get(k) for k in ("user", "group", "target", "client_id", "reason")}
    want = {"user": user, "group": group, "target": target, "client_id": client_id,
            "reason": reason}
    h.check(got == want, "%s: %r, expected %r" % (what, got, want))


def test_failure_lines_say_who_where_and_which_agent(env):
    gw = h.proxy_gateway(env, fallback_to_default="false")
    # the agent refuses the target: its OPEN_FAIL names it
    h.proxy_agent(env, "prod", "production", forbidden_hosts="127.0.0.1")
    t = target(env)
    where = "127.0.0.1:%d" % t.port
    mark = gw.mark()
    r = h.curl(["-x", "http://user.production:%s@127.0.0.1:%d" % (h.PROXY_PASS, gw.http_port),
                "-w", "%{http_code}", "-o", "/dev/null", t.url("/info")], timeout=20)
    h.check(r.stdout == b"403", "refused by the agent: HTTP %r" % r.stdout)
    check_failure_line(gw, mark, "HTTP request failed", "user.production", "production", where,
                       "prod", "NOT_ALLOWED")
    mark = gw.mark()
    r = h.socks5_open(gw.socks_port, "127.0.0.1", t.port, user="user.production")
    r.sock.close()
    h.check(r.rep == 0x02, "refused by the agent: SOCKS5 %r" % r)
    check_failure_line(gw, mark, "SOCKS5 request failed", "user.production", "production",
                       where, "prod", "NOT_ALLOWED")
    # no agent took it: client_id "-"
    mark = gw.mark()
    r = h.curl(["-x", "http://user.testing:%s@127.0.0.1:%d" % (h.PROXY_PASS, gw.http_port),
                "-w", "%{http_code}", "-o", "/dev/null", t.url("/info")], timeout=20)
    h.check(r.stdout == b"503", "no agent: HTTP %r" % r.stdout)
    check_failure_line(gw, mark, "HTTP request failed", "user.testing", "testing", where, "-",
                       "NET_UNREACHABLE")



# ---- targets -----------------------------------------------------------------------------

def test_unbracketed_ipv6_target_is_a_clear_400(env):
    gw = h.proxy_gateway(env)
    for line in ("GET http://::1:8080/ HTTP/1.1", "CONNECT ::1:443 HTTP/1.1",
                 "GET http://2001:db8::7/x HTTP/1.1"):
        mark = gw.mark()
        s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
        try:
            send_request(s, line, auth=("user", h.PROXY_PASS))
            status, _, body = read_reply(s)
        finally:
            s.close()
        h.check(status == 400 and b"without brackets" in body and b"[v6]:port" in body,
                "%r: %r %r, expected 400 saying the address needs brackets"
                % (line, status, body))
        h.check(not gw.find("Gateway received request", mark), "%r was routed" % line)


if __name__ == "__main__":
    h.run([
        test_no_credentials_is_a_challenge_not_a_failure,
        test_407_keeps_the_connection_for_the_retry,
        test_407_drops_a_small_body_and_closes_after_a_large_one,
        test_keepalive_timeout_between_requests,
        test_failure_lines_say_who_where_and_which_agent,
        test_unbracketed_ipv6_target_is_a_clear_400,
    ])
