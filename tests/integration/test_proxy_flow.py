#!/usr/bin/env python3
"""Flow through the tunnel: half-close end to end (DESIGN non-negotiable 4)
and a slow reader that must neither stall its neighbours nor make any
process buffer without bound (non-negotiable 3).

One gateway and one agent (default group, replicas=1: every stream shares
one tunnel).
"""
import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MIB = 1 << 20
# ASan's quarantine keeps freed memory resident: more room there
RSS_GROWTH_LIMIT_KIB = 32 * 1024 * (4 if h.sanitized_build() else 1)


def setup(env):
    env.gwp = h.proxy_gateway(env)
    env.agent_d = h.proxy_agent(env, "flow", replicas=1)
    env.origin = h.HttpTarget("127.0.0.1", name="origin")
    env.servers.append(env.origin)


def server(env, handler):
    s = h.RawServer(handler)
    env.servers.append(s)
    return s


def open_tunnel(env, how, port, early=None):
    """A raw byte stream to 127.0.0.1:port through SOCKS5 or CONNECT. Bytes
    the target sent that came with the CONNECT answer go to early (a list);
    without it there must be none."""
    if how == "socks5":
        r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", port, timeout=30)
        h.check(r.rep == 0, "SOCKS5 CONNECT: %r" % r)
        return r.sock
    s, status, headers, head, rest = h.http_connect(env.gwp.http_port, "127.0.0.1", port,
                                                    timeout=30)
    h.check(status == 200, "CONNECT: %r\n%s" % (status, head))
    if early is not None:
        early.append(rest)
    else:
        h.check(rest == b"", "CONNECT: unexpected bytes after the answer: %r" % rest[:100])
    return s


def read_to_eof(sock, timeout=60):
    sock.settimeout(timeout)
    hh = hashlib.sha256()
    n = 0
    first = b""
    while True:
        b = sock.recv(MIB)
        if not b:
            return n, hh.hexdigest(), first
        if len(first) < 200:
            first += b[:200 - len(first)]
        hh.update(b)
        n += len(b)


# ---- half-close ------------------------------------------------------------------------

RESPONSE_SIZE = 32 * MIB
REQUEST_SIZE = MIB + 123


def user_half_close(env, how):
    """The user sends its request and shuts its write side; the target reads
    to EOF, then answers 32 MiB: all of it must arrive, then EOF."""
    srv = server(env, h.respond_after_eof(RESPONSE_SIZE, seed=21))
    s = open_tunnel(env, how, srv.port)
    try:
        for c in h.gen_chunks(REQUEST_SIZE, 20):
            s.sendall(c)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(1)
            h.check(b, "%s: EOF before the answer line (%r) - the FIN closed both directions?"
                    % (how, line))
            line += b
        h.check(line == b"%d %s\n" % (REQUEST_SIZE, h.gen_sha256(REQUEST_SIZE, 20).encode()),
                "%s: the target saw %r, expected the whole request then EOF" % (how, line))
        n, sha, _ = read_to_eof(s)
    finally:
        s.close()
    h.check(n == RESPONSE_SIZE and sha == h.gen_sha256(RESPONSE_SIZE, 21),
            "%s: after the user's FIN, %d of %d response bytes arrived (sha ok %s)"
            % (how, n, RESPONSE_SIZE, sha == h.gen_sha256(RESPONSE_SIZE, 21)))


def test_half_close_user_first_socks5(env):
    user_half_close(env, "socks5")


def test_half_close_user_first_connect(env):
    user_half_close(env, "connect")


