#!/usr/bin/env python3
"""Deadlines and limits of the gateway and the agent (issue 5, items 1 and 2;
docs/config.md [gateway] and [client]; docs/operations.md).

Deadlines
  - SOCKS5 and HTTP header slowloris (one byte per 200 ms) is closed at
    handshake_timeout_ms although bytes keep coming;
  - the agent's connect to a silent target ends at connect_timeout_ms with
    SOCKS5 REP 0x06 / HTTP 504;
  - idle_timeout_ms closes a relayed connection with no traffic, but not one
    that only receives or only sends (an idle timeout, not a read deadline).
Limits
  - max_connections: the next user gets SOCKS5 05 FF / HTTP 503;
  - max_connections_per_group: SOCKS5 REP 0x01 / HTTP 503 naming the group;
  - max_streams_per_tunnel: a full tunnel is skipped for another tunnel of
    the agent; with every tunnel full the user is refused;
  - max_clients: the extra agent gets ERROR LIMIT and keeps retrying;
  - a HELLO's replica index is below 64 (max_tunnels_per_group:
    test_isolation_agents.py);
  - accept keeps working after EMFILE (gateway run with RLIMIT_NOFILE 64).
In every case the users and agents already admitted are unharmed.
"""
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

U, P = h.PROXY_USER, h.PROXY_PASS


def server(env, handler, host="127.0.0.1"):
    s = h.RawServer(handler, host=host)
    env.servers.append(s)
    return s


def echo_ok(sock, tag):
    """The relayed connection still carries bytes both ways."""
    tag = tag.encode() if isinstance(tag, str) else tag
    try:
        sock.settimeout(5)
        sock.sendall(tag)
        got = h.recv_exact(sock, len(tag))
    except OSError as e:
        return "%s: %r" % (tag, e)
    return True if got == tag else "%s: echoed %r" % (tag, got)


def check_all_echo(socks, what):
    bad = [r for r in (echo_ok(s, "%s-%d" % (what, i)) for i, s in enumerate(socks))
           if r is not True]
    h.check(not bad, "%s: admitted connections were harmed: %s" % (what, bad))


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def http_refusal(gwp, host, port, user=U):
    """CONNECT that must be refused: returns (status, body)."""
    s, status, headers, head, rest = h.http_connect(gwp.http_port, host, port, user=user)
    try:
        body = h.read_http_body(s, headers, rest, timeout=5)
    finally:
        s.close()
    return status, body


# ---- deadlines ---------------------------------------------------------------------

DRIP = 0.2  # one byte per 200 ms


