#!/usr/bin/env python3
"""The SOCKS5 proxy, as the spec's "Usage Examples" use it, with real clients.

Same world as test_proxy_http.py: one gateway (user / proxy_pass), agents
prod (production), test (testing) and def (default group); HTTP origins on
127.0.0.1 and ::1 and an HTTPS origin (openssl s_server -WWW). curl
--socks5 resolves the name itself, --socks5-hostname (and socks5h://)
sends the name, which the agent resolves: the gateway's log shows the
domain target. apctl's per-client streams_total proves the group.
"""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

AGENTS = {"prod": "production", "test": "testing", "def": None}
ROUTES = [("user.production", "production", "prod"),
          ("user.testing", "testing", "test"),
          ("user", "", "def")]
HELLO = b"hello through anyproxy over socks5\n"
FILES = {"hello.txt": HELLO, "blob.bin": h.gen_bytes(1 << 20, seed=8)}


def setup(env):
    env.gwp = h.proxy_gateway(env)
    for cid, group in AGENTS.items():
        h.proxy_agent(env, cid, group)
    env.a = h.HttpTarget("127.0.0.1", name="A", files=FILES)
    env.v6 = h.HttpTarget("::1", name="V6", files=FILES)
    env.servers += [env.a, env.v6]
    env.tls = h.HttpsTarget(env, FILES)
    env.servers.append(env.tls)


def socks(env, user, password=h.PROXY_PASS):
    return "%s:%s@127.0.0.1:%d" % (user, password, env.gwp.socks_port)


def check_routed(env, since, user, group, client_id, target=None):
    gw = env.gwp
    ext = [l for l in gw.find("SOCKS5 extracted user info", since) if l.get("username") == user]
    h.check(ext and ext[-1].get("group_id") == group,
            "expected 'SOCKS5 extracted user info username=%s group_id=%s': %r"
            % (user, group, ext[-1:]))
    got = [l for l in gw.find("Gateway received request", since)
           if l.get("user") == user and l.get("proxy") == "socks5"]
    h.check(got, "no 'Gateway received request user=%s proxy=socks5' line:\n%s"
            % (user, gw.tail()))
    h.check(got[-1].get("group") == group, "group %r, expected %r: %r"
            % (got[-1].get("group"), group, got[-1]))
    if target:
        h.check(got[-1].get("target") == target,
                "target %r, expected %r (%r)" % (got[-1].get("target"), target, got[-1]))
    sel = [l for l in gw.find("Selected client from group", since)
           if l.get("client_id") == client_id and l.get("group") == group]
    h.check(sel, "no 'Selected client from group group=%s client_id=%s' line" % (group, client_id))


def run_routed(env, user, group, cid, args, expect_body, target=None, curl_env=None):
    before = h.stream_totals(env)
    mark = env.gwp.mark()
    r = h.curl(args, env=curl_env)
    h.check(r.returncode == 0, "curl %s failed (rc %d): %s" % (" ".join(args), r.returncode,
                                                                 r.stderr.decode()))
    h.check(r.stdout == expect_body, "curl %s: body %r, expected %r"
            % (" ".join(args), r.stdout[:200], expect_body[:200]))
    h.expect_streams(env, before, {cid: 1}, "curl " + " ".join(args))
    check_routed(env, mark, user, group, cid, target)


# ---- the spec's examples -------------------------------------------------------------

def test_spec_socks5_groups(env):
    """curl --socks5 user.GROUP:proxy_pass@gateway:1080 URL, http and https."""
    for user, group, cid in ROUTES:
        run_routed(env, user, group, cid,
                   ["--socks5", socks(env, user), env.a.url("/file/hello.txt", "localhost")],
                   HELLO, target="127.0.0.1:%d" % env.a.port)  # curl resolved localhost
        run_routed(env, user, group, cid,
                   ["--socks5", socks(env, user), "--cacert", env.tls.ca,
                    env.tls.url("hello.txt")], HELLO, target="127.0.0.1:%d" % env.tls.port)