def target_half_close(env, how):
    """The target sends 4 MiB and shuts its write side; the user sees EOF,
    then uploads 8 MiB, which the target must still receive in full."""
    got = []

    def handler(conn):
        for c in h.gen_chunks(4 * MIB, 30):
            conn.sendall(c)
        conn.shutdown(socket.SHUT_WR)
        hh = hashlib.sha256()
        n = 0
        while True:
            b = conn.recv(MIB)
            if not b:
                break
            hh.update(b)
            n += len(b)
        got.append((n, hh.hexdigest()))
    srv = server(env, handler)
    early = []
    s = open_tunnel(env, how, srv.port, early)
    try:
        s.settimeout(30)
        data = b"".join(early)
        while len(data) < 4 * MIB:
            b = s.recv(MIB)
            h.check(b, "%s: EOF after %d of %d bytes" % (how, len(data), 4 * MIB))
            data += b
        h.check(data == h.gen_bytes(4 * MIB, 30), "%s: the target's data is wrong" % how)
        s.settimeout(10)
        h.check(s.recv(1) == b"", "%s: the target's FIN should reach the user as EOF" % how)
        for c in h.gen_chunks(8 * MIB, 31):
            s.sendall(c)
        s.shutdown(socket.SHUT_WR)
        h.wait_until(lambda: got, 30, "%s: the target to read the upload to EOF" % how)
    finally:
        s.close()
    h.check(got[0] == (8 * MIB, h.gen_sha256(8 * MIB, 31)),
            "%s: after the target's FIN the target received %d of %d upload bytes"
            % (how, got[0][0], 8 * MIB))


def test_half_close_target_first_socks5(env):
    target_half_close(env, "socks5")


def test_half_close_target_first_connect(env):
    target_half_close(env, "connect")


def test_half_close_http_forward(env):
    """An absolute-URI request, then SHUT_WR: the whole response arrives."""
    size = 16 * MIB
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=30)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                   % (env.origin.url("/gen?size=%d&seed=22" % size),
                      h.basic_auth(h.PROXY_USER, h.PROXY_PASS))).encode())
        s.shutdown(socket.SHUT_WR)
        status, headers, head, rest = h.read_http_head(s)
        h.check(status == 200, "status %r\n%s" % (status, head))
        body = h.read_http_body(s, headers, rest, timeout=30)
    finally:
        s.close()
    h.check(len(body) == size and hashlib.sha256(body).hexdigest() == h.gen_sha256(size, 22),
            "after SHUT_WR %d of %d body bytes arrived" % (len(body), size))


# ---- slow reader -------------------------------------------------------------------------

SLOW_SIZE = 64 * MIB
FAST_SIZE = 256 * MIB


def fast_download(env, port, seed):
    s = open_tunnel(env, "socks5", port)
    t0 = time.monotonic()
    try:
        n, sha, _ = read_to_eof(s, timeout=60)
    finally:
        s.close()
    dt = time.monotonic() - t0
    h.check(n == FAST_SIZE and sha == h.gen_sha256(FAST_SIZE, seed),
            "fast stream: %d of %d bytes, sha ok %s" % (n, FAST_SIZE,
                                                         sha == h.gen_sha256(FAST_SIZE, seed)))
    return dt


def fast_upload(env, port, seed):
    s = open_tunnel(env, "socks5", port)
    t0 = time.monotonic()
    try:
        s.settimeout(60)
        for c in h.gen_chunks(FAST_SIZE, seed):
            s.sendall(c)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(200)
    finally:
        s.close()
    dt = time.monotonic() - t0
    h.check(answer == b"%d %s\n" % (FAST_SIZE, h.gen_sha256(FAST_SIZE, seed).encode()),
            "fast upload: the server counted %r" % answer)
    return dt