def drip_until_closed(port, data, out, key, bound=10.0):
    """Send data one byte per DRIP s until the gateway closes the connection;
    out[key] = (seconds from connect to close, bytes sent, how)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    sent = 0
    how = "open"
    try:
        while time.monotonic() - t0 < bound:
            if sent < len(data):
                try:
                    s.sendall(data[sent:sent + 1])
                    sent += 1
                except OSError:
                    how = "reset on send"
                    break
            s.settimeout(DRIP)
            try:
                b = s.recv(4096)
                if not b:
                    how = "eof"
                    break
            except (socket.timeout, TimeoutError):
                pass
            except OSError:
                how = "reset"
                break
    finally:
        s.close()
    out[key] = (time.monotonic() - t0, sent, how)


def test_slowloris_socks5_and_http(env):
    """Handshakes delivered one byte per 200 ms are cut at handshake_timeout_ms
    (1.5 s): the deadline covers the whole handshake, not the gap between
    two bytes. A normal user meanwhile is served."""
    gwp = h.proxy_gateway(env)
    h.proxy_agent(env, "a")
    echo = server(env, h.echo_handler)
    mark = gwp.mark()
    long_user = ("u" * 200).encode()
    socks_data = (b"\x05\x01\x02" + b"\x01" + bytes([len(long_user)]) + long_user + b"\x03pwd"
                  + b"\x05\x01\x00" + h.socks5_target_bytes("127.0.0.1", echo.port))
    http_data = ("GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n"
                 "X-Padding: %s\r\n\r\n" % (echo.port, h.basic_auth(U, P), "p" * 300)).encode()
    out = {}
    threads = [threading.Thread(target=drip_until_closed, args=(gwp.socks_port, socks_data, out,
                                                                 "socks5")),
               threading.Thread(target=drip_until_closed, args=(gwp.http_port, http_data, out,
                                                                 "http"))]
    for t in threads:
        t.start()
    time.sleep(0.5)
    s = h.proxy_stream(gwp, "socks5", "127.0.0.1", echo.port)
    try:
        h.check(echo_ok(s, "normal user") is True, "a normal user beside the slowloris failed")
    finally:
        s.close()
    for t in threads:
        t.join(15)
    limit = h.HANDSHAKE_TIMEOUT + h.slack(1.0)
    for key in ("socks5", "http"):
        secs, sent, how = out[key]
        h.note("%s slowloris: closed (%s) after %.2f s, %d bytes sent" % (key, how, secs, sent))
        h.check(how != "open", "%s slowloris: still open after %.1f s (%d bytes sent one by "
                "one): no handshake deadline" % (key, secs, sent))
        h.check(h.HANDSHAKE_TIMEOUT - 0.3 <= secs <= limit,
                "%s slowloris closed after %.2f s; handshake_timeout_ms is %d ms (limit %.1f s)"
                % (key, secs, h.HANDSHAKE_TIMEOUT_MS, limit))
        h.check(sent >= 5, "%s: the drip did not run (%d bytes)" % (key, sent))
    # each worker writes its log lines at the end of its loop iteration,
    # which may come just after the client saw its connection close
    def timed_out():
        return [l for l in gwp.find("User connection timed out", since=mark)
                if l.get("phase") == "handshake"]
    h.wait_until(lambda: len(timed_out()) >= 2, 5,
                 "the gateway to log 'User connection timed out phase=handshake' for both")


CONNECT_TIMEOUT_MS = 2000


def test_connect_timeout_silent_target(env):
    """[client] connect_timeout_ms = 2000: a target that drops SYNs gives
    SOCKS5 REP 0x06 and HTTP 504 (CONNECT and GET) after about 2 s."""
    gwp = h.proxy_gateway(env)
    agent = h.proxy_agent(env, "a", connect_timeout_ms=CONNECT_TIMEOUT_MS)
    hole = h.Blackhole()
    env.servers.append(hole)
    results = {}

    def socks():
        t0 = time.monotonic()
        r = h.socks5_open(gwp.socks_port, "127.0.0.1", hole.port, timeout=15)
        results["socks5"] = (time.monotonic() - t0, r.rep)
        r.sock.close()

    def connect():
        t0 = time.monotonic()
        st, body = http_refusal(gwp, "127.0.0.1", hole.port)
        results["connect"] = (time.monotonic() - t0, st)

    def get():
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", gwp.http_port), timeout=15)
        try:
            s.sendall(("GET http://127.0.0.1:%d/x HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "
                       "%s\r\n\r\n" % (hole.port, h.basic_auth(U, P))).encode())
            st, _, _, _ = h.read_http_head(s)
        finally:
            s.close()
        results["get"] = (time.monotonic() - t0, st)

    threads = [threading.Thread(target=f) for f in (socks, connect, get)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    want = {"socks5": 0x06, "connect": 504, "get": 504}
    lo, hi = CONNECT_TIMEOUT_MS / 1000 - 0.2, CONNECT_TIMEOUT_MS / 1000 + h.slack(1.0)
    for k, code in want.items():
        h.check(k in results, "%s did not finish" % k)
        secs, got = results[k]
        h.note("%s to a silent target: %r after %.2f s" % (k, got, secs))
        h.check(got == code, "%s to a silent target: got %r, expected %r" % (k, got, code))
        h.check(lo <= secs <= hi, "%s answered after %.2f s; connect_timeout_ms is %d ms"
                % (k, secs, CONNECT_TIMEOUT_MS))
    fails = [l for l in agent.find("Target connection failed") if l.get("reason") == "TIMEOUT"]
    h.check(len(fails) == 3, "the agent should log 3 TIMEOUT failures: %r" % fails)


IDLE_MS = 1500


def test_idle_timeout_not_a_read_deadline(env):
    """idle_timeout_ms = 1500: quiet SOCKS5 and CONNECT connections are closed
    (users and targets) about 1.5 s after their last byte; one that only
    receives (a byte every 300 ms) and one that only sends stay open for
    4.5 s; the sender is closed 1.5 s after it stops."""
    gwp = h.proxy_gateway(env, idle_timeout_ms=IDLE_MS)
    h.proxy_agent(env, "a")
    ended = []

    def echo_once(conn):
        try:
            b = conn.recv(100)
            conn.sendall(b)
            while conn.recv(100):
                pass
        except OSError:
            pass
        ended.append(time.monotonic())
    echo = server(env, echo_once)
    tick = server(env, h.ticker(0.3))
    sink_got = []

    def sink(conn):
        while True:
            b = conn.recv(100)
            if not b:
                return
            sink_got.append(len(b))
    sinkd = server(env, sink)
    mark = gwp.mark()
    quiet = []
    for how in ("socks5", "connect"):
        s = h.proxy_stream(gwp, how, "127.0.0.1", echo.port)
        h.check(echo_ok(s, "hi") is True, "echo through %s" % how)
        quiet.append((how, s, time.monotonic()))
    recv_only = h.proxy_stream(gwp, "socks5", "127.0.0.1", tick.port)
    send_only = h.proxy_stream(gwp, "connect", "127.0.0.1", sinkd.port)
    try:
        results = {}

        def watch_quiet(how, s, t_last):
            state = h.closed_state(s, 8)
            results[how] = (state, time.monotonic() - t_last)
        threads = [threading.Thread(target=watch_quiet, args=q) for q in quiet]
        for t in threads:
            t.start()
        # 4.5 s of one-way traffic on the two busy connections
        got = b""
        end = time.monotonic() + 3 * IDLE_MS / 1000
        send_only.settimeout(1)
        recv_only.settimeout(0.1)
        last_send = time.monotonic()
        while time.monotonic() < end:
            try:
                send_only.sendall(b"s")
                last_send = time.monotonic()
            except OSError as e:
                h.fail("the send-only connection was closed after %.1f s: %r"
                       % (end - time.monotonic(), e))
            t_next = time.monotonic() + 0.3
            while time.monotonic() < t_next:
                try:
                    b = recv_only.recv(100)
                except (socket.timeout, TimeoutError):
                    continue
                except OSError as e:
                    h.fail("the receive-only connection was reset: %r" % e)
                h.check(b, "the receive-only connection was closed while it received a byte "
                        "every 300 ms: idle_timeout acts as a read deadline")
                got += b
        for t in threads:
            t.join(10)
        lo, hi = IDLE_MS / 1000 - 0.2, IDLE_MS / 1000 + h.slack(1.0)
        for how, _, _ in quiet:
            state, secs = results[how]
            h.note("quiet %s connection: %s after %.2f s" % (how, state, secs))
            h.check(state is not None, "a quiet %s connection is still open after %.1f s "
                    "(idle_timeout_ms %d)" % (how, secs, IDLE_MS))
            h.check(lo <= secs <= hi, "quiet %s connection closed after %.2f s, idle_timeout_ms "
                    "is %d" % (how, secs, IDLE_MS))
        h.check(len(got) >= 10, "the receive-only user got %d ticks in 4.5 s" % len(got))
        h.check(sum(sink_got) >= 10, "the send-only target got %d bytes" % sum(sink_got))
        # a worker writes its lines at the end of its loop iteration, which
        # may come just after the client saw the close
        h.wait_until(lambda: len(gwp.find("User connection idle, closing", since=mark)) >= 2,
                     5, "the gateway to log both quiet connections as idle")
        idle_lines = gwp.find("User connection idle, closing", since=mark)
        h.check(len(idle_lines) == 2, "exactly the 2 quiet connections should be closed as idle "
                "so far: %r" % idle_lines)
        h.wait_until(lambda: len(ended) >= 2, 3, "the echo target to see both quiet "
                     "connections closed")
        # the sender stopped: now it is idle
        state = h.closed_state(send_only, 6)
        secs = time.monotonic() - last_send
        h.check(state is not None and lo <= secs <= hi,
                "the send-only connection, quiet since it stopped, was %s after %.2f s"
                % (state or "still open", secs))
        h.check(h.closed_state(recv_only, 0.3) is None,
                "the receive-only connection was closed meanwhile")
    finally:
        close_all([s for _, s, _ in quiet] + [recv_only, send_only])


# ---- limits --------------------------------------------------------------------------

def test_max_connections(env):
    """max_connections = 4: the fifth user gets SOCKS5 05 FF or HTTP 503 and
    a log line; the four admitted keep working; a freed slot is reused."""
    gwp = h.proxy_gateway(env, max_connections=4)
    h.proxy_agent(env, "a")
    echo = server(env, h.echo_handler)
    socks = [h.proxy_stream(gwp, how, "127.0.0.1", echo.port)
             for how in ("socks5", "connect", "socks5", "connect")]
    try:
        check_all_echo(socks, "admitted")
        mark = gwp.mark()
        r = h.socks5_open(gwp.socks_port, "127.0.0.1", echo.port)
        try:
            h.check(r.method == 0xFF and r.rep is None, "SOCKS5 user over max_connections: %r "
                    "(expected the method reply 05 FF)" % r)
            h.check(h.closed_state(r.sock, 3) is not None, "the refused SOCKS5 user was kept open")
        finally:
            r.sock.close()
        st, body = http_refusal(gwp, "127.0.0.1", echo.port)
        h.check(st == 503 and b"limit" in body, "HTTP user over max_connections: %r %r"
                % (st, body))
        lines = gwp.find("Connection limit reached, user refused", since=mark)
        h.check(1 <= len(lines) <= 2 and lines[0].get("max_connections") == "4"
                and lines[0].get("refused_total") == "1",
                "log lines for the two refusals: %r" % lines)
        # a burst of refusals is one line per second, each with the running
        # total: the flood is counted, not written out line by line
        burst = 30
        for _ in range(burst):
            r = h.socks5_open(gwp.socks_port, "127.0.0.1", echo.port)
            r.sock.close()
            h.check(r.method == 0xFF, "SOCKS5 user in the burst: %r" % r)
        time.sleep(1.1)
        r = h.socks5_open(gwp.socks_port, "127.0.0.1", echo.port)
        r.sock.close()
        last = gwp.wait_for_log(re.compile(r"Connection limit reached, user refused .*"
                                           r"refused_total=%d\b" % (2 + burst + 1)), 5,
                                since=mark)
        lines = gwp.find("Connection limit reached, user refused", since=mark)
        h.check(len(lines) < burst // 2, "%d refusals in a burst wrote %d lines"
                % (burst, len(lines)))
        h.note("%d refusals, %d log lines; the last: %r" % (burst + 3, len(lines), last))
        check_all_echo(socks, "after the refusals")
        socks.pop().close()

        def admitted():
            r = h.socks5_open(gwp.socks_port, "127.0.0.1", echo.port)
            if r.rep == 0:
                return r.sock
            r.sock.close()
            return None
        socks.append(h.wait_until(admitted, 5, "a freed slot to admit a new user", interval=0.2))
        check_all_echo(socks, "with the freed slot reused")
    finally:
        close_all(socks)


def test_max_connections_per_group(env):
    """max_connections_per_group = 3: a fourth stream of group g gets SOCKS5
    REP 0x01 / HTTP 503 "connection limit of group 'g' reached"; the default
    group has its own 3; g's streams keep working; a freed slot is reused."""
    gwp = h.proxy_gateway(env, max_connections_per_group=3)
    h.proxy_agent(env, "ga", group_id="g")
    h.proxy_agent(env, "da")
    echo = server(env, h.echo_handler)
    g_user = U + ".g"
    g = [h.proxy_stream(gwp, how, "127.0.0.1", echo.port, user=g_user)
         for how in ("socks5", "connect", "socks5")]
    d = []
    try:
        mark = gwp.mark()
        r = h.socks5_open(gwp.socks_port, "127.0.0.1", echo.port, user=g_user)
        r.sock.close()
        h.check(r.rep == 0x01, "SOCKS5 fourth stream of group g: %r, expected REP 0x01" % r)
        st, body = http_refusal(gwp, "127.0.0.1", echo.port, user=g_user)
        h.check(st == 503 and b"connection limit of group 'g' reached" in body,
                "HTTP fourth stream of group g: %r %r" % (st, body))
        lines = gwp.find("Group connection limit reached, user refused", since=mark)
        h.check(len(lines) == 2 and all(l.get("group") == "g" for l in lines),
                "log lines for the group refusals: %r" % lines)
        d = [h.proxy_stream(gwp, how, "127.0.0.1", echo.port)
             for how in ("socks5", "connect", "socks5")]
        check_all_echo(g + d, "admitted")
        groups = env.groups()
        h.check(groups["g"]["streams_active"] == 3 and groups[""]["streams_active"] == 3,
                "apctl groups: %r" % groups)
        g.pop(0).close()
        h.wait_until(lambda: env.groups()["g"]["streams_active"] == 2, 5,
                     "group g's closed stream to be released")
        g.append(h.proxy_stream(gwp, "connect", "127.0.0.1", echo.port, user=g_user))
        check_all_echo(g + d, "after the slot was reused")
    finally:
        close_all(g + d)


