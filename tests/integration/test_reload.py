#!/usr/bin/env python3
"""SIGHUP reload of the agent and the gateway (issue 4 deliver 5, issue 5
item 4, docs/config.md "On SIGHUP").

- agent: new host rules (and hosts file) apply to new streams while a
  stream opened before the reload keeps relaying;
- agent: a bad new file (invalid pattern, unreadable or invalid certificate,
  bad hosts file) is refused with "Configuration reload failed; the running
  configuration stays", the old rules keep applying, the process lives;
- gateway: new proxy passwords apply at once (old refused: SOCKS5 status
  0x01, HTTP 407), open relays survive; a changed listen_addr is reported as
  needing a restart and the old port keeps serving;
- both: [log] level follows the file.

Targets are echo servers on 127.0.0.2 and 127.0.0.3 (one port for both),
each greeting with its own name so a test sees which one it reached.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

RELOADED = "Configuration reloaded"
RELOAD_FAILED = "Configuration reload failed; the running configuration stays"
NEEDS_RESTART = "Some changes need a restart and were not applied"
DENIED = "Target denied by host rules"

OLD_PASS = "itest-Px-Old-3a9c51"
NEW_PASS = "itest-Px-New-e07b28"


# ---- helpers ---------------------------------------------------------------------------

def echo_named(name):
    """RawServer handler: send NAME\\n, then echo until EOF."""
    def handler(conn):
        conn.sendall(name.encode() + b"\n")
        while True:
            b = conn.recv(65536)
            if not b:
                return
            conn.sendall(b)
    return handler


def echo_servers(env):
    """Named echo servers on 127.0.0.2 and 127.0.0.3 on one port."""
    last = None
    for _ in range(20):
        two = h.RawServer(echo_named("two"), host="127.0.0.2")
        try:
            three = h.RawServer(echo_named("three"), host="127.0.0.3", port=two.port)
        except OSError as e:
            last = e
            two.close()
            continue
        env.servers += [two, three]
        return two.port, two, three
    h.fail("no port free on 127.0.0.2 and 127.0.0.3 at once: %r" % last)


def read_line(sock, timeout=5):
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            h.fail("EOF before a whole line (got %r)" % data)
        data += b
    return data[:-1].decode()




def socks_open(gw, host, port, user=h.PROXY_USER, password=h.PROXY_PASS):
    """SOCKS5 CONNECT; on success returns (sock, server name)."""
    r = h.socks5_open(gw.socks_port, host, port, user=user, password=password)
    h.check(r.auth_status == 0, "SOCKS5 auth to %s refused (%r)" % (host, r))
    if r.rep != 0:
        r.sock.close()
        h.fail("SOCKS5 CONNECT %s:%d: REP %r, expected 0x00" % (host, port, r.rep))
    return r.sock, read_line(r.sock)


def connect_open(gw, host, port, user=h.PROXY_USER, password=h.PROXY_PASS):
    """HTTP CONNECT; on success returns (sock, server name)."""
    s, status, headers, head, rest = h.http_connect(gw.http_port, host, port, user=user,
                                                    password=password)
    if status != 200:
        s.close()
        h.fail("CONNECT %s:%d: status %r, expected 200" % (host, port, status))
    h.check(rest == b"" or rest.endswith(b"\n"), "bytes after the CONNECT answer: %r" % rest)
    name = rest[:-1].decode() if rest else read_line(s)
    return s, name


def expect_reached(gw, host, port, server, user=h.PROXY_USER, password=h.PROXY_PASS):
    for opener in (socks_open, connect_open):
        s, name = opener(gw, host, port, user, password)
        try:
            h.check(name == server, "%s %s:%d reached %r, expected %r"
                    % (opener.__name__, host, port, name, server))
            h.echo_roundtrip(s, "%s %s" % (opener.__name__, host))
        finally:
            s.close()


def expect_denied(gw, ag, host, port, rule, user=h.PROXY_USER, password=h.PROXY_PASS):
    """SOCKS5 REP 0x02 and CONNECT 403, each with an agent denial naming rule."""
    for proto in ("socks5", "connect"):
        mark = ag.mark()
        if proto == "socks5":
            r = h.socks5_open(gw.socks_port, host, port, user=user, password=password)
            r.sock.close()
            h.check(r.rep == 0x02, "SOCKS5 %s:%d: %r, expected REP 0x02\n%s"
                    % (host, port, r, ag.tail(4)))
        else:
            s, status, _hd, _head, _rest = h.http_connect(gw.http_port, host, port, user=user,
                                                          password=password)
            s.close()
            h.check(status == 403, "CONNECT %s:%d: status %r, expected 403\n%s"
                    % (host, port, status, ag.tail(4)))
        line = ag.wait_for_log(DENIED, 5 + h.slack(), since=mark)
        h.check(line.get("rule") == rule and line.get("target") == "%s:%d" % (host, port),
                "%s to %s: denial line %r, expected rule=%s" % (proto, host, line, rule))


def write_hosts(env, name, lines):
    path = os.path.join(env.dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def rewrite(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def edit(path, *pairs):
    """Replace each (old, new) in the file; each old must occur."""
    with open(path) as f:
        text = f.read()
    for old, new in pairs:
        h.check(old in text, "%s holds no %r:\n%s" % (path, old, text))
        text = text.replace(old, new)
    rewrite(path, text)


def hup(d, expect=RELOADED, timeout=None):
    """SIGHUP d and wait for `expect` (logged after the mark); returns the line."""
    mark = d.mark()
    d.send_signal(1)  # SIGHUP
    line = d.wait_for_log(expect, timeout or 5 + h.slack(), since=mark)
    other = RELOAD_FAILED if expect != RELOAD_FAILED else RELOADED
    h.check(not d.find(other, mark), "%s logged both %r and %r:\n%s"
            % (d.name, expect, other, d.tail(5)))
    h.check(d.alive(), "%s died on SIGHUP" % d.name)
    return line, mark


def agent_config(env, client_id, forbidden, hosts, **keys):
    """(Re)write the agent's config file: same path every time."""
    merged = dict(h.PROXY_CLIENT)
    merged.update(keys)
    return env.client_config("agent-" + client_id, client_id, None, None,
                             forbidden_hosts=forbidden, hosts_file=hosts, **merged)


