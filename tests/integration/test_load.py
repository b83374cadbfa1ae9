#!/usr/bin/env python3
"""Load (issue 5, item 7): 10,000 concurrent streams through one gateway and
one agent (replicas = 1: a single tunnel carries them all).

The users are 4 worker processes (this file run with --worker), each with
its own source address 127.0.0.2 .. 127.0.0.5, 2,500 connections each, half
SOCKS5 and half HTTP CONNECT; the targets are 4 echo processes (--echo) on
127.0.0.10 .. 127.0.0.13. Every connection is established and checked with a
small echo, all are held open at once (apctl must count 10,000 active
streams; the gateway and the agent hold one descriptor per stream), then
all are closed: both daemons' descriptor counts return to their baseline
and their RSS to within LOAD_RSS_AFTER_KIB of it.

No process comes near the 20,000 open-file limit: the gateway and the agent
hold about 10,000 each, every worker and echo process 2,500.
"""
import json
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N_STREAMS = 10000
N_WORKERS = 4
N_TARGETS = 4
ESTABLISH_TIMEOUT = 60
CLOSE_TIMEOUT = 30
IN_FLIGHT = 150          # handshakes a worker keeps in flight (listen backlog 4096)
LOAD_HANDSHAKE_TIMEOUT_MS = 10000  # the gateway's default handshake_timeout_ms
# Peak RSS growth while 10,000 streams are open: a stream costs the gateway
# a user connection, a relay and a stream, the agent a target connection
# (about 1 KiB each measured here); 4.9 KiB per stream leaves room for
# allocator overhead, not for a buffer per stream.
LOAD_RSS_PEAK_KIB = 48 * 1024
# After every stream is closed the RSS must come back near the baseline:
# glibc keeps the heap the peak grew (about +11 MiB here), never more.
LOAD_RSS_AFTER_KIB = 32 * 1024
# A second round of 10,000 must not add to what the first one left: a leak
# of 400 bytes per stream would.
LOAD_RSS_ROUND_KIB = 4 * 1024
# A sanitizer build keeps up to 256 MiB of freed memory in ASan's quarantine
# and adds shadow memory (measured: +275 MiB after one round, +378 MiB after
# two for the gateway): RSS measures ASan there, so only the descriptor
# counts are checked and leaks are LeakSanitizer's job.
CHECK_RSS = not (os.environ.get("AP_BUILD_DIR") and h.sanitized_build())


# ---- helper processes: this file run with --echo or --worker ------------------------