def refused_everywhere(env, gwp, port, user, what):
    """SOCKS5 and CONNECT for `user` are both refused; returns the replies."""
    r = h.socks5_open(gwp.socks_port, "127.0.0.1", port, user=user)
    r.sock.close()
    st, body = http_refusal(gwp, "127.0.0.1", port, user=user)
    h.check(r.rep not in (None, 0), "%s: SOCKS5 should be refused with an error REP: %r"
            % (what, r))
    h.check(st in (502, 503), "%s: CONNECT should be refused with 502/503: %r %r"
            % (what, st, body))
    return r.rep, st, body


def test_max_streams_per_tunnel_two_replicas(env):
    """max_streams_per_tunnel = 2 with replicas = 2: four streams fit, also
    when round-robin points at the full tunnel (opens and closes arranged
    so); the fifth is refused; the four keep working."""
    gwp = h.proxy_gateway(env, max_streams_per_tunnel=2)
    h.proxy_agent(env, "two", group_id="g", replicas=2)
    echo = server(env, h.echo_handler)
    user = U + ".g"
    s = {}
    try:
        for k in ("s1", "s2", "s3"):
            s[k] = h.proxy_stream(gwp, "socks5", "127.0.0.1", echo.port, user=user)
        s.pop("s2").close()
        h.wait_until(lambda: env.clients()["two"]["streams_active"] == 2, 5,
                     "the closed stream to be released")
        # s1 and s3 share one tunnel when the gateway alternates: the next
        # two streams must both go to the other one
        for k, how in (("s4", "connect"), ("s5", "socks5")):
            s[k] = h.proxy_stream(gwp, how, "127.0.0.1", echo.port, user=user)
        rep, st, body = refused_everywhere(env, gwp, echo.port, user, "fifth stream")
        h.note("all tunnels full: SOCKS5 REP 0x%02x, HTTP %d %r" % (rep, st, body.strip()))
        check_all_echo(list(s.values()), "admitted")
        h.check(env.clients()["two"]["streams_active"] == 4, "apctl: %r" % env.clients())
    finally:
        close_all(s.values())