def start_agent(env, client_id, forbidden, hosts, **keys):
    config = agent_config(env, client_id, forbidden, hosts, **keys)
    return env.agent(client_id, config=config)


def no_secrets(env, *secrets):
    for d in env.daemons:
        text = d.log()
        for s in secrets + (h.GW_PASS,):
            h.check(s not in text, "%s's log holds a password (%s...)" % (d.name, s[:10]))


# ---- agent -----------------------------------------------------------------------------

def test_agent_reload_rules_keeps_open_streams(env):
    port, two, three = echo_servers(env)
    hosts = write_hosts(env, "hosts", ["127.0.0.2 two.test", "127.0.0.3 three.test",
                                       "127.0.0.2 flip.test"])
    gw = h.proxy_gateway(env)
    ag = start_agent(env, "r1", "127.0.0.3", hosts)

    # long-lived streams, opened under the old rules
    s1, name = socks_open(gw, "127.0.0.2", port)
    env.servers.append(s1)
    h.check(name == "two", "reached %r" % name)
    c1, name = connect_open(gw, "two.test", port)
    env.servers.append(c1)
    h.check(name == "two", "reached %r" % name)
    h.echo_roundtrip(s1, "SOCKS5 stream before the reload")
    h.echo_roundtrip(c1, "CONNECT stream before the reload")
    expect_reached(gw, "flip.test", port, "two")
    expect_denied(gw, ag, "127.0.0.3", port, "127.0.0.3")
    expect_denied(gw, ag, "three.test", port, "127.0.0.3")

    # new rules: 127.0.0.2 forbidden, 127.0.0.3 allowed; flip.test moves
    agent_config(env, "r1", "127.0.0.2", hosts)
    write_hosts(env, "hosts", ["127.0.0.2 two.test", "127.0.0.3 three.test",
                               "127.0.0.3 flip.test"])
    t0 = time.monotonic()
    line, mark = hup(ag)
    h.note("agent reload logged after %.3f s: %s" % (time.monotonic() - t0, line.raw))
    h.check(line.level == "INFO" and line.get("forbidden_hosts") == "1"
            and line.get("targets") == "2", "reload line %r: expected forbidden_hosts=1, "
            "targets=2 (the two open streams)" % line)
    h.check(not ag.find(NEEDS_RESTART, mark), "only reloadable keys changed: %r"
            % ag.find(NEEDS_RESTART, mark))

    # the open streams go on, in both directions, with more than a window of data
    accepted2 = two.accepted
    h.echo_roundtrip(s1, "SOCKS5 stream opened before the reload", size=300000)
    h.echo_roundtrip(c1, "CONNECT stream opened before the reload", size=300000)
    # new streams follow the new rules: allowed before -> denied, and vice versa
    expect_denied(gw, ag, "127.0.0.2", port, "127.0.0.2")
    expect_denied(gw, ag, "two.test", port, "127.0.0.2")
    expect_reached(gw, "127.0.0.3", port, "three")
    expect_reached(gw, "three.test", port, "three")
    expect_reached(gw, "flip.test", port, "three")   # the hosts file was re-read
    h.check(two.accepted == accepted2, "127.0.0.2 was dialled %d times after it became "
            "forbidden" % (two.accepted - accepted2))
    h.echo_roundtrip(s1, "SOCKS5 stream after new streams were denied")
    h.echo_roundtrip(c1, "CONNECT stream after new streams were denied")
    for s in (s1, c1):
        s.shutdown(socket.SHUT_WR)
        how, _, data = h.read_until_closed(s, 5)
        h.check(how == "eof" and data == b"", "an old stream ended with %s, %r" % (how, data))
    h.wait_until(lambda: env.clients()["r1"]["streams_active"] == 0, 5,
                 "the agent's streams to finish")
    no_secrets(env)


