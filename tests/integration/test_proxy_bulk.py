#!/usr/bin/env python3
"""Bulk transfers through one agent (default group, replicas=1):

- 1 GiB download through each proxy (HTTP absolute URI, SOCKS5, CONNECT),
  with curl, sha256-verified;
- 1 GiB upload through each proxy (HTTP POST with Content-Length to an
  origin that hashes the body; SOCKS5 and CONNECT to a TCP server that
  hashes until EOF and answers the digest), sha256-verified;
- 200 concurrent streams of mixed sizes (1 KiB .. 8 MiB) over the three
  proxy paths at once, every body verified, all carried by the one agent.

Data comes from harness.gen_chunks (deterministic, every 64 KiB block
stamped with its index). Throughputs are printed as TAP comments.
"""
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GIB = 1 << 30
SEED = 42
TRANSFER_TIMEOUT = 300


def setup(env):
    env.gwp = h.proxy_gateway(env)
    env.agent_d = h.proxy_agent(env, "bulk", replicas=1)
    env.origin = h.HttpTarget("127.0.0.1", name="origin")
    env.hasher = h.RawServer(h.hash_until_eof)
    env.servers += [env.origin, env.hasher]
    t0 = time.monotonic()
    env.want = h.gen_sha256(GIB, SEED)
    h.note("sha256 of the 1 GiB reference computed in %.1f s" % (time.monotonic() - t0))


def px(env):
    return "http://%s:%s@127.0.0.1:%d" % (h.PROXY_USER, h.PROXY_PASS, env.gwp.http_port)


def socks(env):
    return "%s:%s@127.0.0.1:%d" % (h.PROXY_USER, h.PROXY_PASS, env.gwp.socks_port)


def rate(n, seconds):
    return "%.0f MiB in %.1f s = %.0f MiB/s" % (n / 2**20, seconds, n / 2**20 / max(seconds, 1e-6))


def download(env, args, what):
    before = h.stream_totals(env)
    t0 = time.monotonic()
    rc, n, sha, err = h.curl_sha256(args + [env.origin.url("/gen?size=%d&seed=%d" % (GIB, SEED))],
                                    timeout=TRANSFER_TIMEOUT)
    dt = time.monotonic() - t0
    h.note("%s download: %s" % (what, rate(n, dt)))
    h.check(rc == 0, "%s: curl rc %d: %s" % (what, rc, err))
    h.check(n == GIB, "%s: %d bytes, expected %d" % (what, n, GIB))
    h.check(sha == env.want, "%s: sha256 mismatch" % what)
    h.expect_streams(env, before, {"bulk": 1}, what)


def test_download_1gib_http_proxy(env):
    download(env, ["-x", px(env)], "HTTP proxy (absolute URI)")


def test_download_1gib_socks5(env):
    download(env, ["--socks5-hostname", socks(env)], "SOCKS5")


def test_download_1gib_connect(env):
    download(env, ["-p", "-x", px(env)], "HTTP CONNECT")


def send_all(sock, size, seed, what):
    sent = 0
    try:
        for c in h.gen_chunks(size, seed):
            sock.sendall(c)
            sent += len(c)
    except (socket.timeout, TimeoutError):
        h.fail("%s: sending stalled for %.0f s after %d of %d bytes"
               % (what, sock.gettimeout(), sent, size))
    return sent


def test_upload_1gib_http_proxy(env):
    """POST with Content-Length: 1 GiB through the HTTP proxy."""
    what = "HTTP proxy POST"
    before = h.stream_totals(env)
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=30)
    t0 = time.monotonic()
    try:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n"
                   "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                   "Connection: close\r\n\r\n"
                   % (env.origin.url("/upload"), h.basic_auth(h.PROXY_USER, h.PROXY_PASS),
                      GIB)).encode())
        send_all(s, GIB, SEED, what)
        status, headers, head, rest = h.read_http_head(s)
        body = h.read_http_body(s, headers, rest, timeout=60)
    finally:
        s.close()
    dt = time.monotonic() - t0
    h.note("%s upload: %s" % (what, rate(GIB, dt)))
    h.check(status == 200, "%s: status %r\n%s" % (what, status, head))
    j = json.loads(body)
    h.check(j["len"] == GIB and j["sha256"] == env.want, "%s: origin got %d bytes, sha ok %s"
            % (what, j["len"], j["sha256"] == env.want))
    h.expect_streams(env, before, {"bulk": 1}, what)


def upload_raw(env, sock, what):
    t0 = time.monotonic()
    try:
        send_all(sock, GIB, SEED, what)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(60)
        answer = b""
        while not answer.endswith(b"\n"):
            b = sock.recv(200)
            if not b:
                break
            answer += b
    finally:
        sock.close()
    dt = time.monotonic() - t0
    h.note("%s upload: %s" % (what, rate(GIB, dt)))
    h.check(answer == b"%d %s\n" % (GIB, env.want.encode()),
            "%s: the server counted %r, expected %d bytes with the reference sha256"
            % (what, answer, GIB))