def test_max_streams_per_tunnel_one_tunnel(env):
    """max_streams_per_tunnel = 2 with one tunnel: the third stream is refused
    with a clear error and a log line; the two keep working; a freed slot
    is reused."""
    gwp = h.proxy_gateway(env, max_streams_per_tunnel=2)
    h.proxy_agent(env, "one", group_id="g")
    echo = server(env, h.echo_handler)
    user = U + ".g"
    s = [h.proxy_stream(gwp, how, "127.0.0.1", echo.port, user=user)
         for how in ("socks5", "connect")]
    try:
        mark = gwp.mark()
        rep, st, body = refused_everywhere(env, gwp, echo.port, user, "third stream")
        h.note("one full tunnel: SOCKS5 REP 0x%02x, HTTP %d %r" % (rep, st, body.strip()))
        check_all_echo(s, "admitted")
        logged = "\n".join(l.raw for l in gwp.lines(mark) if l.level != "DEBUG")
        problems = []
        words = ("limit", "max_streams_per_tunnel", "full")
        if not any(w in logged.lower() for w in words):
            problems.append("the gateway's log does not name the limit:\n" + logged)
        if not any(w.encode() in body.lower() for w in words):
            problems.append("the HTTP body does not name the limit: %r" % body)
        if rep != 0x01:
            problems.append("SOCKS5 REP 0x%02x; a limit is REP 0x01 (docs/protocol.md, open "
                            "reason LIMIT)" % rep)
        s.pop().close()
        h.wait_until(lambda: env.clients()["one"]["streams_active"] == 1, 5,
                     "the closed stream to be released")
        s.append(h.proxy_stream(gwp, "socks5", "127.0.0.1", echo.port, user=user))
        check_all_echo(s, "after the slot was reused")
        h.check(not problems, "a tunnel full by max_streams_per_tunnel must be refused as a "
                "limit, not as 'no clients available':\n" + "\n".join(problems))
    finally:
        close_all(s)


