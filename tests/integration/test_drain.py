#!/usr/bin/env python3
"""Graceful stop and drain with transfers in flight (issue 5, item 3;
docs/operations.md "Programs and signals").

- SIGTERM on the gateway during slow transfers: the listeners close at once
  (new users and agents are refused), the open transfers complete intact
  (sha256) within shutdown_timeout_ms, the gateway exits 0 right after;
- the same with a transfer longer than shutdown_timeout_ms: it is cut at the
  deadline ("Shutdown timeout: closing what is left"), exit 0;
- SIGTERM on an agent with an open transfer: the gateway routes new streams
  of the group to the other agent, the open transfer completes, the agent
  exits 0 once it is done.
"""
import hashlib
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MIB = 1 << 20
SIZE = 2 * MIB          # per slow transfer
PACE = 0.1              # 64 KiB every 100 ms: about 3.2 s per transfer


class Transfer:
    """Reads a relayed connection to its end in a thread, hashing."""

    def __init__(self, sock, keep=False, early=b""):
        self.sock = sock
        # target bytes that came together with the CONNECT answer
        self.n = len(early)
        self.hash = hashlib.sha256(early)
        self.data = bytearray(early) if keep else None
        self.how = None
        self.t_end = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            self.sock.settimeout(60)
            while True:
                b = self.sock.recv(MIB)
                if not b:
                    self.how = "eof"
                    break
                self.hash.update(b)
                self.n += len(b)
                if self.data is not None:
                    self.data += b
        except OSError as e:
            self.how = "error %r" % e
        finally:
            self.t_end = time.monotonic()
            self.sock.close()

    def join(self, timeout):
        self.t.join(timeout)
        h.check(not self.t.is_alive(), "a transfer did not end within %.1f s (%d bytes)"
                % (timeout, self.n))

    def intact(self, size, seed):
        return self.how == "eof" and self.n == size and self.hash.hexdigest() == h.gen_sha256(
            size, seed)


