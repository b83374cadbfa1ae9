#!/usr/bin/env python3
"""SOCKS5 UDP ASSOCIATE through the tunnel (issue 13 item 3, RFC 1928 section 7).

A raw SOCKS5 client asks for a UDP association over TCP, then sends
datagrams with the RFC's header to the relay address the reply names. The
gateway carries them in DGRAM frames to an agent of the user's group, which
checks each destination with its host rules and sends it; replies come
back with the source in their header. Each case runs the real gateway and
agent against UDP echo servers on loopback: IPv4, IPv6 (::1) and a name
from the agent's hosts file, a denied destination, a fragment, a stranger's
datagram, the association's end with its TCP connection, and a sectioned
group without agents.
"""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DENIED = "Datagram denied by host rules"


def echo(env, host="127.0.0.1"):
    e = h.UdpServer(host, answer=lambda d: b"echo:" + d)
    env.servers.append(e)
    return e


def addr_bytes(host, port):
    """SOCKS5 ATYP + address + port for an address or a name."""
    for fam, atyp in ((socket.AF_INET, 1), (socket.AF_INET6, 4)):
        try:
            return bytes([atyp]) + socket.inet_pton(fam, host) + struct.pack(">H", port)
        except OSError:
            pass
    return b"\x03" + bytes([len(host)]) + host.encode() + struct.pack(">H", port)


class Association:
    """A SOCKS5 UDP ASSOCIATE: the TCP control connection and a UDP socket
    sending to the relay address of the reply."""

    def __init__(self, gw, user=h.PROXY_USER, password=h.PROXY_PASS, declare_port=True):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(3)
        port = self.udp.getsockname()[1] if declare_port else 0
        self.tcp = socket.create_connection(("127.0.0.1", gw.socks_port), timeout=10)
        self.tcp.sendall(b"\x05\x01\x02")
        h.check(h.recv_exact(self.tcp, 2) == b"\x05\x02", "SOCKS5 method reply")
        u, p = user.encode(), password.encode()
        self.tcp.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        h.check(h.recv_exact(self.tcp, 2) == b"\x01\x00", "SOCKS5 auth")
        self.tcp.sendall(b"\x05\x03\x00" + addr_bytes("0.0.0.0", port))
        head = h.recv_exact(self.tcp, 4)
        self.rep = head[1]
        alen = {1: 4, 4: 16}[head[3]]
        bound = h.recv_exact(self.tcp, alen + 2)
        fam = socket.AF_INET if alen == 4 else socket.AF_INET6
        self.relay = (socket.inet_ntop(fam, bound[:alen]), struct.unpack(">H", bound[alen:])[0])

    def send(self, host, port, data, frag=0, sock=None):
        (sock or self.udp).sendto(b"\x00\x00" + bytes([frag]) + addr_bytes(host, port) + data,
                                  self.relay)

    def recv(self, timeout=3):
        """(source host, port, data) of the next reply, or None."""
        self.udp.settimeout(timeout)
        try:
            d = self.udp.recv(65536)
        except (socket.timeout, TimeoutError, ConnectionRefusedError):
            return None
        h.check(d[:3] == b"\x00\x00\x00", "reply header RSV/FRAG: %r" % d[:3])
        alen = {1: 4, 4: 16}[d[3]]
        fam = socket.AF_INET if alen == 4 else socket.AF_INET6
        return (socket.inet_ntop(fam, d[4:4 + alen]),
                struct.unpack(">H", d[4 + alen:6 + alen])[0], d[6 + alen:])

    def close(self):
        self.tcp.close()
        self.udp.close()


def setup(env, **agent_keys):
    gw = h.proxy_gateway(env)
    agent = h.proxy_agent(env, "a1", "prod", **agent_keys)
    return gw, agent


USER = h.PROXY_USER + ".prod"


# ---- cases -----------------------------------------------------------------------------