def test_full_group_does_not_fall_back(env):
    """max_streams_per_tunnel = 1: when group g's only tunnel is full, a user
    of g is refused; the stream is not carried by the default group's agent
    (docs/config.md: "another tunnel of the group does, if any"; falling back
    is for a group without clients, and would let a limit move a tenant's
    traffic to another exit)."""
    gwp = h.proxy_gateway(env, max_streams_per_tunnel=1)
    h.proxy_agent(env, "g1", group_id="g")
    h.proxy_agent(env, "dflt")
    echo = server(env, h.echo_handler)
    user = U + ".g"
    first = h.proxy_stream(gwp, "socks5", "127.0.0.1", echo.port, user=user)
    try:
        before = h.stream_totals(env)
        r = h.socks5_open(gwp.socks_port, "127.0.0.1", echo.port, user=user)
        r.sock.close()
        after = h.stream_totals(env)
        h.check(echo_ok(first, "first") is True, "the admitted stream was harmed")
        h.check(after.get("dflt") == before.get("dflt"),
                "a stream of group g went to the default group's agent because g's tunnel was "
                "full (SOCKS5 REP %r): %r -> %r" % (r.rep, before, after))
        h.check(r.rep not in (None, 0), "the second stream of g: %r" % r)
    finally:
        first.close()