def test_upload_1gib_socks5(env):
    before = h.stream_totals(env)
    r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", env.hasher.port, timeout=30)
    h.check(r.rep == 0, "SOCKS5 CONNECT: %r" % r)
    upload_raw(env, r.sock, "SOCKS5")
    h.expect_streams(env, before, {"bulk": 1}, "SOCKS5 upload")


def test_upload_1gib_connect(env):
    before = h.stream_totals(env)
    s, status, headers, head, rest = h.http_connect(env.gwp.http_port, "127.0.0.1",
                                                    env.hasher.port, timeout=30)
    h.check(status == 200 and rest == b"", "CONNECT: %r\n%s" % (status, head))
    upload_raw(env, s, "HTTP CONNECT")
    h.expect_streams(env, before, {"bulk": 1}, "CONNECT upload")


# ---- 200 concurrent streams ------------------------------------------------------------

N_STREAMS = 200


def fetch_one(env, mode, size, seed):
    """GET /gen through one proxy path; returns the body's (length, sha256)."""
    path = "/gen?size=%d&seed=%d" % (size, seed)
    if mode == "http":
        s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=60)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n"
                   "Connection: close\r\n\r\n"
                   % (env.origin.url(path), h.basic_auth(h.PROXY_USER, h.PROXY_PASS))).encode())
    elif mode == "socks5":
        r = h.socks5_open(env.gwp.socks_port, "localhost", env.origin.port, timeout=60)
        if r.rep != 0:
            r.sock.close()
            raise AssertionError("SOCKS5 REP %r" % r.rep)
        s = r.sock
    else:
        s, status, _, head, rest = h.http_connect(env.gwp.http_port, "127.0.0.1",
                                                  env.origin.port, timeout=60)
        if status != 200:
            s.close()
            raise AssertionError("CONNECT status %r" % status)
    try:
        if mode != "http":
            s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                       % path).encode())
        status, headers, head, rest = h.read_http_head(s)
        if status != 200:
            raise AssertionError("status %r" % status)
        hh = hashlib.sha256(rest)
        n = len(rest)
        want = int(headers["content-length"])
        while n < want:
            b = s.recv(min(1 << 20, want - n))
            if not b:
                break
            hh.update(b)
            n += len(b)
        return n, hh.hexdigest()
    finally:
        s.close()


def test_200_concurrent_streams(env):
    rng = random.Random(200)
    sizes = [1024, 8 << 20] + [int(1024 * 8192 ** rng.random()) for _ in range(N_STREAMS - 2)]
    modes = ["http", "socks5", "connect"]
    jobs = [(modes[i % 3], sizes[i], 1000 + i) for i in range(N_STREAMS)]
    wants = {j: h.gen_sha256(j[1], j[2]) for j in jobs}
    results = {}
    barrier = threading.Barrier(N_STREAMS + 1)
    before = h.stream_totals(env)
    active0 = env.clients()["bulk"]["streams_active"]

    def worker(job):
        try:
            barrier.wait(timeout=30)
            results[job] = fetch_one(env, *job)
        except Exception as e:  # reported below
            results[job] = e

    threads = [threading.Thread(target=worker, args=(j,), daemon=True) for j in jobs]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    t0 = time.monotonic()
    peak = 0
    deadline = t0 + 180
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        try:
            peak = max(peak, env.clients()["bulk"]["streams_active"])
        except h.TestFailure:
            pass
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    dt = time.monotonic() - t0
    total = sum(sizes)
    h.note("200 streams, %s, peak streams_active %d" % (rate(total, dt), peak))
    missing = [j for j in jobs if j not in results]
    h.check(not missing, "%d streams did not finish within 180 s, e.g. %r"
            % (len(missing), missing[:5]))
    bad = []
    for j in jobs:
        r = results[j]
        if isinstance(r, Exception):
            bad.append("%s %d bytes: %r" % (j[0], j[1], r))
        elif r != (j[1], wants[j]):
            bad.append("%s %d bytes: got %d bytes, sha ok %s" % (j[0], j[1], r[0],
                                                                  r[1] == wants[j]))
    h.check(not bad, "%d of %d streams failed:\n%s" % (len(bad), N_STREAMS, "\n".join(bad[:20])))
    h.expect_streams(env, before, {"bulk": N_STREAMS}, "200 concurrent streams")
    h.check(peak >= 20, "the streams should have overlapped (peak streams_active %d)" % peak)
    h.wait_until(lambda: env.clients()["bulk"]["streams_active"] == active0, 10,
                 "streams_active to return to %d" % active0)


if __name__ == "__main__":
    h.run([
        test_download_1gib_http_proxy,
        test_download_1gib_socks5,
        test_download_1gib_connect,
        test_upload_1gib_socks5,
        test_upload_1gib_connect,
        test_200_concurrent_streams,
        test_upload_1gib_http_proxy,  # last: its failure leaves a stalled stream behind
    ], fixture=setup)
