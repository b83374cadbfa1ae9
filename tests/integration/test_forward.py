#!/usr/bin/env python3
"""Port forwarding through a group (issue 13 item 1, docs/usage.md "Port forwarding").

A [forward.NAME] section opens a port on the gateway whose connections go,
with no handshake, to one target through an agent of one group. Each case
runs a real gateway with forwards and real agents, and talks to the forward
port with real clients (curl, raw sockets): HTTP, a raw TCP exchange with a
half-close in each direction, allowed_sources, a TCP and a UDP target the
agent's host rules forbid, the agent going away and coming back, group
isolation, and apctl forwards.
"""
import hashlib
import os
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DENIED = "Target denied by host rules"
NOT_REACHED = "Forward target not reached, connection closed"


def forward_gateway(env, forwards, groups=None, **keys):
    """A gateway (no proxy listeners) with [forward.NAME] sections: forwards
    maps NAME to its keys; groups maps a [group.NAME] to its keys."""
    merged = dict(h.PROXY_GATEWAY)
    merged.update(keys)
    config = env.gateway_config("gateway", **merged)
    with open(config, "a") as f:
        for kind, sections in (("group", groups or {}), ("forward", forwards)):
            for name, kv in sections.items():
                f.write("\n[%s.%s]\n" % (kind, name))
                f.write("".join("%s = %s\n" % (k, v) for k, v in kv.items()))
    gw = env.start("gateway", "gateway", config)
    env.gw = gw
    # the forwards listen before "Gateway started": no probe is needed (a
    # probe would be a connection of its own, logged and counted)
    env.wait_gateway_ready(gw)
    return gw