def test_agent_bad_reload_keeps_running_config(env):
    port, two, three = echo_servers(env)
    hosts = write_hosts(env, "hosts", ["127.0.0.2 two.test", "127.0.0.3 three.test"])
    gw = h.proxy_gateway(env)
    ag = start_agent(env, "r2", "127.0.0.3", hosts)
    s1, _ = socks_open(gw, "two.test", port)
    env.servers.append(s1)
    h.echo_roundtrip(s1, "stream before the reloads")

    garbage_pem = os.path.join(env.dir, "garbage.crt")
    with open(garbage_pem, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                "-----END CERTIFICATE-----\n")
    bad_hosts = os.path.join(env.dir, "bad-hosts")
    with open(bad_hosts, "w") as f:
        f.write("127.0.0.3 two.test\nnot-an-address two.test\n")
    variants = [
        # (what, forbidden_hosts, extra keys, words the error must hold)
        ("invalid forbidden pattern", "127.0.0.2, 10.0.0.1/8", {}, ("forbidden_hosts",
                                                                    "10.0.0.1/8")),
        ("invalid allowed regex", "127.0.0.2", {"allowed_hosts": "~(a*"}, ("allowed_hosts",)),
        ("missing gateway_tls_cert", "127.0.0.2",
         {"gateway_tls_cert": os.path.join(env.dir, "no-such.crt")}, ("gateway_tls_cert",)),
        ("gateway_tls_cert is a folder", "127.0.0.2", {"gateway_tls_cert": env.dir}, ()),
        ("garbage gateway_tls_cert", "127.0.0.2", {"gateway_tls_cert": garbage_pem}, ()),
        ("bad hosts file", "127.0.0.2", {"hosts_file": bad_hosts}, ("bad-hosts",)),
        ("missing hosts file", "127.0.0.2", {"hosts_file": bad_hosts + ".none"}, ("hosts_file",)),
    ]
    problems = []
    for what, forbidden, keys, words in variants:
        keys = dict(keys)
        hosts_key = keys.pop("hosts_file", hosts)
        agent_config(env, "r2", forbidden, hosts_key, **keys)
        mark = ag.mark()
        ag.send_signal(1)
        try:
            line = ag.wait_for_log(RELOAD_FAILED, 5 + h.slack(), since=mark)
        except h.TestFailure as e:
            problems.append("%s: no %r: %s" % (what, RELOAD_FAILED, str(e).splitlines()[0]))
            h.check(ag.alive(), "the agent died on a bad reload (%s):\n%s" % (what, ag.tail()))
            continue
        if line.level != "ERROR" or not all(w in line.get("error", "") for w in words):
            problems.append("%s: failure line %r should be ERROR and name %r" % (what, line, words))
        if ag.find(RELOADED, mark):
            problems.append("%s: also logged %r" % (what, RELOADED))
        h.check(ag.alive(), "the agent died on a bad reload (%s)" % what)
        # the old rules (and hosts file) still apply
        expect_denied(gw, ag, "127.0.0.3", port, "127.0.0.3")
        expect_denied(gw, ag, "three.test", port, "127.0.0.3")
        expect_reached(gw, "two.test", port, "two")
        expect_reached(gw, "127.0.0.2", port, "two")
        h.echo_roundtrip(s1, "stream opened before the reload, after %s" % what)
    h.check(ag.alive(), "the agent died")
    h.check(env.clients()["r2"]["tunnels"] == 1, "the agent lost its tunnel")
    h.check(not problems, "bad reloads:\n" + "\n".join(problems))

    # and a good file afterwards still takes effect
    agent_config(env, "r2", "127.0.0.2", hosts)
    hup(ag)
    expect_denied(gw, ag, "two.test", port, "127.0.0.2")
    expect_reached(gw, "three.test", port, "three")
    h.echo_roundtrip(s1, "stream opened before all the reloads")
    s1.close()
    no_secrets(env)