def test_max_clients(env):
    """max_clients = 2: a third agent is refused with ERROR LIMIT, logged on
    both sides, and keeps retrying; the two registered agents are not
    disturbed and keep serving; once one leaves, the third gets in."""
    gwp = h.proxy_gateway(env, max_clients=2)
    a = h.proxy_agent(env, "a", group_id="g", replicas=2)
    b = h.proxy_agent(env, "b")
    echo = server(env, h.echo_handler)
    gmark = gwp.mark()
    marks = {d: d.mark() for d in (a, b)}
    c = h.proxy_agent(env, "c", group_id="g", wait=False)
    c.wait_for_log("Reconnecting to gateway", 5 + h.slack(), count=3)
    errs = c.find("Gateway reported an error")
    h.check(errs and all(e.get("code", "").upper() == "LIMIT" for e in errs),
            "agent c should log 'Gateway reported an error code=LIMIT': %r" % errs)
    rejected = [l for l in gwp.find("Client rejected", since=gmark) if l.get("client_id") == "c"]
    h.check(len(rejected) >= 2 and "max_clients" in rejected[0].get("reason", ""),
            "the gateway should log each refusal of c with its reason: %r" % rejected)
    clients = env.clients()
    h.check(set(clients) == {"a", "b"} and clients["a"]["tunnels"] == 2,
            "apctl with c refused: %r" % clients)
    for d in (a, b):
        h.check(not d.find("Disconnected from gateway", since=marks[d]),
                "%s was disturbed by the refused agent:\n%s" % (d.name, d.tail()))
    h.check(not gwp.find("Client disconnected", since=gmark), "a registered agent was dropped")
    for user in (U + ".g", U):
        s = h.proxy_stream(gwp, "socks5", "127.0.0.1", echo.port, user=user)
        try:
            h.check(echo_ok(s, user) is True, "registered agents should still serve %s" % user)
        finally:
            s.close()
    # once a registered agent leaves, the retrying one gets in
    b.stop()
    env.wait_listed("c", tunnels=1, timeout=h.RECONNECT_MAX + 3 + h.slack(2), daemon=c)
    h.check(set(env.clients()) == {"a", "c"}, "after b left: %r" % env.clients())