def test_socks5_hostname_resolved_by_agent(env):
    """--socks5-hostname: the name travels; the gateway logs it unresolved."""
    for user, group, cid in ROUTES:
        run_routed(env, user, group, cid,
                   ["--socks5-hostname", socks(env, user),
                    env.a.url("/file/hello.txt", "localhost")],
                   HELLO, target="localhost:%d" % env.a.port)
        run_routed(env, user, group, cid,
                   ["--socks5-hostname", socks(env, user), "--cacert", env.tls.ca,
                    env.tls.url("blob.bin")], FILES["blob.bin"],
                   target="localhost:%d" % env.tls.port)
    # the agent, not the gateway, resolved it: the agent logged the name
    agent = [d for d in env.daemons if d.name == "agent-def"][0]
    h.check(agent.find("target=localhost:%d" % env.tls.port),
            "agent-def should have been asked for localhost:%d" % env.tls.port)


AGENT_ONLY = "-agent-only.anyproxy.test"


def test_name_only_the_agent_can_resolve(env):
    """A name that only the agent's [client] hosts_file knows: the request
    works only if the name travelled to the agent and was resolved there.
    (It starts with '-', so no resolver would ever ask DNS for it: nothing
    leaves loopback even if the hosts file were ignored.)"""
    hosts = os.path.join(env.dir, "agent-hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 %s\n::1 %s6\n" % (AGENT_ONLY, AGENT_ONLY))
    if "resolver" not in env.clients():
        h.proxy_agent(env, "resolver", "names", hosts_file=hosts)
    user = "user.names"
    for server, name in ((env.a, AGENT_ONLY), (env.v6, AGENT_ONLY + "6")):
        url = "http://%s:%d/file/hello.txt" % (name, server.port)
        shown = "%s:%d" % (name, server.port)
        run_routed(env, user, "names", "resolver", ["--socks5-hostname", socks(env, user), url],
                   HELLO, target=shown)
        run_routed(env, user, "names", "resolver", [url], HELLO, target=shown,
                   curl_env={"ALL_PROXY": "socks5h://" + socks(env, user), "NO_PROXY": "",
                             "no_proxy": ""})
        before = h.stream_totals(env)
        r = h.curl(["-x", "http://%s:%s@127.0.0.1:%d" % (user, h.PROXY_PASS, env.gwp.http_port),
                    url])
        h.check(r.returncode == 0 and r.stdout == HELLO, "HTTP proxy to %s: rc %d %r %r"
                % (name, r.returncode, r.stdout[:100], r.stderr))
        h.expect_streams(env, before, {"resolver": 1}, "HTTP proxy to " + name)


def test_spec_all_proxy_environment(env):
    """export ALL_PROXY=socks5://user.production:proxy_pass@gateway:1080."""
    for scheme, target_host in (("socks5", "127.0.0.1"), ("socks5h", "localhost")):
        for user, group, cid in ROUTES:
            pe = {"ALL_PROXY": "%s://%s" % (scheme, socks(env, user)), "NO_PROXY": "",
                  "no_proxy": ""}
            run_routed(env, user, group, cid, [env.a.url("/file/hello.txt", "localhost")], HELLO,
                       target="%s:%d" % (target_host, env.a.port), curl_env=pe)
            run_routed(env, user, group, cid, ["--cacert", env.tls.ca, env.tls.url("hello.txt")],
                       HELLO, target="%s:%d" % (target_host, env.tls.port), curl_env=pe)


def test_ipv6_target(env):
    for opt in ("--socks5", "--socks5-hostname"):
        run_routed(env, "user.testing", "testing", "test",
                   ["-g", opt, socks(env, "user.testing"), env.v6.url("/file/hello.txt")],
                   HELLO, target="[::1]:%d" % env.v6.port)


# ---- the protocol, with a raw client --------------------------------------------------------

def http_get_over(sock, host_header, path="/info"):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                  % (path, host_header)).encode())
    status, headers, text, rest = h.read_http_head(sock)
    return status, h.read_http_body(sock, headers, rest)