def test_slow_reader_does_not_stall_the_tunnel(env):
    """A user reading 1 KiB/s from a target that sends 64 MiB, while another
    stream on the same tunnel downloads 256 MiB: the fast one finishes in
    about its solo time, RSS stays bounded, the slow one loses nothing."""
    gw_pid, ag_pid = env.gwp.pid, env.agent_d.pid
    fast_srv = server(env, h.send_stream(FAST_SIZE, seed=41))
    slow_srv = server(env, h.send_stream(SLOW_SIZE, seed=40))
    solo = fast_download(env, fast_srv.port, 41)   # also warms the buffers up
    rss0 = {p: h.rss_kib(p) for p in (gw_pid, ag_pid)}

    slow = open_tunnel(env, "socks5", slow_srv.port)
    slow_state = {"n": 0, "hash": hashlib.sha256(), "fast": threading.Event(), "err": None}

    def slow_reader():
        try:
            slow.settimeout(60)
            while not slow_state["fast"].is_set():
                b = slow.recv(1024)
                if not b:
                    return
                slow_state["hash"].update(b)
                slow_state["n"] += len(b)
                slow_state["fast"].wait(1.0)
            while True:  # then the rest at full speed
                b = slow.recv(MIB)
                if not b:
                    return
                slow_state["hash"].update(b)
                slow_state["n"] += len(b)
        except Exception as e:
            slow_state["err"] = repr(e)

    watch = h.PeakWatch([gw_pid, ag_pid])
    rt = threading.Thread(target=slow_reader, daemon=True)
    t_start = time.monotonic()
    rt.start()
    try:
        time.sleep(2)  # the slow stream's windows fill up
        shared = fast_download(env, fast_srv.port, 41)
        time.sleep(1)
        read_slowly = slow_state["n"]
        slow_limit = int((time.monotonic() - t_start + 2) * 1024)
    finally:
        watch.stop()
        slow_state["fast"].set()
    rt.join(timeout=60)
    slow.close()
    growth = {p: watch.rss[p] - rss0[p] for p in rss0}
    h.note("256 MiB alone %.2f s, beside a 1 KiB/s reader %.2f s; slow reader read %d bytes "
           "meanwhile" % (solo, shared, read_slowly))
    h.note("RSS gateway %d -> peak %d KiB, agent %d -> peak %d KiB"
           % (rss0[gw_pid], watch.rss[gw_pid], rss0[ag_pid], watch.rss[ag_pid]))
    h.check(shared <= 3 * solo + 5, "the fast stream took %.1f s beside a slow reader, "
            "%.1f s alone: the slow stream stalled the tunnel" % (shared, solo))
    h.check(read_slowly <= slow_limit, "the slow reader was not slow (%d bytes)" % read_slowly)
    for p, name in ((gw_pid, "gateway"), (ag_pid, "agent")):
        h.check(growth[p] < RSS_GROWTH_LIMIT_KIB, "%s RSS grew by %d KiB (limit %d KiB) with a "
                "slow reader: something buffers without bound" % (name, growth[p],
                                                                 RSS_GROWTH_LIMIT_KIB))
    h.check(slow_state["err"] is None, "slow stream failed: %s" % slow_state["err"])
    h.check(slow_state["n"] == SLOW_SIZE and
            slow_state["hash"].hexdigest() == h.gen_sha256(SLOW_SIZE, 40),
            "the slow stream got %d of %d bytes (sha ok %s)" % (
                slow_state["n"], SLOW_SIZE,
                slow_state["hash"].hexdigest() == h.gen_sha256(SLOW_SIZE, 40)))