def test_replica_index_bounded(env):
    """A HELLO's replica index is below 64 ([client] replicas is at most
    64): 64 is refused with ERROR BAD_HELLO, so one client_id cannot hold
    65,536 tunnels; 63 is accepted."""
    h.proxy_gateway(env)
    ca = os.path.join(env.certs, "ca.crt")
    fc = h.FrameConn(env.port, ca)
    try:
        fc.send(h.hello("r", "g", replica=64))
        f = fc.recv_frame()
        h.check(f is not None and f[0] == h.FRAME_ERROR and
                h.error_code(f[2]) == h.ERR_BAD_HELLO, "replica 64 answered with %r" % (f,))
    finally:
        fc.close()
    fc = h.FrameConn(env.port, ca)
    try:
        fc.hello("r", "g", replica=63)
        h.check("r" in env.clients(), "replica 63 was not registered")
    finally:
        fc.close()


# ---- EMFILE ------------------------------------------------------------------------

NOFILE = 64


class LimitedDaemon(h.Daemon):
    """A Daemon started with RLIMIT_NOFILE = .nofile (soft, hard)."""
    nofile = (NOFILE, NOFILE)

    def start(self):
        binary = h.gateway_bin() if self.kind == "gateway" else h.client_bin()

        def lower():
            resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "-c", self.config] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.testenv.dir, env=h._daemon_env(self.extra_env),
                                         preexec_fn=lower)
        self.starts += 1
        self.rc = None
        self.hard_killed = False
        self.expect_unclean = False
        h._live.append(self)
        return self


def limited_proxy_gateway(env, nofile=(NOFILE, NOFILE), **keys):
    merged = dict(h.PROXY_GATEWAY)
    merged.update(keys)
    config = env.gateway_config("gateway", **merged)
    http_port, socks_port = h.free_port(), h.free_port()
    with open(config, "a") as f:
        for section, port in (("proxy.http", http_port), ("proxy.socks5", socks_port)):
            f.write("\n[%s]\nlisten_addr = 127.0.0.1:%d\nauth_username = %s\n"
                    "auth_password = %s\n" % (section, port, U, P))
    gw = LimitedDaemon(env, "gateway", "gateway", config)
    gw.nofile = nofile
    env.daemons.append(gw)
    gw.start()
    gw.http_port, gw.socks_port = http_port, socks_port
    env.gw = gw
    env.wait_gateway_ready(gw)
    for port in (http_port, socks_port):
        h.wait_until(lambda: h._port_open("127.0.0.1", port), 5, "listener %d" % port)
    return gw


def test_soft_nofile_raised_to_hard(env):
    """Started with a soft RLIMIT_NOFILE of 256 under a hard one of 4096 (a
    shell's or service manager's usual 1024 under a higher hard limit), the
    gateway raises the soft limit to the hard one, says so, and derives its
    connection limit from the raised value."""
    gwp = limited_proxy_gateway(env, nofile=(256, 4096))
    with open("/proc/%d/limits" % gwp.pid) as f:
        row = [l for l in f if l.startswith("Max open files")]
    h.check(row and row[0].split()[3:5] == ["4096", "4096"],
            "the gateway's open files limit: %r" % row)
    line = gwp.wait_for_log("Open files limit raised", 5)
    h.check(line.level == "INFO" and line["from"] == "256" and line["to"] == "4096", repr(line))
    line = gwp.wait_for_log("Connection limit", 5)
    h.check(line["rlimit_nofile"] == "4096", "connection limit derived from %r" % line)
    # one group's tunnels: half of the RLIMIT_NOFILE / 16 kept for tunnels
    h.check(line["max_tunnels_per_group"] == "128", "group tunnel limit: %r" % line)