def test_raw_atyp_ipv4_ipv6_domain(env):
    for host, server, shown in (("127.0.0.1", env.a, "127.0.0.1:%d" % env.a.port),
                                ("::1", env.v6, "[::1]:%d" % env.v6.port),
                                ("localhost", env.a, "localhost:%d" % env.a.port)):
        mark = env.gwp.mark()
        before = h.stream_totals(env)
        r = h.socks5_open(env.gwp.socks_port, host, server.port, user="user.production")
        try:
            h.check(r.method == 2 and r.auth_status == 0 and r.rep == 0,
                    "SOCKS5 CONNECT %s: %r" % (host, r))
            status, body = http_get_over(r.sock, "t")
        finally:
            r.sock.close()
        h.check(status == 200 and json.loads(body)["server"] == server.name,
                "GET over SOCKS5 to %s: %r %r" % (host, status, body[:200]))
        h.expect_streams(env, before, {"prod": 1}, "raw SOCKS5 to " + host)
        check_routed(env, mark, "user.production", "production", "prod", shown)


def test_early_data_before_the_reply(env):
    """Greeting, auth, request and the first application bytes in one send:
    nothing may be lost or reordered while the agent connects."""
    u, p = b"user.testing", h.PROXY_PASS.encode()
    req = b"GET /file/hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    blob = (b"\x05\x01\x02" + b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p +
            b"\x05\x01\x00" + h.socks5_target_bytes("127.0.0.1", env.a.port) + req)
    s = socket.create_connection(("127.0.0.1", env.gwp.socks_port), timeout=10)
    try:
        s.sendall(blob)
        h.check(h.recv_exact(s, 2) == b"\x05\x02", "method reply")
        h.check(h.recv_exact(s, 2) == b"\x01\x00", "auth reply")
        rep = h.recv_exact(s, 10)
        h.check(rep[:4] == b"\x05\x00\x00\x01", "CONNECT reply %r" % rep)
        status, headers, text, rest = h.read_http_head(s)
        body = h.read_http_body(s, headers, rest)
    finally:
        s.close()
    h.check(status == 200 and body == HELLO, "early data answered %r %r" % (status, body))


def test_bind_not_supported(env):
    """BIND is refused; UDP ASSOCIATE is served (test_socks5_udp.py)."""
    before = h.stream_totals(env)
    r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", env.a.port, command=2)
    try:
        h.check(r.rep == 0x07, "BIND should get REP 0x07: %r" % r)
        h.check(h.read_until_closed(r.sock, 5)[0] in ("eof", "reset"), "should close")
    finally:
        r.sock.close()
    h.expect_streams(env, before, {}, "BIND")


def test_no_acceptable_method(env):
    """Credentials configured: a client offering only 'no authentication'
    gets method 0xFF and a close."""
    s = socket.create_connection(("127.0.0.1", env.gwp.socks_port), timeout=5)
    try:
        s.sendall(b"\x05\x01\x00")
        h.check(h.recv_exact(s, 2) == b"\x05\xff", "expected 05 FF")
        how, _, _ = h.read_until_closed(s, 5)
    finally:
        s.close()


def test_server_speaks_first(env):
    """A target that sends first (a banner) before reading anything."""
    def handler(conn):
        conn.sendall(b"220 banner\r\n")
        data = conn.recv(100)
        conn.sendall(b"echo:" + data)
    srv = h.RawServer(handler)
    env.servers.append(srv)
    r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", srv.port)
    try:
        h.check(r.rep == 0, "REP %r" % r)
        h.check(h.recv_exact(r.sock, 12) == b"220 banner\r\n", "banner lost")
        r.sock.sendall(b"ping")
        h.check(h.recv_exact(r.sock, 9) == b"echo:ping", "echo lost")
    finally:
        r.sock.close()


if __name__ == "__main__":
    h.run([
        test_spec_socks5_groups,
        test_socks5_hostname_resolved_by_agent,
        test_name_only_the_agent_can_resolve,
        test_spec_all_proxy_environment,
        test_ipv6_target,
        test_raw_atyp_ipv4_ipv6_domain,
        test_early_data_before_the_reply,
        test_bind_not_supported,
        test_no_acceptable_method,
        test_server_speaks_first,
    ], fixture=setup)