def run_echo(host):
    """Echo server on host: prints its port, echoes until stdin closes."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, 0))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print(lsock.getsockname()[1], flush=True)
    while True:
        for key, _ in sel.select(1.0):
            if key.data == "stdin":
                if not sys.stdin.readline():
                    return
            elif key.data is None:
                while True:
                    try:
                        c, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "conn")
            else:
                c = key.fileobj
                try:
                    b = c.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    b = b""
                if not b:
                    sel.unregister(c)
                    c.close()
                    continue
                try:
                    c.sendall(b)  # a few bytes: the buffer takes them
                except OSError:
                    sel.unregister(c)
                    c.close()


class Conn:
    __slots__ = ("sock", "idx", "proto", "state", "buf", "payload", "target")


def run_worker(source, count, socks_port, http_port, targets, user, password, first_idx):
    """Open `count` relayed connections from `source`, echo-check each, hold
    them, report; close them all when stdin says CLOSE."""
    import base64
    sel = selectors.DefaultSelector()
    auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    u, p = user.encode(), password.encode()
    pending = list(range(count))
    done, failed = [], []
    active = 0
    t0 = time.monotonic()

    def start(i):
        c = Conn()
        c.idx = first_idx + i
        c.proto = "socks5" if c.idx % 2 == 0 else "http"
        c.target = targets[c.idx % len(targets)]
        c.payload = b"echo-%d\n" % c.idx
        c.buf = b""
        c.sock = socket.socket()
        c.sock.setblocking(False)
        c.sock.bind((source, 0))
        c.sock.connect_ex(("127.0.0.1", socks_port if c.proto == "socks5" else http_port))
        c.state = "connect"
        sel.register(c.sock, selectors.EVENT_WRITE, c)

    def fail(c, why):
        failed.append("%d %s %s: %s" % (c.idx, c.proto, c.state, why))
        sel.unregister(c.sock)
        c.sock.close()

    def step(c):
        host, port = c.target
        if c.state == "connect":
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ConnectionError(os.strerror(err))
            sel.modify(c.sock, selectors.EVENT_READ, c)
            if c.proto == "socks5":
                c.sock.send(b"\x05\x01\x02")
                c.state = "method"
            else:
                c.sock.send(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: "
                             "Basic %s\r\n\r\n" % (host, port, host, port, auth)).encode())
                c.state = "http-head"
            return
        try:
            b = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if not b:
            raise ConnectionError("EOF")
        c.buf += b
        if c.state == "method" and len(c.buf) >= 2:
            if c.buf[:2] != b"\x05\x02":
                raise ConnectionError("method reply %r" % c.buf[:2])
            c.buf = c.buf[2:]
            c.sock.send(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
            c.state = "auth"
        if c.state == "auth" and len(c.buf) >= 2:
            if c.buf[:2] != b"\x01\x00":
                raise ConnectionError("auth reply %r" % c.buf[:2])
            c.buf = c.buf[2:]
            c.sock.send(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
            c.state = "reply"
        if c.state == "reply" and len(c.buf) >= 10:
            if c.buf[:2] != b"\x05\x00":
                raise ConnectionError("SOCKS5 reply %r" % c.buf[:10])
            c.buf = c.buf[10:]
            c.sock.send(c.payload)
            c.state = "echo"
        if c.state == "http-head" and b"\r\n\r\n" in c.buf:
            head, _, rest = c.buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError("CONNECT answer %r" % head[:60])
            c.buf = rest
            c.sock.send(c.payload)
            c.state = "echo"
        if c.state == "echo" and len(c.buf) >= len(c.payload):
            if c.buf != c.payload:
                raise ConnectionError("echo %r" % c.buf[:40])
            c.state = "open"
            sel.unregister(c.sock)
            done.append(c)
            return True

    deadline = t0 + ESTABLISH_TIMEOUT
    while (pending or active) and time.monotonic() < deadline:
        while pending and active < IN_FLIGHT:
            start(pending.pop())
            active += 1
        for key, _ in sel.select(0.5):
            c = key.data
            try:
                if step(c):
                    active -= 1
            except OSError as e:
                fail(c, repr(e))
                active -= 1
    for key in list(sel.get_map().values()):
        fail(key.data, "not established within %d s" % ESTABLISH_TIMEOUT)
    print(json.dumps({"established": len(done), "failed": failed[:20], "nfailed": len(failed),
                      "seconds": round(time.monotonic() - t0, 2)}), flush=True)
    line = sys.stdin.readline()
    if line.strip() == "RECHECK":
        bad = 0
        for c in done:
            c.sock.setblocking(True)
            c.sock.settimeout(10)
            try:
                c.sock.sendall(c.payload)
                got = b""
                while len(got) < len(c.payload):
                    b = c.sock.recv(100)
                    if not b:
                        break
                    got += b
                bad += got != c.payload
            except OSError:
                bad += 1
        print(json.dumps({"recheck_bad": bad}), flush=True)
        line = sys.stdin.readline()
    t1 = time.monotonic()
    for c in done:
        c.sock.close()
    print(json.dumps({"closed": len(done), "seconds": round(time.monotonic() - t1, 2)}),
          flush=True)
    sys.stdin.readline()


# ---- the test ------------------------------------------------------------------------



def one_round(env, gwp, agent, pids, echoes, children, base_fd, base_rss, rnd):
    """Open N_STREAMS at once, check them, close them; returns the RSS (KiB)
    of each daemon once all are closed."""
    watch = h.PeakWatch(pids.values(), interval=0.5)
    per = N_STREAMS // N_WORKERS
    t0 = time.monotonic()
    workers = []
    for i in range(N_WORKERS):
        w = h.ChildScript(["--worker", "127.0.0.%d" % (2 + i), str(per), str(gwp.socks_port),
                   str(gwp.http_port), json.dumps(echoes), h.PROXY_USER, h.PROXY_PASS,
                   str(i * per)])
        children.append(w)
        workers.append(w)
    results = [json.loads(w.line(ESTABLISH_TIMEOUT + 20, "worker %d" % i))
               for i, w in enumerate(workers)]
    t_est = time.monotonic() - t0
    established = sum(r["established"] for r in results)
    h.note("round %d: %d streams established in %.1f s (workers: %s)" % (
        rnd, established, t_est, ", ".join("%.1f s" % r["seconds"] for r in results)))
    failures = [f for r in results for f in r["failed"]]
    h.check(established == N_STREAMS, "%d of %d streams established; failures: %s"
            % (established, N_STREAMS, failures[:10]))
    clients = env.clients()
    h.check(clients["load"]["streams_active"] == N_STREAMS, "apctl streams_active %r"
            % clients["load"]["streams_active"])
    fds = {k: h.fd_count(p) for k, p in pids.items()}
    rss = {k: h.rss_kib(p) for k, p in pids.items()}
    h.note("with %d streams open: fds %r (baseline %r), RSS KiB %r (baseline %r)"
           % (N_STREAMS, fds, base_fd, rss, base_rss))
    for k in pids:
        h.check(base_fd[k] + N_STREAMS <= fds[k] <= base_fd[k] + N_STREAMS + 50,
                "%s holds %d fds with %d streams (baseline %d)" % (k, fds[k], N_STREAMS,
                                                                   base_fd[k]))
    # every stream still carries bytes now that all are open at once
    for w in workers:
        w.say("RECHECK")
    bad = sum(json.loads(w.line(60, "recheck"))["recheck_bad"] for w in workers)
    h.check(bad == 0, "%d of %d open streams failed a second echo" % (bad, N_STREAMS))
    t1 = time.monotonic()
    for w in workers:
        w.say("CLOSE")
    for i, w in enumerate(workers):
        w.line(CLOSE_TIMEOUT, "worker %d close" % i)
        w.stop()

    def drained():
        return (env.clients()["load"]["streams_active"] == 0 and
                all(h.fd_count(p) <= base_fd[k] for k, p in pids.items()))
    h.wait_until(drained, CLOSE_TIMEOUT, "every stream released and both daemons back to "
                 "their baseline fd counts %r (now %r, streams_active %r)" % (
                     base_fd, {k: h.fd_count(p) for k, p in pids.items()},
                     env.clients()["load"]["streams_active"]), interval=0.25)
    t_close = time.monotonic() - t1
    watch.stop()
    time.sleep(0.5)
    after = {k: h.rss_kib(p) for k, p in pids.items()}
    for k, p in pids.items():
        h.note("%s: fds %d -> %d -> %d; RSS %d KiB -> peak %d -> after %d KiB (bounds: "
               "peak +%d, after +%d KiB)" % (k, base_fd[k], fds[k], h.fd_count(p),
                                             base_rss[k], watch.rss[p], after[k],
                                             LOAD_RSS_PEAK_KIB, LOAD_RSS_AFTER_KIB))
    h.note("all closed and released in %.1f s" % t_close)
    for k, p in pids.items():
        h.check(h.fd_count(p) == base_fd[k], "%s fds %d after closing, baseline %d"
                % (k, h.fd_count(p), base_fd[k]))
        if not CHECK_RSS:
            continue
        h.check(watch.rss[p] - base_rss[k] < LOAD_RSS_PEAK_KIB, "%s RSS peak %d KiB over "
                "baseline %d KiB (bound +%d)" % (k, watch.rss[p], base_rss[k],
                                                LOAD_RSS_PEAK_KIB))
        h.check(after[k] - base_rss[k] < LOAD_RSS_AFTER_KIB, "%s RSS %d KiB after all "
                "streams closed, baseline %d KiB (bound +%d)" % (k, after[k], base_rss[k],
                                                               LOAD_RSS_AFTER_KIB))
    h.check(gwp.alive() and agent.alive(), "a daemon died")
    h.check(env.groups()[""]["streams_active"] == 0, "apctl groups: %r" % env.groups())
    return after


def test_10000_concurrent_streams(env):
    # meson sets MALLOC_PERTURB_: glibc then writes every freed block and
    # free heap pages count in RSS; the bounds are measured without it
    no_perturb = {"MALLOC_PERTURB_": "0"}
    # the production handshake deadline, not the harness's 1.5 s: a worker
    # juggling 150 handshakes on a loaded machine can take longer than that
    # between the SOCKS5 round trips, and the gateway then rightly closes
    # the user (the worker sees "Broken pipe"); deadlines are not what this
    # test measures
    gwp = h.proxy_gateway(env, log_level="info", handshake_timeout_ms=LOAD_HANDSHAKE_TIMEOUT_MS,
                          gw_env=no_perturb)
    agent_keys = dict(h.PROXY_CLIENT, log_level="info")
    agent = env.agent("load", replicas=1, env=no_perturb, **agent_keys)
    pids = {"gateway": gwp.pid, "agent": agent.pid}
    children = []
    try:
        echoes = []
        for i in range(N_TARGETS):
            c = h.ChildScript(["--echo", "127.0.0.%d" % (10 + i)])
            children.append(c)
            echoes.append(("127.0.0.%d" % (10 + i), int(c.line(10, "echo server"))))
        # warm-up: a few hundred streams, so the baseline is a warm process
        warm = h.ChildScript(["--worker", "127.0.0.6", "200", str(gwp.socks_port), str(gwp.http_port),
                      json.dumps(echoes), h.PROXY_USER, h.PROXY_PASS, "0"])
        children.append(warm)
        r = json.loads(warm.line(60, "warm-up worker"))
        h.check(r["established"] == 200, "warm-up: %r" % r)
        warm.say("CLOSE")
        warm.line(30, "warm-up close")
        warm.stop()
        h.wait_until(lambda: env.clients()["load"]["streams_active"] == 0, 20,
                     "the warm-up streams to be released")
        base_fd = {k: h.fd_count(p) for k, p in pids.items()}
        base_rss = {k: h.rss_kib(p) for k, p in pids.items()}
        after1 = one_round(env, gwp, agent, pids, echoes, children, base_fd, base_rss, 1)
        after2 = one_round(env, gwp, agent, pids, echoes, children, base_fd, base_rss, 2)
        for k in pids:
            if not CHECK_RSS:
                h.note("sanitizer build: RSS bounds not checked")
                break
            h.check(after2[k] - after1[k] < LOAD_RSS_ROUND_KIB, "%s RSS %d KiB after the second "
                    "round, %d KiB after the first (bound +%d): memory kept per stream"
                    % (k, after2[k], after1[k], LOAD_RSS_ROUND_KIB))
    finally:
        for c in children:
            c.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--echo":
        run_echo(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        src, count, sp, hp, targets, user, password, first = sys.argv[2:10]
        run_worker(src, int(count), int(sp), int(hp), [tuple(t) for t in json.loads(targets)],
                   user, password, int(first))
        sys.exit(0)
    h.run([test_10000_concurrent_streams])