def connect(port, source=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_all(s):
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            return out
        out += b


def closed_without_data(s):
    """The forward closed the connection without a byte (EOF or reset)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def upper_after_eof(conn):
    """RawServer handler: read to EOF, then answer the bytes upper-cased and
    a summary line: it answers only once the FIN has arrived."""
    got = b""
    while True:
        b = conn.recv(65536)
        if not b:
            break
        got += b
    conn.sendall(got.upper() + b"\nlen=%d sha=%s\n" % (len(got),
                                                     hashlib.sha256(got).hexdigest().encode()))


def UdpServer(host="127.0.0.1"):
    """DNS-style: the reply echoes the request's first two bytes (its id)."""
    return h.UdpServer(host, answer=lambda d: d[:2] + b"\x81\x80" + d[4:])


def dns_query(qid, name):
    """A DNS-shaped request: id, flags, one question."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\x00\x01\x00\x01"


def udp_exchange(port, payload, source=None, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    try:
        s.sendto(payload, ("127.0.0.1", port))
        return s.recvfrom(65536)[0]
    except (socket.timeout, TimeoutError):
        return None
    finally:
        s.close()


# ---- cases -----------------------------------------------------------------------------

def test_http_through_forward(env):
    """curl reaches a web application through the forward; the agent's log
    names the synthetic user forward:NAME, the gateway's the group."""
    target = h.HttpTarget("127.0.0.1", name="app")
    env.servers.append(target)
    port = h.free_port()
    gw = forward_gateway(env, {"web": {"listen_addr": "127.0.0.1:%d" % port,
                                       "target": "localhost:%d" % target.port,
                                       "group": "prod"}})
    agent = h.proxy_agent(env, "a1", "prod")
    r = h.curl(["-o", "-", "http://127.0.0.1:%d/gen?size=200000&seed=7" % port])
    h.check(r.returncode == 0, "curl through the forward failed: %r" % r.stderr)
    h.check(r.stdout == h.gen_bytes(200000, 7), "the body through the forward differs")
    line = gw.wait_for_log("Gateway received request", 5)
    h.check(line["user"] == "forward:web" and line["group"] == "prod" and
            line["proxy"] == "forward", "gateway request line: %r" % line)
    line = agent.wait_for_log("Stream open requested", 5)
    h.check(line["user"] == "forward:web" and line["target"] == "localhost:%d" % target.port,
            "the agent's OPEN line: %r" % line)


def test_half_close(env):
    """A raw TCP exchange where the target answers only after the user's FIN:
    shutdown(SHUT_WR) travels through the tunnel and the answer comes back."""
    target = h.RawServer(upper_after_eof)
    env.servers.append(target)
    port = h.free_port()
    forward_gateway(env, {"echo": {"listen_addr": "127.0.0.1:%d" % port,
                                   "target": "127.0.0.1:%d" % target.port}})
    h.proxy_agent(env, "a1")
    payload = h.gen_bytes(300000, 3)
    s = connect(port)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    answer = read_all(s)
    s.close()
    want = payload.upper() + b"\nlen=%d sha=%s\n" % (len(payload),
                                                     hashlib.sha256(payload).hexdigest().encode())
    h.check(answer == want, "half-closed exchange: got %d bytes, want %d" % (len(answer),
                                                                             len(want)))


def greet_then_hash(results, size, seed):
    """RawServer handler factory: send `size` bytes of gen_chunks(seed),
    close the write side first (FIN to the user while the user still
    sends), then read to EOF and record (length, sha256) in results."""
    def handler(conn):
        for c in h.gen_chunks(size, seed):
            conn.sendall(c)
        conn.shutdown(socket.SHUT_WR)
        results.append(h.sha256_to_eof(conn))
    return handler


def test_half_close_by_the_target(env):
    """The other direction: the target sends its greeting and closes its
    write side first. The user gets the whole greeting and then EOF, and
    can still send: everything it sends after that reaches the target
    (which records what it read); the user's own FIN then ends the
    connection."""
    greeting, payload = 200000, h.gen_bytes(300000, 4)
    results = []
    target = h.RawServer(greet_then_hash(results, greeting, 9))
    env.servers.append(target)
    port = h.free_port()
    forward_gateway(env, {"greet": {"listen_addr": "127.0.0.1:%d" % port,
                                    "target": "127.0.0.1:%d" % target.port}})
    h.proxy_agent(env, "a1")
    s = connect(port)
    try:
        got = read_all(s)
        h.check(got == h.gen_bytes(greeting, 9),
                "the greeting before the target's FIN: got %d bytes, want %d"
                % (len(got), greeting))
        h.check(env.apctl_json("forwards")[0]["connections_active"] == 1,
                "the target's FIN ended the whole connection")
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        h.wait_until(lambda: results, 5 + h.slack(), "the target to read to EOF")
    finally:
        s.close()
    h.check(results == [(len(payload), hashlib.sha256(payload).hexdigest())],
            "after its FIN the target read %r, want %d bytes" % (results, len(payload)))
    h.check(not target.errors, "target errors: %r" % target.errors)
    h.wait_until(lambda: env.apctl_json("forwards")[0]["connections_active"] == 0,
                 5 + h.slack(), "the connection to end after both FINs")


def test_allowed_sources(env):
    """Only 127.0.0.2/32 may connect: 127.0.0.1 is closed at once (and
    logged, naming the forward), 127.0.0.2 gets through; apctl counts both."""
    target = h.RawServer(h.echo_handler)
    env.servers.append(target)
    port = h.free_port()
    gw = forward_gateway(env, {"ssh": {"listen_addr": "127.0.0.1:%d" % port,
                                       "target": "127.0.0.1:%d" % target.port,
                                       "allowed_sources": "127.0.0.2/32"}})
    h.proxy_agent(env, "a1")
    before = env.apctl_json("forwards")[0]
    mark = gw.mark()
    s = connect(port)
    h.check(closed_without_data(s), "a source outside allowed_sources was not closed")
    s.close()
    line = gw.wait_for_log("Forward refused a source not in allowed_sources", 5, since=mark)
    h.check(line["forward"] == "ssh" and line["remote_addr"].startswith("127.0.0.1:"),
            "refusal line: %r" % line)
    h.check(target.accepted == 0, "a refused source reached the target")
    s = connect(port, source="127.0.0.2")
    s.sendall(b"hello")
    h.check(h.recv_exact(s, 5) == b"hello", "the allowed source got no echo")
    rows = env.apctl_json("forwards")
    h.check(len(rows) == 1, "apctl forwards: %r" % rows)
    row = rows[0]
    h.check(row["name"] == "ssh" and row["protocol"] == "tcp" and row["group_id"] == "" and
            row["target"] == "127.0.0.1:%d" % target.port and
            row["listen_addr"] == "127.0.0.1:%d" % port, "apctl forwards row: %r" % row)
    h.check(row["connections_active"] == 1 and
            row["connections_total"] - before["connections_total"] == 2 and
            row["refused_sources"] - before["refused_sources"] == 1,
            "apctl forwards counters: %r (before: %r)" % (row, before))
    s.close()
    h.wait_until(lambda: env.apctl_json("forwards")[0]["connections_active"] == 0, 5,
                 "the closed connection to leave connections_active")
    rc, out, err = env.apctl("forwards")
    h.check(rc == 0 and "NAME" in out and "ssh" in out and "127.0.0.2" not in out,
            "apctl forwards prints: %r %r" % (out, err))


def test_forbidden_target(env):
    """The agent's forbidden_hosts apply to a forward's target: the user's
    connection is closed, the agent logs the denial, the gateway a WARN
    naming the forward, and the target is never dialled."""
    target = h.RawServer(h.echo_handler, host="127.0.0.3")
    env.servers.append(target)
    port = h.free_port()
    gw = forward_gateway(env, {"db": {"listen_addr": "127.0.0.1:%d" % port,
                                      "target": "127.0.0.3:%d" % target.port}})
    agent = h.proxy_agent(env, "a1", forbidden_hosts="127.0.0.3")
    mark = gw.mark()
    s = connect(port)
    h.check(closed_without_data(s), "a forbidden target's forward connection stayed open")
    s.close()
    denied = agent.wait_for_log(DENIED, 5)
    h.check(denied["user"] == "forward:db", "the agent's denial line: %r" % denied)
    line = gw.wait_for_log(NOT_REACHED, 5, since=mark)
    h.check(line["forward"] == "db" and line["reason"] == "NOT_ALLOWED",
            "gateway refusal line: %r" % line)
    h.check(line.level == "WARN", "the refusal is a WARN: %r" % line)
    h.check(target.accepted == 0, "the forbidden target was dialled")


def test_agent_away_and_back(env):
    """With the group's only agent killed, a forward connection is closed
    (no agent); once an agent of the group is back it works again. A
    sectioned group never falls back to the default group's agent."""
    target = h.RawServer(h.echo_handler)
    env.servers.append(target)
    port = h.free_port()
    gw = forward_gateway(env, {"svc": {"listen_addr": "127.0.0.1:%d" % port,
                                       "target": "127.0.0.1:%d" % target.port,
                                       "group": "tenant"}},
                         groups={"tenant": {"auth_password": "tenant-secret"}})
    agent = h.proxy_agent(env, "t1", "tenant")
    h.proxy_agent(env, "d1")  # the default group: never used by this forward

    def echo_ok():
        s = connect(port)
        try:
            s.sendall(b"ping")
            return h.recv_exact(s, 4) == b"ping"
        finally:
            s.close()

    h.check(echo_ok(), "the forward did not work with its agent up")
    agent.kill9()
    env.wait_gone("t1", 15)
    mark = gw.mark()
    s = connect(port)
    h.check(closed_without_data(s), "the forward kept a connection open with no agent")
    s.close()
    line = gw.wait_for_log("no clients available in group 'tenant'", 5, since=mark)
    h.check(line.get("no_fallback") == "the group has a [group.NAME] section",
            "no-agent line: %r" % line)
    h.check(not gw.find("Selected client from default group", since=mark),
            "a sectioned group's forward fell back to the default group")
    h.proxy_agent(env, "t1", "tenant", name="agent-t1-again")
    h.check(echo_ok(), "the forward did not work again once the agent was back")


def test_default_group_fallback(env):
    """A forward to a group without a section falls back to the default
    group while fallback_to_default is on, as a user would."""
    target = h.RawServer(h.echo_handler)
    env.servers.append(target)
    port = h.free_port()
    gw = forward_gateway(env, {"loose": {"listen_addr": "127.0.0.1:%d" % port,
                                         "target": "127.0.0.1:%d" % target.port,
                                         "group": "nobody"}})
    h.proxy_agent(env, "d1")
    s = connect(port)
    s.sendall(b"abc")
    h.check(h.recv_exact(s, 3) == b"abc", "the fallback forward got no echo")
    s.close()
    gw.wait_for_log("No clients available in group group=nobody, falling back to default", 5)


def test_config_refused(env):
    """--check-config refuses a forward sharing a port with the tunnel
    listener, naming the section."""
    config = env.gateway_config("bad")
    with open(config, "a") as f:
        f.write("\n[forward.x]\nlisten_addr = 127.0.0.1:%d\ntarget = h:1\n" % env.port)
    r = subprocess.run([h.gateway_bin(), "-c", config, "--check-config"],
                       capture_output=True, text=True, timeout=10)
    h.check(r.returncode != 0 and "[forward.x] listen_addr: same port as [gateway]" in r.stderr,
            "check-config: rc %d, %r" % (r.returncode, r.stderr))


def test_udp_forward(env):
    """DNS-style request/response datagrams through a UDP forward: each
    client (source port) gets its own answers; a source outside
    allowed_sources gets nothing; apctl shows the forward as udp."""
    server = UdpServer()
    env.servers.append(server)
    port = h.free_port()
    gw = forward_gateway(env, {"dns": {"listen_addr": "127.0.0.1:%d" % port,
                                       "target": "localhost:%d" % server.port,
                                       "protocol": "udp", "group": "prod",
                                       "allowed_sources": "127.0.0.0/30"}})
    agent = h.proxy_agent(env, "a1", "prod")
    for qid in (0x1234, 0x4321):
        q = dns_query(qid, "example.internal")
        r = udp_exchange(port, q)
        h.check(r == q[:2] + b"\x81\x80" + q[4:], "DNS-style answer %r to %r" % (r, q))
    # a 4000-byte datagram arrives whole
    big = h.gen_bytes(4000, 5)
    r = udp_exchange(port, big)
    h.check(r is not None and r[4:] == big[4:], "a 4000-byte datagram through the forward")
    h.check(udp_exchange(port, b"xx", source="127.0.0.9", timeout=1) is None,
            "a source outside allowed_sources got an answer")
    gw.wait_for_log("Forward refused a source not in allowed_sources", 5)
    line = agent.wait_for_log("Datagram association opened", 5)
    h.check(line["user"] == "forward:dns", "agent association line: %r" % line)
    row = env.apctl_json("forwards")[0]
    h.check(row["protocol"] == "udp" and row["connections_total"] == 3 and
            row["refused_sources"] == 1, "apctl forwards for udp: %r" % row)
    h.check(all(p[0] == "127.0.0.1" for _, p in server.seen), "server saw %r" % server.seen)


def test_udp_forward_forbidden_target(env):
    """A UDP forward to a target the agent's forbidden_hosts names: the
    association opens (the gateway cannot know the agent's rules), but the
    agent drops every datagram, logs the denial and counts it in
    anyproxy_agent_host_denials_total, so nothing reaches the target and no
    answer comes back. The same agent carries a UDP forward
    to an allowed target, so it is the rule, not the agent, that drops."""
    denied = UdpServer("127.0.0.3")
    allowed = UdpServer()
    env.servers += [denied, allowed]
    dport, aport = h.free_port(), h.free_port()
    gw = forward_gateway(env, {"no": {"listen_addr": "127.0.0.1:%d" % dport,
                                      "target": "127.0.0.3:%d" % denied.port,
                                      "protocol": "udp"},
                               "yes": {"listen_addr": "127.0.0.1:%d" % aport,
                                       "target": "127.0.0.1:%d" % allowed.port,
                                       "protocol": "udp"}})
    config = env.client_config("agent-a1", "a1", forbidden_hosts="127.0.0.3",
                               **h.PROXY_CLIENT)
    metrics_port = h.free_port()
    h.add_section(config, "metrics", {"listen_addr": "127.0.0.1:%d" % metrics_port})
    agent = env.agent("a1", config=config)
    h.wait_until(lambda: h._port_open("127.0.0.1", metrics_port), 5 + h.slack(),
                 "the agent's metrics listener")
    denials = ("anyproxy_agent_host_denials_total",
               (("rule", "127.0.0.3"), ("verdict", "forbidden")))
    mark = gw.mark()
    for qid in (0x0101, 0x0202):
        h.check(udp_exchange(dport, dns_query(qid, "forbidden.internal"), timeout=1) is None,
                "a datagram to a forbidden target was answered")
    line = agent.wait_for_log("Datagram denied by host rules", 5)
    h.check(line.level == "WARN" and line["user"] == "forward:no" and
            line["target"] == "127.0.0.3:%d" % denied.port and
            line["verdict"] == "forbidden" and line["rule"] == "127.0.0.3",
            "the agent's denial line: %r" % line)
    q = dns_query(0x0303, "allowed.internal")
    h.check(udp_exchange(aport, q) == q[:2] + b"\x81\x80" + q[4:],
            "the allowed forward through the same agent got no answer")
    h.check(denied.seen == [], "the forbidden target received %r" % denied.seen)
    # each dropped datagram is a host-rule denial in the agent's metrics
    got = h.scrape_metrics(metrics_port).get(denials, 0)
    h.check(got == 2, "%s%r: %r, want 2 (one per datagram)" % (denials[0], denials[1], got))
    # what the gateway sees: three associations opened through a1 (one per
    # client socket), nothing refused or failed at its end
    opened = gw.find("Datagram association opened", since=mark)
    h.check(len([l for l in opened if l.get("client_id") == "a1"]) == 3,
            "associations opened: %r" % opened)
    h.check(not gw.find("Forward target not reached", since=mark),
            "the gateway reported the forward target as not reached")
    rows = {r["name"]: r for r in env.apctl_json("forwards")}
    h.check(rows["no"]["connections_total"] == 2 and rows["no"]["refused_sources"] == 0,
            "apctl forwards row of the forbidden forward: %r" % rows["no"])


def test_udp_old_agent(env):
    """An agent without the DATAGRAM capability (HELLO capabilities 0: an
    older version) gets no DGRAM frame: the gateway's HELLO_OK does not
    offer it, a UDP forward's datagram is dropped with the no-agent line,
    and a TCP forward through the same agent still gets its OPEN."""
    server = UdpServer()
    env.servers.append(server)
    uport, tport = h.free_port(), h.free_port()
    gw = forward_gateway(env, {"dns": {"listen_addr": "127.0.0.1:%d" % uport,
                                       "target": "127.0.0.1:%d" % server.port,
                                       "protocol": "udp", "group": "old"},
                               "web": {"listen_addr": "127.0.0.1:%d" % tport,
                                       "target": "127.0.0.1:80", "group": "old"}},
                         groups={"old": {"auth_password": "old-secret"}})
    fc = h.FrameConn(env.port, os.path.join(env.certs, "ca.crt"))
    ok = fc.hello("old-agent", "old", capabilities=0xffffffff)
    caps = struct.unpack(">I", ok[4:8])[0]
    h.check(caps == 1, "HELLO_OK offers the capabilities both have (DATAGRAM): %#x" % caps)
    fc.close()
    fc = h.FrameConn(env.port, os.path.join(env.certs, "ca.crt"))
    ok = fc.hello("old-agent", "old", capabilities=0, instance=7)
    h.check(struct.unpack(">I", ok[4:8])[0] == 0, "HELLO_OK to an old agent offers nothing")
    h.wait_until(lambda: "old-agent" in env.clients(), 5, "the old agent to register")
    h.check(udp_exchange(uport, b"\x12\x34query", timeout=1) is None,
            "a datagram was answered with no agent carrying datagrams")
    line = gw.wait_for_log("no clients carrying datagrams available in group 'old'", 5)
    h.check(line.get("no_fallback") == "the group has a [group.NAME] section", repr(line))
    s = connect(tport)
    f = fc.recv_frame(timeout=5)
    h.check(f is not None and f[0] == 0x10, "the old agent got %r, not an OPEN" % (f,))
    s.close()
    fc.close()


def test_udp_forward_agent_back(env):
    """The agent of a UDP forward's association goes away: the association
    ends with its tunnel, and the client's next datagram opens a new one
    through the agent that took its place."""
    server = UdpServer()
    env.servers.append(server)
    port = h.free_port()
    gw = forward_gateway(env, {"dns": {"listen_addr": "127.0.0.1:%d" % port,
                                       "target": "127.0.0.1:%d" % server.port,
                                       "protocol": "udp", "group": "prod"}})
    agent = h.proxy_agent(env, "a1", "prod")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    client.sendto(b"\x00\x01\x00\x00one", ("127.0.0.1", port))
    h.check(client.recv(4096)[4:] == b"one", "first answer")
    agent.kill9()
    env.wait_gone("a1", 15)
    gw.wait_for_log("Forward association ended by the agent", 5)
    h.proxy_agent(env, "a2", "prod")
    client.sendto(b"\x00\x02\x00\x00two", ("127.0.0.1", port))
    h.check(client.recv(4096)[4:] == b"two", "answer through the new agent")
    line = gw.wait_for_log("Datagram association opened", 5, count=2)
    h.check(line["client_id"] == "a2", "second association: %r" % line)
    client.close()


def test_reload_keeps_forwards(env):
    """A SIGHUP that changes a forward logs that it needs a restart and
    keeps the running forward."""
    target = h.RawServer(h.echo_handler)
    env.servers.append(target)
    port = h.free_port()
    gw = forward_gateway(env, {"svc": {"listen_addr": "127.0.0.1:%d" % port,
                                       "target": "127.0.0.1:%d" % target.port}})
    h.proxy_agent(env, "a1")
    with open(gw.config) as f:
        text = f.read()
    with open(gw.config, "w") as f:
        f.write(text.replace("target = 127.0.0.1:%d" % target.port, "target = 127.0.0.1:1"))
    mark = gw.mark()
    gw.send_signal(1)  # SIGHUP
    line = gw.wait_for_log("Some changes need a restart and were not applied", 5, since=mark)
    h.check("[forward.NAME] sections" in line["keys"], "restart line: %r" % line)
    s = connect(port)
    s.sendall(b"still")
    h.check(h.recv_exact(s, 5) == b"still", "the running forward changed on reload")
    s.close()


if __name__ == "__main__":
    h.run([test_http_through_forward, test_half_close, test_half_close_by_the_target,
           test_allowed_sources, test_forbidden_target, test_agent_away_and_back,
           test_default_group_fallback, test_config_refused, test_udp_forward,
           test_udp_forward_forbidden_target, test_udp_old_agent,
           test_udp_forward_agent_back, test_reload_keeps_forwards])