def test_accept_survives_emfile(env):
    """The gateway runs with RLIMIT_NOFILE = 64. Users connect until it runs
    out of descriptors (accept fails with EMFILE: later users wait unanswered
    in the backlog); once the first ones leave, the waiting ones are served
    and new users get full relayed connections again."""
    # an explicit max_connections above the descriptors: the derived
    # default (0) would refuse users before the process runs out
    gwp = limited_proxy_gateway(env, handshake_timeout_ms=30000, max_connections=1000)
    h.proxy_agent(env, "a")
    echo = server(env, h.echo_handler)
    with open("/proc/%d/limits" % gwp.pid) as f:
        h.check(any(l.startswith("Max open files") and " %d " % NOFILE in l for l in f),
                "the gateway does not run with RLIMIT_NOFILE %d" % NOFILE)
    mark = gwp.mark()
    started = time.monotonic()
    conns = []
    try:
        for _ in range(NOFILE + 30):
            s = socket.create_connection(("127.0.0.1", gwp.socks_port), timeout=5)
            s.sendall(b"\x05\x01\x02")
            conns.append(s)
        answered, waiting = [], []
        time.sleep(1.0)
        for s in conns:
            s.settimeout(0.05)
            try:
                b = s.recv(2)
            except (socket.timeout, TimeoutError):
                waiting.append(s)
                continue
            except OSError:
                b = b""
            answered.append((s, b))
        h.note("%d of %d users answered before the gateway ran out of descriptors"
               % (len(answered), len(conns)))
        h.check(waiting, "all %d users were answered: the limit of %d descriptors was never "
                "reached" % (len(conns), NOFILE))
        h.check(all(b == b"\x05\x02" for _, b in answered), "answers: %r"
                % [b for _, b in answered][:5])
        paused = gwp.find("Accept paused", since=mark)
        h.check(paused, "no 'Accept paused' line:\n%s" % gwp.tail())
        # a retry every 100 ms, said at most once a second per listener and
        # worker (the SOCKS5 listener of each of the gateway's workers)
        elapsed = time.monotonic() - started
        h.check(len(paused) <= 2 * (int(elapsed) + 1),
                "%d 'Accept paused' lines in %.1f s" % (len(paused), elapsed))
        h.check(int(paused[-1]["pauses_total"]) >= 1, repr(paused[-1]))
        h.check(gwp.alive(), "the gateway died at EMFILE")
        for s, _ in answered:
            s.close()

        pending = list(waiting)

        def drained():
            for s in list(pending):
                s.settimeout(0.01)
                try:
                    b = s.recv(2)
                except (socket.timeout, TimeoutError):
                    continue
                except OSError:
                    b = b"reset"
                h.check(b == b"\x05\x02", "a waiting user got %r once accepted" % b)
                pending.remove(s)
            return not pending
        h.wait_until(drained, 5 + h.slack(), "the %d users waiting in the backlog to be "
                     "accepted after descriptors were freed" % len(waiting), interval=0.1)
        close_all(conns)
        conns = []
        time.sleep(0.3)
        fresh = [h.proxy_stream(gwp, how, "127.0.0.1", echo.port)
                 for how in ("socks5", "connect") * 5]
        conns = fresh
        check_all_echo(fresh, "after EMFILE")
        h.check(env.apctl("groups")[0] == 0, "apctl after EMFILE")
    finally:
        close_all(s if isinstance(s, socket.socket) else s[0] for s in conns)


if __name__ == "__main__":
    h.run([
        test_soft_nofile_raised_to_hard,
        test_slowloris_socks5_and_http,
        test_connect_timeout_silent_target,
        test_idle_timeout_not_a_read_deadline,
        test_max_connections,
        test_max_connections_per_group,
        test_max_streams_per_tunnel_two_replicas,
        test_max_streams_per_tunnel_one_tunnel,
        test_full_group_does_not_fall_back,
        test_max_clients,
        test_replica_index_bounded,
        test_accept_survives_emfile,
    ])