def test_slow_target_does_not_stall_the_tunnel(env):
    """The other direction: a target reading 1 KiB/s while its user pushes
    64 MiB, and another user uploads 256 MiB on the same tunnel."""
    gw_pid, ag_pid = env.gwp.pid, env.agent_d.pid
    fast_srv = server(env, h.hash_until_eof)
    slow_go = threading.Event()
    slow_got = {"n": 0}

    def slow_handler(conn):
        hh = hashlib.sha256()
        while True:
            b = conn.recv(1024 if not slow_go.is_set() else MIB)
            if not b:
                break
            hh.update(b)
            slow_got["n"] += len(b)
            if not slow_go.is_set():
                slow_go.wait(1.0)
        conn.sendall(b"%d %s\n" % (slow_got["n"], hh.hexdigest().encode()))
    slow_srv = server(env, slow_handler)
    solo = fast_upload(env, fast_srv.port, 51)
    rss0 = {p: h.rss_kib(p) for p in (gw_pid, ag_pid)}

    slow = open_tunnel(env, "socks5", slow_srv.port)
    pushed = {"n": 0, "err": None}

    def pusher():
        try:
            slow.settimeout(120)
            for c in h.gen_chunks(SLOW_SIZE, 50):
                slow.sendall(c)
                pushed["n"] += len(c)
            slow.shutdown(socket.SHUT_WR)
        except Exception as e:
            pushed["err"] = repr(e)

    watch = h.PeakWatch([gw_pid, ag_pid])
    pt = threading.Thread(target=pusher, daemon=True)
    pt.start()
    try:
        time.sleep(2)
        shared = fast_upload(env, fast_srv.port, 51)
        time.sleep(1)
        pushed_meanwhile = pushed["n"]
    finally:
        watch.stop()
        slow_go.set()
    pt.join(timeout=60)
    try:
        slow.settimeout(30)
        answer = slow.recv(200)
    finally:
        slow.close()
    growth = {p: watch.rss[p] - rss0[p] for p in rss0}
    h.note("256 MiB upload alone %.2f s, beside a 1 KiB/s target %.2f s; %d bytes pushed "
           "towards the slow target meanwhile" % (solo, shared, pushed_meanwhile))
    h.note("RSS gateway %d -> peak %d KiB, agent %d -> peak %d KiB"
           % (rss0[gw_pid], watch.rss[gw_pid], rss0[ag_pid], watch.rss[ag_pid]))
    h.check(shared <= 3 * solo + 5, "the fast upload took %.1f s beside a slow target, %.1f s "
            "alone" % (shared, solo))
    for p, name in ((gw_pid, "gateway"), (ag_pid, "agent")):
        h.check(growth[p] < RSS_GROWTH_LIMIT_KIB, "%s RSS grew by %d KiB (limit %d KiB) with a "
                "slow target" % (name, growth[p], RSS_GROWTH_LIMIT_KIB))
    h.check(pushed["err"] is None, "pushing to the slow target failed: %s" % pushed["err"])
    h.check(answer == b"%d %s\n" % (SLOW_SIZE, h.gen_sha256(SLOW_SIZE, 50).encode()),
            "the slow target counted %r" % answer)


# ---- a quiet stream ------------------------------------------------------------------------

QUIET_SECONDS = 35


def test_quiet_stream_is_not_killed(env):
    """Idle timeouts, not read deadlines (DESIGN non-negotiable 8): SOCKS5
    and CONNECT streams that stay silent for 35 s still work afterwards."""
    def echo(conn):
        while True:
            b = conn.recv(65536)
            if not b:
                return
            conn.sendall(b)
    srv = h.RawServer(echo)
    env.servers.append(srv)
    streams = [(how, open_tunnel(env, how, srv.port)) for how in ("socks5", "connect")]
    try:
        for how, s in streams:
            s.sendall(b"before-" + how.encode())
            s.settimeout(10)
            h.check(h.recv_exact(s, 7 + len(how)) == b"before-" + how.encode(), "echo " + how)
        time.sleep(QUIET_SECONDS)
        for how, s in streams:
            try:
                s.sendall(b"after-" + how.encode())
                got = h.recv_exact(s, 6 + len(how))
            except OSError as e:
                got = repr(e)
            h.check(got == b"after-" + how.encode(),
                    "%s stream quiet for %d s was killed: %r" % (how, QUIET_SECONDS, got))
    finally:
        for _, s in streams:
            s.close()


if __name__ == "__main__":
    h.run([
        test_half_close_user_first_socks5,
        test_half_close_user_first_connect,
        test_half_close_target_first_socks5,
        test_half_close_target_first_connect,
        test_half_close_http_forward,
        test_slow_reader_does_not_stall_the_tunnel,
        test_slow_target_does_not_stall_the_tunnel,
        test_quiet_stream_is_not_killed,
    ], fixture=setup)
