#!/usr/bin/env python3
"""Hostile input on the tunnel port. The gateway must close every bad
connection within handshake_timeout_ms (plus slack) with a logged reason,
keep the healthy agent listed throughout, keep answering apctl, and live.

Raw frames follow docs/protocol.md: an 8-byte header (type, flags = 0,
BE16 payload length, BE32 stream id) and the payload.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DEADLINE = h.HANDSHAKE_TIMEOUT + h.slack(1.0)


def healthy_world(env):
    gw = env.gateway()
    agent = env.agent("healthy", group_id="g", replicas=2)
    env.gw_mark = gw.mark()
    env.agent_mark = agent.mark()
    return gw, agent


class Watcher:
    """Polls apctl in the background while an attack runs: the healthy
    agent must be listed with both tunnels on every poll."""

    def __init__(self, env):
        self.env = env
        self.problems = []
        self.polls = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                c = self.env.clients()
                if c.get("healthy", {}).get("tunnels") != 2:
                    self.problems.append("healthy agent not listed with 2 tunnels: %r" % c)
            except AssertionError as e:
                self.problems.append("apctl failed: %s" % e)
            self.polls += 1
            self._stop.wait(0.1)

    def finish(self):
        self._stop.set()
        self._t.join(10)
        h.check(self.polls > 0, "the watcher never polled apctl")
        h.check(not self.problems, "during the attack: %s" % "; ".join(self.problems[:3]))


def assert_still_healthy(env, gw, agent):
    h.check(gw.alive(), "the gateway died:\n%s" % gw.tail())
    h.check(agent.alive(), "the agent died")
    c = env.clients()
    h.check(c.get("healthy", {}).get("tunnels") == 2, "healthy agent after the attack: %r" % c)
    h.check(list(c) == ["healthy"], "only the healthy agent may be listed: %r" % c)
    h.check(not agent.find("Disconnected from gateway", since=env.agent_mark),
            "the healthy agent was disconnected:\n%s" % agent.tail())
    h.check(not gw.find("Client disconnected", since=env.gw_mark),
            "the gateway dropped a client:\n%s" % gw.tail())
    # peer-chosen bytes (a client_id with a newline, ...) never forge or
    # break a log line: every line of the gateway's log parses
    broken = [l.raw for l in gw.lines()
              if not l.parsed and l.raw.strip() and not l.raw.startswith("--- ")]
    h.check(not broken, "gateway log lines that are not log lines: %r" % broken[:3])


def connect(env):
    return socket.create_connection(("127.0.0.1", env.port), timeout=5)


def attack(env, name, fn):
    """Run fn(env) -> (how, seconds, data) under a Watcher; check the close."""
    gw, agent = env.world
    w = Watcher(env)
    try:
        how, secs, data = fn(env)
    finally:
        w.finish()
    h.check(secs <= DEADLINE, "%s: closed after %.2f s, deadline %.1f s" % (name, secs, DEADLINE))
    assert_still_healthy(env, gw, agent)
    return how, secs, data


def gateway_logged_close(env, since):
    gw = env.world[0]
    line = gw.wait_for_log("Tunnel closed before authentication", 2, since=since)
    h.check(line.get("reason"), "the close should carry a reason: %r" % line)
    return line


# ---- the attacks ----

def test_random_bytes(env):
    env.world = healthy_world(env)
    mark = env.world[0].mark()

    def fn(env):
        s = connect(env)
        t0 = time.monotonic()
        try:
            s.sendall(os.urandom(64 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: fine
        how, secs, data = h.read_until_closed(s, DEADLINE + 1)
        s.close()
        return how, time.monotonic() - t0, data
    attack(env, "64 KiB of random bytes", fn)
    gateway_logged_close(env, mark)


def test_half_client_hello_then_stall(env):
    env.world = healthy_world(env)
    mark = env.world[0].mark()
    hello = h.client_hello_bytes(os.path.join(env.certs, "ca.crt"))

    def fn(env):
        s = connect(env)
        s.sendall(hello[:len(hello) // 2])
        t0 = time.monotonic()
        how, secs, data = h.read_until_closed(s, DEADLINE + 1)
        s.close()
        return how, time.monotonic() - t0, data
    how, secs, _ = attack(env, "half a ClientHello", fn)
    h.check(secs >= h.HANDSHAKE_TIMEOUT - 0.3,
            "a stalled handshake was closed after %.2f s, before the deadline" % secs)
    line = gateway_logged_close(env, mark)
    h.check("deadline" in line.get("reason", "") or "handshake" in line.get("reason", ""),
            "reason should be the handshake deadline: %r" % line)


def test_plain_tcp_silent(env):
    env.world = healthy_world(env)
    mark = env.world[0].mark()

    def fn(env):
        s = connect(env)
        t0 = time.monotonic()
        how, secs, data = h.read_until_closed(s, DEADLINE + 1)
        s.close()
        return how, time.monotonic() - t0, data
    how, secs, _ = attack(env, "a silent TCP client", fn)
    h.check(secs >= h.HANDSHAKE_TIMEOUT - 0.3,
            "a silent client was closed after %.2f s, before the deadline" % secs)
    gateway_logged_close(env, mark)


def tls_then(env, payload, expect_code=None, pings=False):
    """TLS handshake as a well-behaved client, then send payload; returns
    (how, seconds since the payload, data, frames received)."""
    def fn(env):
        s = h.tls_connect(env.port, os.path.join(env.certs, "ca.crt"))
        t0 = time.monotonic()
        if payload:
            s.sendall(payload)
        if pings:
            # PINGs before HELLO must not keep an unauthenticated tunnel alive
            end = t0 + DEADLINE + 1
            try:
                while time.monotonic() < end:
                    s.sendall(h.frame(h.FRAME_PING, b"\0" * 8))
                    s.settimeout(0.2)
                    try:
                        chunk = s.recv(65536)
                        if not chunk:
                            return "eof", time.monotonic() - t0, b""
                    except (socket.timeout, TimeoutError):
                        pass
            except (OSError,) as e:
                return "reset (%s)" % type(e).__name__, time.monotonic() - t0, b""
            h.fail("the gateway kept an unauthenticated, pinging tunnel for %.1f s" % DEADLINE)
        how, secs, data = h.read_until_closed(s, DEADLINE + 1)
        s.close()
        return how, time.monotonic() - t0, data
    how, secs, data = attack(env, "TLS then %r" % payload[:16], fn)
    frames = h.parse_frames(data)
    if expect_code is not None:
        h.check(frames and frames[0][0] == h.FRAME_ERROR,
                "expected an ERROR frame before the close, got %r (%s)" % (frames, how))
        code = h.error_code(frames[0][2])
        h.check(code == expect_code, "ERROR code %d, expected %d (message %r)"
                % (code, expect_code, frames[0][2][3:]))
        h.check(secs < 1.0, "a bad frame should be answered at once, took %.2f s" % secs)
    h.check(not any(f[0] == h.FRAME_HELLO_OK for f in frames), "the gateway sent HELLO_OK")
    return frames


def test_tls_garbage_frame(env):
    env.world = healthy_world(env)
    tls_then(env, b"\xee" + b"\x00" * 7 + os.urandom(100), expect_code=h.ERR_PROTOCOL)


def test_tls_frame_over_size_limit(env):
    env.world = healthy_world(env)
    tls_then(env, h.frame(h.FRAME_HELLO, b"", length=0xFFFF), expect_code=h.ERR_PROTOCOL)


def test_tls_frame_before_hello(env):
    env.world = healthy_world(env)
    tls_then(env, h.frame(h.FRAME_GOAWAY, b"\x00\x00\x00"), expect_code=h.ERR_PROTOCOL)


def test_tls_hello_wrong_version(env):
    env.world = healthy_world(env)
    tls_then(env, h.hello("v9-client", version=9), expect_code=h.ERR_VERSION)
    h.check("v9-client" not in env.clients(), "a HELLO of version 9 was accepted")


def test_tls_hello_bad_fields(env):
    env.world = healthy_world(env)
    # client_id with characters outside A-Z a-z 0-9 . _ : -
    tls_then(env, h.hello("bad id\n"), expect_code=h.ERR_BAD_HELLO)
    # a HELLO whose strings run past the payload is malformed
    broken = h.hello("x")
    broken = broken[:8 + 16] + b"\x40" + broken[8 + 17:]  # client_id length 64 > what follows
    tls_then(env, broken, expect_code=h.ERR_PROTOCOL)
    h.check(env.clients().keys() == {"healthy"}, "a bad HELLO was accepted: %r" % env.clients())


def test_tls_no_hello_only_pings(env):
    env.world = healthy_world(env)
    mark = env.world[0].mark()
    tls_then(env, b"", pings=True)
    gateway_logged_close(env, mark)


def test_many_stalled_connections_at_once(env):
    env.world = healthy_world(env)
    hello = h.client_hello_bytes(os.path.join(env.certs, "ca.crt"))

    def fn(env):
        socks = []
        for i in range(40):
            s = connect(env)
            if i % 2:
                s.sendall(hello[:len(hello) // 2])
            socks.append(s)
        t0 = time.monotonic()
        worst = 0.0
        for s in socks:
            left = max(0.1, DEADLINE + 1 - (time.monotonic() - t0))
            how, _, _ = h.read_until_closed(s, left)
            worst = time.monotonic() - t0
            s.close()
        return "all closed", worst, b""
    attack(env, "40 stalled connections", fn)


if __name__ == "__main__":
    h.run([
        test_random_bytes,
        test_half_client_hello_then_stall,
        test_plain_tcp_silent,
        test_tls_garbage_frame,
        test_tls_frame_over_size_limit,
        test_tls_frame_before_hello,
        test_tls_hello_wrong_version,
        test_tls_hello_bad_fields,
        test_tls_no_hello_only_pings,
        test_many_stalled_connections_at_once,
    ])
