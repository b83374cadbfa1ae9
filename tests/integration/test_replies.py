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


if __name__ == "__main__":
    h.run([
        test_no_credentials_is_a_challenge_not_a_failure,
    ])