def test_ipv4_ipv6_and_name(env):
    """Datagrams to an IPv4 and an IPv6 echo and to a name of the agent's
    hosts file come back with their source in the header, in order."""
    e4, e6 = echo(env), echo(env, "::1")
    hosts = os.path.join(env.dir, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 echo.test\n")
    gw, agent = setup(env, hosts_file=hosts)
    a = Association(gw, user=USER)
    h.check(a.rep == 0 and a.relay[0] == "127.0.0.1", "UDP ASSOCIATE reply: rep %d relay %r"
            % (a.rep, a.relay))
    for i in range(3):
        a.send("127.0.0.1", e4.port, b"v4-%d" % i)
        r = a.recv()
        h.check(r == ("127.0.0.1", e4.port, b"echo:v4-%d" % i), "IPv4 reply %d: %r" % (i, r))
    a.send("::1", e6.port, b"v6")
    r = a.recv()
    h.check(r == ("::1", e6.port, b"echo:v6"), "IPv6 reply: %r" % (r,))
    a.send("echo.test", e4.port, b"by-name")
    r = a.recv()
    h.check(r == ("127.0.0.1", e4.port, b"echo:by-name"), "reply for a name: %r" % (r,))
    big = h.gen_bytes(8000, 9)
    a.send("127.0.0.1", e4.port, big)
    r = a.recv()
    h.check(r is not None and r[2] == b"echo:" + big, "an 8000-byte datagram")
    line = agent.wait_for_log("Datagram association opened", 5)
    h.check(line["user"] == h.PROXY_USER, "agent association line: %r" % line)
    line = gw.wait_for_log("Datagram association opened", 5)
    h.check(line["group"] == "prod" and line["proxy"] == "socks5", repr(line))
    a.close()


def test_denied_fragment_and_stranger(env):
    """A destination the agent forbids is dropped and logged, the association
    goes on; a fragment (FRAG 1) and a datagram from another port than the
    client's never reach the echo."""
    allowed, forbidden = echo(env), echo(env, "127.0.0.3")
    gw, agent = setup(env, forbidden_hosts="127.0.0.3")
    a = Association(gw, user=USER)
    a.send("127.0.0.3", forbidden.port, b"must-not-pass")
    h.check(a.recv(timeout=1) is None, "a denied destination answered")
    line = agent.wait_for_log(DENIED, 5)
    h.check(line["target"] == "127.0.0.3:%d" % forbidden.port and line["user"] == h.PROXY_USER,
            "denial line: %r" % line)
    h.check(forbidden.received() == [], "the forbidden echo received %r" % forbidden.received())
    a.send("127.0.0.1", allowed.port, b"frag", frag=1)
    h.check(a.recv(timeout=1) is None, "a fragment was relayed")
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    a.send("127.0.0.1", allowed.port, b"stranger", sock=stranger)
    stranger.close()
    a.send("127.0.0.1", allowed.port, b"ok")
    r = a.recv()
    h.check(r == ("127.0.0.1", allowed.port, b"echo:ok"), "after the drops: %r" % (r,))
    h.check(allowed.received() == [b"ok"], "the echo received %r" % allowed.received())
    a.close()


def test_first_datagram_port(env):
    """A client that declares port 0 is known by its first datagram's port."""
    e = echo(env)
    gw, _ = setup(env)
    a = Association(gw, user=USER, declare_port=False)
    a.send("127.0.0.1", e.port, b"first")
    h.check(a.recv() == ("127.0.0.1", e.port, b"echo:first"), "reply to the first datagram")
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    a.send("127.0.0.1", e.port, b"other", sock=other)
    other.close()
    a.send("127.0.0.1", e.port, b"second")
    h.check(a.recv() == ("127.0.0.1", e.port, b"echo:second"), "reply to the second")
    h.check(e.received() == [b"first", b"second"], "the echo received %r" % e.received())
    a.close()


def test_ends_with_tcp(env):
    """Closing the TCP connection ends the association on both sides: the
    agent closes its socket, and the relay takes no more datagrams."""
    e = echo(env)
    gw, agent = setup(env)
    a = Association(gw, user=USER)
    a.send("127.0.0.1", e.port, b"one")
    h.check(a.recv() is not None, "no reply before the close")
    mark = agent.mark()
    a.tcp.close()
    line = agent.wait_for_log("Datagram association closed", 5, since=mark)
    h.check(line["reason"] == "closed by the gateway", "agent close line: %r" % line)
    a.send("127.0.0.1", e.port, b"after")
    h.check(a.recv(timeout=1) is None, "the relay answered after the TCP close")
    h.check(e.received() == [b"one"], "the echo received %r" % e.received())
    a.udp.close()


def test_sectioned_group_without_agent(env):
    """A group with its own section and no agent answers REP 0x03 and never
    falls back to the default group's agent."""
    config = env.gateway_config("gateway", **h.PROXY_GATEWAY)
    socks_port = h.free_port()
    with open(config, "a") as f:
        f.write("\n[proxy.socks5]\nlisten_addr = 127.0.0.1:%d\n"
                "\n[group.tenant]\nauth_password = tenant-secret\n" % socks_port)
    gw = env.start("gateway", "gateway", config)
    gw.socks_port = socks_port
    env.gw = gw
    env.wait_gateway_ready(gw)
    h.proxy_agent(env, "d1")
    a = Association(gw, user="anyone.tenant", password="tenant-secret")
    h.check(a.rep == 0x03, "REP for a sectioned group without agents: %d" % a.rep)
    line = gw.wait_for_log("no clients carrying datagrams available in group 'tenant'", 5)
    h.check(line.get("no_fallback") == "the group has a [group.NAME] section", repr(line))
    a.close()


def test_gateway_stops_with_open_association(env):
    """SIGTERM with an association open: the gateway closes it and exits
    cleanly (the harness fails the case on an unclean exit or a sanitizer
    report), and the agent ends its side when the tunnel goes."""
    e = echo(env)
    gw, agent = setup(env)
    a = Association(gw, user=USER)
    a.send("127.0.0.1", e.port, b"x")
    h.check(a.recv() is not None, "no reply")
    mark = agent.mark()
    rc = gw.stop()
    h.check(rc == 0, "gateway exit status %r" % rc)
    agent.wait_for_log("Datagram association closed", 10, since=mark)
    a.close()


def test_group_limit_counts_associations(env):
    """[gateway] max_connections_per_group = 1: an open association is one
    of its agent's streams (apctl clients) and fills the group, so a second
    association and a TCP CONNECT of the group are refused (REP 0x01, the
    limit's WARN); once it ends, the group is served again."""
    e = echo(env)
    gw = h.proxy_gateway(env, max_connections_per_group=1)
    h.proxy_agent(env, "a1", "prod")
    a = Association(gw, user=USER)
    h.check(a.rep == 0, "first association: REP %d" % a.rep)
    a.send("127.0.0.1", e.port, b"one")
    h.check(a.recv() is not None, "no reply on the first association")
    row = env.clients()["a1"]
    h.check(row["streams_active"] == 1, "apctl clients while the association is open: %r"
            % row)
    mark = gw.mark()
    b = Association(gw, user=USER)
    h.check(b.rep == 0x01, "second association at the group limit: REP %d" % b.rep)
    b.close()
    line = gw.wait_for_log("Group connection limit reached, user refused", 5, since=mark)
    h.check(line["group"] == "prod", repr(line))
    r = h.socks5_open(gw.socks_port, "127.0.0.1", e.port, user=USER)
    r.sock.close()
    h.check(r.rep == 0x01, "CONNECT at the group limit: %r" % r)
    a.close()
    h.wait_until(lambda: env.clients()["a1"]["streams_active"] == 0, 5 + h.slack(),
                 "the ended association to leave apctl's stream count")
    c = Association(gw, user=USER)
    h.check(c.rep == 0, "association after the first ended: REP %d" % c.rep)
    c.close()


def test_relay_socket_counts_as_a_connection(env):
    """[gateway] max_connections = 3: an association holds its TCP
    connection and its relay socket, two of the three places (else a user
    could hold two descriptors per place and run the gateway out of the
    ones kept for agents and apctl). A second user's TCP connection takes
    the third; its UDP ASSOCIATE is refused with REP 0x01 and the limit's
    WARN. Once the first association ends, the next one is served."""
    e = echo(env)
    gw = h.proxy_gateway(env, max_connections=3)
    h.proxy_agent(env, "a1", "prod")
    a = Association(gw, user=USER)
    h.check(a.rep == 0, "first association: REP %d" % a.rep)
    mark = gw.mark()
    b = Association(gw, user=USER)
    h.check(b.rep == 0x01, "second association with every place taken: REP %d" % b.rep)
    b.close()
    line = gw.wait_for_log("Connection limit reached, user refused", 5, since=mark)
    h.check(line["proxy"] == "socks5" and line["max_connections"] == "3", repr(line))
    a.send("127.0.0.1", e.port, b"still")
    h.check(a.recv() is not None, "the first association stopped working")
    a.close()

    def served():
        c = Association(gw, user=USER)
        c.close()
        return c.rep == 0
    h.wait_until(served, 5 + h.slack(), "an association once the first one ended")


def test_associations_take_turns_between_agents(env):
    """Two agents of the group: associations are spread over them in turn,
    as streams are (finding which worker an association lives on must not
    move the round-robin, or every one would land on the same agent: seen
    with one gateway worker, where both picks are on the same tunnels)."""
    e = echo(env)
    gw = h.proxy_gateway(env, workers=1)
    h.proxy_agent(env, "a1", "prod")
    h.proxy_agent(env, "a2", "prod")
    held = []
    for i in range(4):
        a = Association(gw, user=USER)
        held.append(a)
        h.check(a.rep == 0, "association %d: REP %d" % (i, a.rep))
        a.send("127.0.0.1", e.port, b"turn-%d" % i)
        h.check(a.recv() is not None, "no reply on association %d" % i)
    rows = env.clients()
    per_agent = {cid: rows[cid]["streams_active"] for cid in ("a1", "a2")}
    h.check(per_agent == {"a1": 2, "a2": 2}, "open associations per agent: %r" % per_agent)
    for a in held:
        a.close()


def test_idle_association_closed(env):
    """With [gateway] udp_idle_timeout_ms = 1000, an association that
    carries nothing is ended and its TCP connection closed; the agent ends
    its side too."""
    e = echo(env)
    gw = h.proxy_gateway(env, udp_idle_timeout_ms=1000)
    agent = h.proxy_agent(env, "a1", "prod")
    a = Association(gw, user=USER)
    a.send("127.0.0.1", e.port, b"x")
    h.check(a.recv() is not None, "no reply")
    gw.wait_for_log("SOCKS5 UDP association idle, closing", 10)
    h.check(h.read_until_closed(a.tcp, 5)[0] in ("eof", "reset"),
            "the TCP connection stayed open after the idle timeout")
    line = agent.wait_for_log("Datagram association closed", 5)
    h.check(line["reason"] == "closed by the gateway", repr(line))
    a.close()


if __name__ == "__main__":
    h.run([test_ipv4_ipv6_and_name, test_denied_fragment_and_stranger, test_first_datagram_port,
           test_ends_with_tcp, test_sectioned_group_without_agent,
           test_gateway_stops_with_open_association, test_group_limit_counts_associations,
           test_relay_socket_counts_as_a_connection,
           test_associations_take_turns_between_agents, test_idle_association_closed])