def test_agent_restart_only_keys(env):
    """client_id needs a restart: the reload says so, applies the rest, and
    the agent stays registered under its old id."""
    port, two, three = echo_servers(env)
    hosts = write_hosts(env, "hosts", ["127.0.0.2 two.test"])
    gw = h.proxy_gateway(env)
    ag = start_agent(env, "r3", "127.0.0.3", hosts)
    config = agent_config(env, "r3", "127.0.0.2", hosts)
    edit(config, ("client_id = r3", "client_id = r3-renamed"))
    hup(ag)
    warn = ag.find(NEEDS_RESTART)
    h.check(warn and "client_id" in warn[-1].get("keys", ""), "expected %r naming client_id: %r"
            % (NEEDS_RESTART, warn))
    time.sleep(0.3)
    clients = env.clients()
    h.check("r3" in clients and "r3-renamed" not in clients, "apctl lists %r" % sorted(clients))
    expect_denied(gw, ag, "two.test", port, "127.0.0.2")   # the rest was applied
    expect_reached(gw, "127.0.0.3", port, "three")


# ---- gateway ---------------------------------------------------------------------------

def proxy_auth_refused(gw, password):
    """Old/wrong password: SOCKS5 status 0x01, HTTP 407 (CONNECT and GET)."""
    r = h.socks5_open(gw.socks_port, "127.0.0.2", 9, password=password)
    r.sock.close()
    h.check(r.auth_status == 0x01 and r.rep is None, "SOCKS5 with a refused password: %r, "
            "expected auth status 0x01" % r)
    s, status, headers, _head, _rest = h.http_connect(gw.http_port, "127.0.0.2", 9,
                                                      password=password)
    s.close()
    h.check(status == 407 and "proxy-authenticate" in headers, "CONNECT with a refused "
            "password: status %r %r, expected 407 with Proxy-Authenticate" % (status, headers))
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        s.sendall(("GET http://127.0.0.2:9/ HTTP/1.1\r\nHost: 127.0.0.2:9\r\n"
                   "Proxy-Authorization: %s\r\n\r\n" % h.basic_auth(h.PROXY_USER, password)
                   ).encode())
        status, headers, _head, _rest = h.read_http_head(s)
    finally:
        s.close()
    h.check(status == 407, "GET with a refused password: status %r, expected 407" % status)


def test_gateway_reload_proxy_password(env):
    port, two, three = echo_servers(env)
    gw = h.proxy_gateway(env, password=OLD_PASS)
    h.proxy_agent(env, "g1")
    s1, _ = socks_open(gw, "127.0.0.2", port, password=OLD_PASS)
    env.servers.append(s1)
    c1, _ = connect_open(gw, "127.0.0.3", port, password=OLD_PASS)
    env.servers.append(c1)
    h.echo_roundtrip(s1, "SOCKS5 relay before the reload")
    h.echo_roundtrip(c1, "CONNECT relay before the reload")
    proxy_auth_refused(gw, NEW_PASS)

    edit(gw.config, ("auth_password = " + OLD_PASS, "auth_password = " + NEW_PASS))
    t0 = time.monotonic()
    line, mark = hup(gw)
    h.note("gateway reload logged after %.3f s: %s" % (time.monotonic() - t0, line.raw))
    h.check(not gw.find(NEEDS_RESTART, mark), "only reloadable keys changed: %r"
            % gw.find(NEEDS_RESTART, mark))
    h.echo_roundtrip(s1, "SOCKS5 relay opened before the reload", size=300000)
    h.echo_roundtrip(c1, "CONNECT relay opened before the reload", size=300000)
    proxy_auth_refused(gw, OLD_PASS)
    expect_reached(gw, "127.0.0.2", port, "two", password=NEW_PASS)
    expect_reached(gw, "127.0.0.3", port, "three", password=NEW_PASS)
    h.echo_roundtrip(s1, "SOCKS5 relay after new users came")
    s1.close()
    c1.close()
    h.check(env.clients()["g1"]["tunnels"] == 1, "the agent's tunnel did not survive")
    no_secrets(env, OLD_PASS, NEW_PASS)