def probe(port):
    """"refused", or what a connection to port got: "accepted, then EOF", ..."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "connect failed: %r" % e
    try:
        c.settimeout(0.3)
        return "accepted, then %r" % c.recv(100)
    except (socket.timeout, TimeoutError):
        return "accepted, left open"
    except OSError as e:
        return "accepted, then %r" % e
    finally:
        c.close()


def test_gateway_sigterm_lets_transfers_finish(env):
    """shutdown_timeout_ms = 10000; two 2 MiB transfers paced over ~3 s
    (SOCKS5 and CONNECT) are running when SIGTERM comes."""
    gwp = h.proxy_gateway(env, shutdown_timeout_ms=10000)
    agent = h.proxy_agent(env, "a")
    srv = h.RawServer(_paced(SIZE, 7))
    env.servers.append(srv)
    transfers = []
    for how in ("socks5", "connect"):
        early = []
        sock = h.proxy_stream(gwp, how, "127.0.0.1", srv.port, early=early)
        transfers.append(Transfer(sock, early=b"".join(early)))
    h.wait_until(lambda: all(t.n > 0 for t in transfers), 5, "both transfers to start")
    amark = agent.mark()
    t_sig = time.monotonic()
    gwp.send_signal(signal.SIGTERM)
    gwp.wait_for_log("Gateway stopping", 2)
    ports = {"socks5": gwp.socks_port, "http": gwp.http_port, "tunnel": env.port}
    time.sleep(0.3)
    still = {name: probe(p) for name, p in ports.items()}
    still = {name: how for name, how in still.items() if how != "refused"}
    for t in transfers:
        t.join(15)
    rc = gwp.wait_exit(10 + h.slack())
    t_exit = time.monotonic()
    last = max(t.t_end for t in transfers)
    h.note("transfers ended %.2f s after SIGTERM, gateway exited %.2f s after SIGTERM"
           % (last - t_sig, t_exit - t_sig))
    for i, t in enumerate(transfers):
        h.check(t.intact(SIZE, 7), "transfer %d during the drain: %s, %d of %d bytes, sha ok %s"
                % (i, t.how, t.n, SIZE, t.hash.hexdigest() == h.gen_sha256(SIZE, 7)))
    h.check(rc == 0, "the gateway exited %r after SIGTERM" % rc)
    h.check(t_exit - last < 1.5 + h.slack(), "the gateway exited %.2f s after its last stream "
            "ended: it should leave as soon as nothing is open" % (t_exit - last))
    h.check(not gwp.find("Shutdown timeout"), "the drain hit the shutdown timeout")
    h.check(agent.find("Gateway is going away", since=amark), "the agent got no GOAWAY:\n%s"
            % agent.tail())
    h.check(agent.alive(), "the agent stopped with the gateway")
    h.check(not still, "0.3 s after SIGTERM these listeners still completed TCP handshakes "
            "instead of refusing: %r" % still)


def _paced(size, seed, pace=PACE):
    def handler(conn):
        for c in h.gen_chunks(size, seed):
            conn.sendall(c)
            time.sleep(pace)
    return handler


def test_gateway_sigterm_cuts_at_deadline(env):
    """shutdown_timeout_ms = 1500 and an endless transfer: the user's
    connection is cut about 1.5 s after SIGTERM, what arrived before is
    intact, the gateway exits 0."""
    gwp = h.proxy_gateway(env, shutdown_timeout_ms=1500)
    h.proxy_agent(env, "a")
    srv = h.RawServer(h.endless_stream(seed=8, pace=0.05))
    env.servers.append(srv)
    t = Transfer(h.proxy_stream(gwp, "socks5", "127.0.0.1", srv.port), keep=True)
    h.wait_until(lambda: t.n > 0, 5, "the transfer to start")
    t_sig = time.monotonic()
    gwp.send_signal(signal.SIGTERM)
    t.join(10)
    rc = gwp.wait_exit(5 + h.slack())
    t_exit = time.monotonic()
    cut = t.t_end - t_sig
    h.note("cut %.2f s after SIGTERM (%s, %d bytes), exit after %.2f s"
           % (cut, t.how, t.n, t_exit - t_sig))
    h.check(1.3 <= cut <= 1.5 + h.slack(), "the endless transfer ended %.2f s after SIGTERM; "
            "shutdown_timeout_ms is 1500" % cut)
    h.check(bytes(t.data) == h.gen_bytes(t.n, 8), "the bytes before the cut are corrupt")
    h.check(rc == 0, "the gateway exited %r after its shutdown timeout" % rc)
    h.check(t_exit - t_sig < 1.5 + h.slack(), "the gateway exited %.2f s after SIGTERM"
            % (t_exit - t_sig))
    h.check(gwp.find("Shutdown timeout: closing what is left"), "no shutdown timeout line:\n%s"
            % gwp.tail())


def test_agent_sigterm_drains(env):
    """Agents x and y serve group g. A slow transfer runs through one of
    them when it gets SIGTERM: new streams of g all go to the other one,
    the open transfer completes intact, the draining agent exits 0 after."""
    gwp = h.proxy_gateway(env)
    agents = {cid: h.proxy_agent(env, cid, group_id="g", shutdown_timeout_ms=10000)
              for cid in ("x", "y")}
    slow = h.RawServer(_paced(SIZE, 9))
    echo = h.RawServer(h.echo_handler)
    env.servers += [slow, echo]
    user = h.PROXY_USER + ".g"
    t = Transfer(h.proxy_stream(gwp, "socks5", "127.0.0.1", slow.port, user=user))
    h.wait_until(lambda: t.n > 0, 5, "the transfer to start")
    busy = [cid for cid, c in env.clients().items() if c["streams_active"] == 1]
    h.check(len(busy) == 1, "one agent should carry the transfer: %r" % env.clients())
    leaving, staying = busy[0], ("y" if busy[0] == "x" else "x")
    gmark = gwp.mark()
    t_sig = time.monotonic()
    agents[leaving].send_signal(signal.SIGTERM)
    gwp.wait_for_log("Client draining", 2 + h.slack(), since=gmark)
    before = h.stream_totals(env)
    for i in range(6):
        s = h.proxy_stream(gwp, "socks5" if i % 2 else "connect", "127.0.0.1", echo.port,
                           user=user)
        try:
            s.sendall(b"ping%d" % i)
            h.check(h.recv_exact(s, 5) == b"ping%d" % i, "echo during the drain")
        finally:
            s.close()
    h.expect_streams(env, before, {staying: 6}, "new streams while %s drains" % leaving)
    selected = [l.get("client_id") for l in gwp.find("Selected client from group", since=gmark)]
    h.check(selected == [staying] * 6, "the gateway selected %r while %s drained"
            % (selected, leaving))
    h.check(agents[leaving].alive(), "the draining agent left before its transfer ended")
    t.join(15)
    rc = agents[leaving].wait_exit(5 + h.slack())
    t_exit = time.monotonic()
    h.check(t.intact(SIZE, 9), "the transfer through the draining agent: %s, %d of %d bytes"
            % (t.how, t.n, SIZE))
    h.check(rc == 0, "the draining agent exited %r" % rc)
    h.note("transfer ended %.2f s after SIGTERM; agent exited %.2f s after it"
           % (t.t_end - t_sig, t_exit - t.t_end))
    h.check(t_exit - t.t_end < 2 + h.slack(), "the agent exited %.2f s after its last stream"
            % (t_exit - t.t_end))
    h.check(set(env.clients()) == {staying}, "apctl after the drain: %r" % env.clients())


if __name__ == "__main__":
    h.run([
        test_gateway_sigterm_lets_transfers_finish,
        test_gateway_sigterm_cuts_at_deadline,
        test_agent_sigterm_drains,
    ])