def test_gateway_listen_addr_needs_restart(env):
    port, two, three = echo_servers(env)
    gw = h.proxy_gateway(env, password=OLD_PASS)
    h.proxy_agent(env, "g2")
    s1, _ = socks_open(gw, "127.0.0.2", port, password=OLD_PASS)
    env.servers.append(s1)
    new_socks = h.free_port()
    new_tunnel = h.free_port()
    edit(gw.config,
         ("listen_addr = 127.0.0.1:%d" % gw.socks_port, "listen_addr = 127.0.0.1:%d" % new_socks),
         ("listen_addr = 127.0.0.1:%d" % env.port, "listen_addr = 127.0.0.1:%d" % new_tunnel),
         ("auth_password = " + OLD_PASS, "auth_password = " + NEW_PASS))
    line, mark = hup(gw)
    warn = gw.find(NEEDS_RESTART, mark)
    h.check(warn and warn[-1].level == "WARN" and "listen_addr" in warn[-1].get("keys", ""),
            "expected WARN %r naming listen_addr: %r\n%s" % (NEEDS_RESTART, warn, gw.tail(6)))
    h.note("restart-only keys: %s" % warn[-1].get("keys"))
    # the old ports still serve, the new ones were not opened; the password was applied
    expect_reached(gw, "127.0.0.3", port, "three", password=NEW_PASS)
    proxy_auth_refused(gw, OLD_PASS)
    for p in (new_socks, new_tunnel):
        s = socket.socket()
        s.settimeout(2)
        try:
            h.check(s.connect_ex(("127.0.0.1", p)) != 0, "port %d (changed listen_addr) is "
                    "open without a restart" % p)
        finally:
            s.close()
    h.echo_roundtrip(s1, "SOCKS5 relay across the reload")
    s1.close()
    h.check(env.clients()["g2"]["tunnels"] == 1, "the agent's tunnel (old port) is gone")
    no_secrets(env, OLD_PASS, NEW_PASS)


# ---- both ------------------------------------------------------------------------------

def test_log_level_reload(env):
    port, two, three = echo_servers(env)
    gw = h.proxy_gateway(env, log_level="info")
    ag = h.proxy_agent(env, "l1", log_level="info")

    def one_stream():
        s, _ = socks_open(gw, "127.0.0.2", port)
        h.echo_roundtrip(s, "stream")
        s.close()
        h.wait_until(lambda: env.clients()["l1"]["streams_active"] == 0, 5,
                     "the stream to finish")

    def debug_lines(d, since):
        return [l for l in d.lines(since) if l.level == "DEBUG"]

    one_stream()
    for d in (gw, ag):
        h.check(not debug_lines(d, 0), "%s logs DEBUG at level info: %r"
                % (d.name, debug_lines(d, 0)[:3]))
    edit(gw.config, ("level = info", "level = debug"))
    edit(ag.config, ("level = info", "level = debug"))
    _, gmark = hup(gw)
    _, amark = hup(ag)
    one_stream()
    gw.wait_for_log("SOCKS5 state", 5, since=gmark)
    ag.wait_for_log("Stream open requested", 5, since=amark)
    h.check(ag.find("Stream open requested", amark)[-1].level == "DEBUG", "not a DEBUG line")
    # and back to info
    edit(gw.config, ("level = debug", "level = info"))
    edit(ag.config, ("level = debug", "level = info"))
    gl, _ = hup(gw)
    al, _ = hup(ag)
    gmark, amark = gw.mark(), ag.mark()
    one_stream()
    time.sleep(0.2)
    for d, m in ((gw, gmark), (ag, amark)):
        h.check(not debug_lines(d, m), "%s still logs DEBUG after level = info: %r"
                % (d.name, debug_lines(d, m)[:3]))


if __name__ == "__main__":
    h.run([
        test_agent_reload_rules_keeps_open_streams,
        test_agent_bad_reload_keeps_running_config,
        test_agent_restart_only_keys,
        test_gateway_reload_proxy_password,
        test_gateway_listen_addr_needs_restart,
        test_log_level_reload,
    ])
