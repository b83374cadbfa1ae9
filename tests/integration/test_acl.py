#!/usr/bin/env python3
"""Agent-side host rules through the real proxies (issue 4, docs/acl.md).

Every case runs a gateway with both proxies and one or more agents whose
[client] hosts_file (a test file, never the system's /etc/hosts) maps test
names to loopback addresses. Denials must come back as SOCKS5 REP 0x02 and
HTTP 403, with one agent log line "Target denied by host rules" naming the
client, the target and the rule; no password appears in any log.

A forbidden address always has a real listener behind it (a RawServer on
127.0.0.1 that counts its accepts): "denied" must mean "never dialled", not
"dialled and failed". Allowed targets are HttpTargets on 127.0.0.2/127.0.0.3
on the same port, whose answers are checked byte for byte.

No packet leaves loopback: every name is either in the test hosts file or
denied by a name rule before resolution; the one name that is neither starts
with '-', which glibc refuses before asking any DNS server.
"""
import hashlib
import os
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PX_PASS = "itest-Px-Secret-7c41d0"   # proxy password: distinctive, grepped in logs
PRODUCTION = "localhost, 127.0.0.1, 192.168.0.0/16"   # the spec's production list
DENIED = "Target denied by host rules"
GEN_SIZE = 50000


# ---- helpers ---------------------------------------------------------------------------

def write_hosts(env, name, lines):
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write("# test hosts file (never /etc/hosts)\n" + "\n".join(lines) + "\n")
    return path


def servers(env):
    """An HttpTarget on 127.0.0.2 and one on 127.0.0.3, and a counting
    RawServer on 127.0.0.1, all on one port. Returns (port, t2, t3, forbidden)."""
    last = None
    for _ in range(20):
        t2 = h.HttpTarget("127.0.0.2", name="two")
        try:
            t3 = h.HttpTarget("127.0.0.3", port=t2.port, name="three")
        except OSError as e:
            last = e
            t2.close()
            continue
        try:
            bad = h.RawServer(lambda c: c.sendall(b"HTTP/1.0 200 OK\r\n\r\nFORBIDDEN-REACHED"),
                              host="127.0.0.1", port=t2.port)
        except OSError as e:
            last = e
            t2.close()
            t3.close()
            continue
        env.servers += [t2, t3, bad]
        return t2.port, t2, t3, bad
    h.fail("no port free on 127.0.0.1-3 at once: %r" % last)


def gateway(env):
    return h.proxy_gateway(env, password=PX_PASS)


def agent(env, client_id, group, **keys):
    return h.proxy_agent(env, client_id, group, **keys)


def target_bytes(host, port, atyp=None):
    """SOCKS5 ATYP+address+port. atyp 3 forces a domain name even for an
    address spelling; None: ATYP 1/4 when host is an address."""
    if atyp == 3:
        name = host.encode()
        return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)
    return h.socks5_target_bytes(host, port)


def socks5(gw, user, tbytes, password=PX_PASS, timeout=10):
    """A raw SOCKS5 CONNECT with prebuilt target bytes. Returns (sock, rep)."""
    s = socket.create_connection(("127.0.0.1", gw.socks_port), timeout=timeout)
    try:
        s.sendall(b"\x05\x01\x02")
        ver, method = h.recv_exact(s, 2)
        h.check(ver == 5 and method == 2, "SOCKS5 method reply %r" % ((ver, method),))
        u, p = user.encode(), password.encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        _v, status = h.recv_exact(s, 2)
        h.check(status == 0, "SOCKS5 auth status %d" % status)
        s.sendall(b"\x05\x01\x00" + tbytes)
        head = h.recv_exact(s, 4)
        alen = {1: 4, 4: 16}.get(head[3])
        if alen is None:
            alen = h.recv_exact(s, 1)[0]
        h.recv_exact(s, alen + 2)
        return s, head[1]
    except Exception:
        s.close()
        raise


def authority(host, port):
    return "%s:%d" % (host, port)


def http_get(gw, user, auth, path, password=PX_PASS, timeout=10):
    """GET http://AUTH/path through the HTTP proxy. Returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=timeout)
    try:
        s.sendall(("GET http://%s%s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n"
                   "Connection: close\r\n\r\n" % (auth, path, auth, h.basic_auth(user, password))
                   ).encode())
        status, headers, _text, rest = h.read_http_head(s)
        body = h.read_http_body(s, headers, rest, timeout=timeout)
        return status, headers, body
    finally:
        s.close()


def http_connect(gw, user, auth, password=PX_PASS, timeout=10):
    """CONNECT AUTH through the HTTP proxy. Returns (sock, status, rest)."""
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=timeout)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n"
               % (auth, auth, h.basic_auth(user, password))).encode())
    status, headers, _text, rest = h.read_http_head(s)
    return s, status, rest


def fetch_gen(sock, auth, rest=b"", seed=7):
    """Over an open tunnel (SOCKS5 or CONNECT): GET /gen and verify the body.
    Returns the X-Server name."""
    sock.sendall(("GET /gen?size=%d&seed=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                  % (GEN_SIZE, seed, auth)).encode())
    status, headers, text, rest2 = h.read_http_head(sock)
    h.check(status == 200, "GET /gen through the tunnel to %s: status %r, answer %r (%r)"
            % (auth, status, text[:80], rest2[:40]))
    body = h.read_http_body(sock, headers, rest2)
    h.check(len(body) == GEN_SIZE and hashlib.sha256(body).hexdigest() == h.gen_sha256(GEN_SIZE,
                                                                                   seed),
            "GET /gen: %d bytes, wrong content" % len(body))
    return headers.get("x-server")


def expect_allowed(gw, user, host, port, server, atyp=None, http_host=None):
    """SOCKS5, HTTP GET and CONNECT to host:port all reach `server` (a
    name of an HttpTarget) with the body intact."""
    s, rep = socks5(gw, user, target_bytes(host, port, atyp))
    try:
        h.check(rep == 0, "SOCKS5 to allowed %s:%d: REP 0x%02x, expected 0x00\n%s"
                % (host, port, rep, gw.tail(5)))
        got = fetch_gen(s, authority(http_host or host, port))
    finally:
        s.close()
    h.check(got == server, "SOCKS5 to %s:%d reached %r, expected %r" % (host, port, got, server))
    auth = authority(http_host or host, port)
    status, headers, body = http_get(gw, user, auth, "/gen?size=%d&seed=3" % GEN_SIZE)
    h.check(status == 200 and headers.get("x-server") == server and
            hashlib.sha256(body).hexdigest() == h.gen_sha256(GEN_SIZE, 3),
            "HTTP GET to allowed %s: status %r server %r, %d bytes" % (
                auth, status, headers.get("x-server"), len(body)))
    s, status, rest = http_connect(gw, user, auth)
    try:
        h.check(status == 200, "CONNECT to allowed %s: status %r" % (auth, status))
        got = fetch_gen(s, auth, rest)
    finally:
        s.close()
    h.check(got == server, "CONNECT to %s reached %r, expected %r" % (auth, got, server))


def _denial(ag, mark, what):
    line = ag.wait_for_log(DENIED, 5 + h.slack(), since=mark)
    h.check(len(ag.find(DENIED, mark)) == 1, "%s: more than one denial logged: %r"
            % (what, ag.find(DENIED, mark)))
    return line


def check_denial_line(line, what, client_id, targets, rule, verdict, user):
    h.check(line.level == "WARN", "%s: denial logged at %s: %r" % (what, line.level, line))
    h.check(line.get("client_id") == client_id, "%s: client_id=%r in %r, expected %r"
            % (what, line.get("client_id"), line, client_id))
    h.check(line.get("target") in targets, "%s: target=%r in %r, expected one of %r"
            % (what, line.get("target"), line, targets))
    h.check(line.get("verdict") == verdict, "%s: verdict=%r in %r, expected %r"
            % (what, line.get("verdict"), line, verdict))
    if rule is not None:
        h.check(line.get("rule") == rule, "%s: rule=%r in %r, expected %r"
                % (what, line.get("rule"), line, rule))
    h.check(line.get("user") is not None and PX_PASS not in line.raw and
            h.GW_PASS not in line.raw, "%s: user missing or a password logged: %r" % (what, line))


def http_refuses(host):
    """The gateway's HTTP parser answers 400 itself for a host whose last
    label is numeric but which is not a dotted quad (127.1, 2130706433,
    0x7f.0.0.1, 0177.0.0.1, 0): include/codec/anyproxy/http.h, http_parse_target
    ("resolvers would read the other forms as addresses too"). Such a
    target never reaches the agent over HTTP; over SOCKS5 the agent
    canonicalises and denies it."""
    name = host[:-1] if host.endswith(".") and len(host) > 1 else host
    if host.startswith("["):
        return False
    last = name.rsplit(".", 1)[-1].lower()
    numeric = bool(re.fullmatch(r"[0-9]+|0x[0-9a-f]*", last))
    if not numeric:
        return False
    try:
        socket.inet_pton(socket.AF_INET, host)
        return False
    except OSError:
        return True


def expect_denied(gw, ag, client_id, user, host, port, rule, verdict="forbidden", atyp=None,
                  http_host=None, targets=None, protos=("socks5", "get", "connect")):
    """Each of SOCKS5 (REP 0x02), HTTP GET (403) and CONNECT (403) to
    host:port is denied with one agent log line naming the client, the
    target and the rule. targets: the acceptable target= values (default
    host:port and http_host:port)."""
    http_host = http_host or host
    targets = set(targets or ()) | {"%s:%d" % (host, port), "%s:%d" % (http_host, port)}
    for proto in protos:
        what = "%s to %s (port %d) via %s" % ("denied target", host if proto == "socks5"
                                              else http_host, port, proto)
        mark = ag.mark()
        t0 = time.monotonic()
        if proto != "socks5" and http_refuses(http_host):
            if proto == "get":
                status, _headers, body = http_get(gw, user, authority(http_host, port), "/info")
            else:
                s, status, body = http_connect(gw, user, authority(http_host, port))
                s.close()
            h.check(status == 400, "%s: status %r, expected 400 from the gateway's HTTP parser "
                    "(%r)" % (what, status, body[:100]))
            time.sleep(0.05)
            h.check(not ag.find("Stream open requested", mark),
                    "%s: refused by the gateway yet the agent was asked to open it" % what)
            continue
        if proto == "socks5":
            s, rep = socks5(gw, user, target_bytes(host, port, atyp))
            s.close()
            h.check(rep == 0x02, "%s: REP 0x%02x, expected 0x02\n--- agent ---\n%s"
                    % (what, rep, ag.tail(4)))
        elif proto == "get":
            status, headers, body = http_get(gw, user, authority(http_host, port), "/info")
            h.check(status == 403, "%s: status %r, expected 403 (%r)\n--- agent ---\n%s"
                    % (what, status, body[:200], ag.tail(4)))
        else:
            s, status, _rest = http_connect(gw, user, authority(http_host, port))
            s.close()
            h.check(status == 403, "%s: status %r, expected 403\n--- agent ---\n%s"
                    % (what, status, ag.tail(4)))
        elapsed = time.monotonic() - t0
        h.check(elapsed < 2 + h.slack(), "%s: the denial took %.2f s" % (what, elapsed))
        line = _denial(ag, mark, what)
        check_denial_line(line, what, client_id, targets, rule, verdict,
                          user)


def no_secrets(env):
    for d in env.daemons:
        text = d.log()
        for secret in (PX_PASS, h.GW_PASS):
            h.check(secret not in text, "%s's log holds a password (%s...)" % (d.name, secret[:8]))


def unreached(bad, what):
    h.check(bad.accepted == 0, "%s: the forbidden listener on 127.0.0.1:%d was connected to "
            "%d times" % (what, bad.port, bad.accepted))


# ---- cases -----------------------------------------------------------------------------

def test_production_forbidden_hosts(env):
    """The spec's production list denies every spelling of the agent's own
    host (SOCKS5 0x02, HTTP 403, one log line each) and a hosts-file name
    for 127.0.0.1, while a permitted target on 127.0.0.2 works in the same
    run."""
    port, t2, t3, bad = servers(env)
    hosts = write_hosts(env, "hosts", [
        "127.0.0.1 loop.test",
        "127.0.0.2 web.test",
        "::ffff:127.0.0.1 loop6.test",
    ])
    gw = gateway(env)
    ag = agent(env, "prod-1", "prod", forbidden_hosts=PRODUCTION, hosts_file=hosts)
    user = "user.prod"
    # allowed first and last: the denials in between do not disturb it
    expect_allowed(gw, user, "127.0.0.2", port, "two")
    expect_allowed(gw, user, "web.test", port, "two")
    cases = [
        # (host as sent, atyp, HTTP spelling, rule, extra acceptable target= values)
        ("localhost", 3, None, "localhost", ()),
        ("LOCALHOST.", 3, None, "localhost", ()),
        ("LocalHost", 3, None, "localhost", ()),
        ("127.1", 3, None, "127.0.0.1", ()),
        ("127.0.1", 3, None, "127.0.0.1", ()),
        ("2130706433", 3, None, "127.0.0.1", ()),
        ("0x7f000001", 3, None, "127.0.0.1", ()),
        ("0x7f.0.0.1", 3, None, "127.0.0.1", ()),
        ("0177.0.0.1", 3, None, "127.0.0.1", ()),
        ("127.0.0.1.", 3, None, "127.0.0.1", ()),
        ("127.0.0.1", None, None, "127.0.0.1", ()),         # ATYP 1
        ("0.0.0.0", None, None, "127.0.0.1", ()),           # connects to loopback
        ("0", 3, None, "127.0.0.1", ()),
        ("::ffff:127.0.0.1", None, "[::ffff:127.0.0.1]", "127.0.0.1",
         ("[::ffff:127.0.0.1]:%d" % port,)),                # ATYP 4, mapped
        ("[::ffff:7f00:1]", 3, "[::ffff:7f00:1]", "127.0.0.1",
         ("[::ffff:127.0.0.1]:%d" % port,)),                # IPv6 literal as a name
        ("::ffff:7f00:1", 3, "[::ffff:7f00:1]", "127.0.0.1",
         ("[::ffff:127.0.0.1]:%d" % port,)),                # bare literal as a name
        ("loop.test", 3, None, "127.0.0.1", ()),            # hosts file -> 127.0.0.1
        ("LOOP.Test.", 3, None, "127.0.0.1", ()),
        ("loop6.test", 3, None, "127.0.0.1", ()),           # hosts file -> ::ffff:127.0.0.1
    ]
    t0 = time.monotonic()
    for host, atyp, http_host, rule, targets in cases:
        expect_denied(gw, ag, "prod-1", user, host, port, rule, atyp=atyp, http_host=http_host,
                      targets=targets)
    h.note("%d targets x 3 proxies denied in %.2f s" % (len(cases), time.monotonic() - t0))
    unreached(bad, "production forbidden_hosts")
    expect_allowed(gw, user, "127.0.0.2", port, "two")
    unreached(bad, "production forbidden_hosts")
    want = sum(1 + (0 if http_refuses(c[2] or c[0]) else 2) for c in cases)
    h.check(len(ag.find(DENIED)) == want, "expected %d denial lines, the agent logged %d"
            % (want, len(ag.find(DENIED))))
    h.check(gw.alive() and ag.alive(), "a daemon died")
    no_secrets(env)


def test_mixed_name_dialled_only_at_allowed_address(env):
    """A hosts-file name with one forbidden (127.0.0.1, listening) and one
    allowed address (127.0.0.2) is dialled only at the allowed one, with the
    forbidden line first or last."""
    port, t2, t3, bad = servers(env)
    hosts = write_hosts(env, "hosts", [
        "127.0.0.1 bad-first.test",
        "127.0.0.2 bad-first.test",
        "127.0.0.2 bad-last.test",
        "127.0.0.1 bad-last.test",
        "::ffff:127.0.0.1 mapped-first.test",
        "127.0.0.2 mapped-first.test",
        "127.0.0.1 only-bad.test",
    ])
    gw = gateway(env)
    ag = agent(env, "prod-1", "prod", forbidden_hosts=PRODUCTION, hosts_file=hosts)
    user = "user.prod"
    for name in ("bad-first.test", "bad-last.test", "mapped-first.test", "BAD-FIRST.test."):
        before = len(t2.requests)
        for _ in range(3):  # no luck involved: every attempt goes to the allowed address
            expect_allowed(gw, user, name, port, "two")
        h.check(len(t2.requests) == before + 9, "%s: 127.0.0.2 saw %d requests, expected 9"
                % (name, len(t2.requests) - before))
        unreached(bad, name)
    h.check(not ag.find(DENIED), "no target here is denied: %r" % ag.find(DENIED))
    # a name with the forbidden address only: denied, naming the rule
    expect_denied(gw, ag, "prod-1", user, "only-bad.test", port, "127.0.0.1")
    unreached(bad, "only-bad.test")
    no_secrets(env)


def test_allowed_hosts(env):
    """allowed_hosts = .corp.test, 127.0.0.3: an allowed name works (at any
    address it resolves to that is not forbidden), a name neither allowed
    nor resolving into 127.0.0.3 is denied without a connection, an address
    not listed is denied; '*' and '.*' allow everything not forbidden."""
    port, t2, t3, bad = servers(env)
    hosts = write_hosts(env, "hosts", [
        "127.0.0.2 app.corp.test",
        "127.0.0.2 corp.test",
        "127.0.0.1 bad.corp.test",
        "127.0.0.2 other.test",
        "127.0.0.3 other3.test",
        "127.0.0.2 xcorp.test",
        "127.0.0.2 corp.test.evil.test",
        "127.0.0.1 loop.test",
    ])
    gw = gateway(env)
    corp = agent(env, "corp-1", "corp", allowed_hosts=".corp.test, 127.0.0.3",
                 forbidden_hosts="127.0.0.1", hosts_file=hosts)
    names = agent(env, "names-1", "names", allowed_hosts=".corp.test", hosts_file=hosts)
    star = agent(env, "star-1", "star", allowed_hosts="*", forbidden_hosts="127.0.0.1",
                 hosts_file=hosts)
    dotstar = agent(env, "dotstar-1", "dotstar", allowed_hosts=".*", forbidden_hosts="127.0.0.1",
                    hosts_file=hosts)

    u = "user.corp"
    expect_allowed(gw, u, "app.corp.test", port, "two")      # allowed name -> 127.0.0.2
    expect_allowed(gw, u, "APP.Corp.Test.", port, "two")
    expect_allowed(gw, u, "corp.test", port, "two")          # .corp.test covers the domain
    expect_allowed(gw, u, "127.0.0.3", port, "three")        # allowed address
    expect_allowed(gw, u, "other3.test", port, "three")      # any name into 127.0.0.3
    seen = len(t2.requests)
    for host in ("other.test", "xcorp.test", "corp.test.evil.test"):
        expect_denied(gw, corp, "corp-1", u, host, port, None, verdict="not allowed")
    for host in ("127.0.0.2", "127.0.0.4"):
        expect_denied(gw, corp, "corp-1", u, host, port, None, verdict="not allowed")
    h.check(len(t2.requests) == seen, "127.0.0.2 was reached by a target that is not allowed")
    # forbidden wins over an allowed name
    expect_denied(gw, corp, "corp-1", u, "bad.corp.test", port, "127.0.0.1")
    unreached(bad, "allowed_hosts")

    # name rules only: a name not allowed is denied before any lookup — a
    # lookup of '-nowhere.invalid' would fail (REP 0x04 / 502), not deny
    u = "user.names"
    expect_allowed(gw, u, "app.corp.test", port, "two")
    for host in ("-nowhere.invalid", "other.test", "127.0.0.3"):
        expect_denied(gw, names, "names-1", u, host, port, None, verdict="not allowed")
    h.check(not names.find("Target connection failed"), "a denied name was looked up: %r"
            % names.find("Target connection failed"))

    for u, ag, cid in (("user.star", star, "star-1"), ("user.dotstar", dotstar, "dotstar-1")):
        expect_allowed(gw, u, "other.test", port, "two")
        expect_allowed(gw, u, "xcorp.test", port, "two")
        expect_allowed(gw, u, "127.0.0.3", port, "three")
        expect_allowed(gw, u, "127.0.0.2", port, "two")
        expect_denied(gw, ag, cid, u, "loop.test", port, "127.0.0.1")
        expect_denied(gw, ag, cid, u, "127.1", port, "127.0.0.1")
    unreached(bad, "'*' and '.*'")
    no_secrets(env)


def test_invalid_patterns_are_config_errors(env):
    """--check-config exits 2 with one line naming file:line, the key and
    the pattern; a daemon started with it exits 2 too."""
    base = [
        "[client]",
        "gateway_addr = 127.0.0.1:%d" % env.port,
        "gateway_tls_cert = %s" % os.path.join(env.certs, "ca.crt"),
        "client_id = acl-check",
        "auth_username = %s" % h.GW_USER,
        "auth_password = %s" % h.GW_PASS,
    ]
    bad_patterns = [
        ("forbidden_hosts", "10.0.0.1/8"),
        ("allowed_hosts", "example.com:0"),
        ("allowed_hosts", "127.1"),
        ("forbidden_hosts", "www.*.com"),
        ("forbidden_hosts", "192.168.*"),
        ("forbidden_hosts", "0.0.0.0"),
        ("forbidden_hosts", "::"),
        ("forbidden_hosts", "::10.0.0.1"),
        ("forbidden_hosts", "[::1"),
        ("allowed_hosts", "exa%2emple.com"),
        ("allowed_hosts", "a..b"),
        ("allowed_hosts", "10.0.0.0/33"),
        ("allowed_hosts", "example.com:70000"),
        ("forbidden_hosts", "~a)|(b"),       # PCRE2: unmatched closing parenthesis
        ("allowed_hosts", "~x{,3}\\.test"),  # literal text to PCRE2 10.42: refused
        ("forbidden_hosts", "~jump[0-9]\\.corp:22"),
        ("forbidden_hosts", "~(a)\\1"),
        ("forbidden_hosts", "~[a-z"),
    ]
    problems = []
    for i, (key, pattern) in enumerate(bad_patterns):
        # the bad pattern in the middle of a list, on line 8, after a good line
        lines = base + ["%s = good.example.test" % key,
                        "%s = .ok.test, %s" % (key, pattern),
                        "[log]", "level = info"]
        path = os.path.join(env.dir, "bad-%02d.ini" % i)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = subprocess.run([h.client_bin(), "-c", path, "--check-config"], capture_output=True,
                           text=True, timeout=30, env=h._daemon_env(None), cwd=env.dir)
        err = r.stderr.strip()
        want = "%s:8: " % path
        if r.returncode != 2:
            problems.append("%r in %s: --check-config exited %d (stderr %r)"
                            % (pattern, key, r.returncode, err))
        elif want not in err or key not in err or pattern not in err or len(err.splitlines()) != 1:
            problems.append("%r in %s: the error should be one line naming %r, the key and the "
                            "pattern: %r" % (pattern, key, want, err))
        if h.GW_PASS in r.stderr + r.stdout:
            problems.append("%r: the error shows the password" % pattern)
    # the same from the environment, and when the daemon is started for real
    path = os.path.join(env.dir, "good.ini")
    with open(path, "w") as f:
        f.write("\n".join(base + ["forbidden_hosts = localhost, 127.0.0.1, 192.168.0.0/16",
                                  "allowed_hosts = ~[a-z]{1,3}\\.corp\\.test"]) + "\n")
    r = subprocess.run([h.client_bin(), "-c", path, "--check-config"], capture_output=True,
                       text=True, timeout=30, env=h._daemon_env(None), cwd=env.dir)
    h.check(r.returncode == 0, "a valid config (with a {1,3} regex) is refused: rc %d %r"
            % (r.returncode, r.stderr))
    r = subprocess.run([h.client_bin(), "-c", path, "--check-config"], capture_output=True,
                       text=True, timeout=30, cwd=env.dir,
                       env=h._daemon_env({"CLIENT_FORBIDDEN_HOSTS": "localhost, 10.0.0.1/8"}))
    if r.returncode != 2 or "CLIENT_FORBIDDEN_HOSTS" not in r.stderr or "10.0.0.1/8" not in r.stderr:
        problems.append("CLIENT_FORBIDDEN_HOSTS=10.0.0.1/8: rc %d %r" % (r.returncode, r.stderr))
    bad = os.path.join(env.dir, "bad-00.ini")
    d = env.start("client", "agent-bad-pattern", bad)
    rc = d.wait_exit(10 + h.slack())
    if rc != 2 or "%s:8: " % bad not in d.log():
        problems.append("an agent started with a bad pattern exited %r, log %r" % (rc, d.tail(3)))
    h.check(not problems, "invalid patterns not reported as expected:\n" + "\n".join(problems))


def test_evil_suffixes(env):
    """Patterns are anchored: 'localhost' does not deny localhost.evil.test,
    '.example.test' denies sub.example.test and example.test but not
    evilexample.test or example.test.evil.test."""
    port, t2, t3, bad = servers(env)
    hosts = write_hosts(env, "hosts", [
        "127.0.0.2 localhost.evil.test",
        "127.0.0.2 xlocalhost",
        "127.0.0.2 sub.example.test",
        "127.0.0.2 a.b.example.test",
        "127.0.0.2 example.test",
        "127.0.0.2 evilexample.test",
        "127.0.0.2 example.test.evil.test",
        "127.0.0.2 localhost",        # the name rule wins over any mapping
    ])
    gw = gateway(env)
    ag = agent(env, "edge-1", "edge", forbidden_hosts="localhost, .example.test, 127.0.0.1",
               hosts_file=hosts)
    u = "user.edge"
    for name in ("localhost.evil.test", "xlocalhost", "evilexample.test",
                 "example.test.evil.test"):
        expect_allowed(gw, u, name, port, "two")
    h.check(not ag.find(DENIED), "an anchored rule denied an evil suffix: %r" % ag.find(DENIED))
    seen = len(t2.requests)
    for name in ("sub.example.test", "SUB.EXAMPLE.TEST.", "a.b.example.test", "example.test"):
        expect_denied(gw, ag, "edge-1", u, name, port, ".example.test")
    expect_denied(gw, ag, "edge-1", u, "localhost", port, "localhost")
    h.check(len(t2.requests) == seen, "a denied name reached 127.0.0.2")
    unreached(bad, "evil suffixes")
    no_secrets(env)


BACKTRACKING = "~(a+)+[0-9]"   # exponential backtracking on a name of a's that cannot match
UNDECIDED = "Host regex could not decide; it denies"


def test_backtracking_regex_fails_closed(env):
    """A regex whose match on a name reaches PCRE2's match limit decides
    nothing, and an undecided rule denies: in forbidden_hosts it forbids
    (REP 0x02 / 403, rule named), in allowed_hosts it admits nothing. The
    agent logs the first such match once per rule and keeps serving:
    names the regex decides are matched as before. glibc's engine decided
    this name (no match), so the old agent let it through."""
    port, t2, t3, bad = servers(env)
    costly = "a" * 63 + ".test"           # a 63-byte label: 2^62 ways to split it
    hosts = write_hosts(env, "hosts", [
        "127.0.0.2 %s" % costly,
        "127.0.0.2 ok.test",
        "127.0.0.2 aaaa1",
    ])
    gw = gateway(env)
    forbid = agent(env, "regex-forbid-1", "rforbid", forbidden_hosts=BACKTRACKING,
                   hosts_file=hosts)
    admit = agent(env, "regex-admit-1", "radmit", allowed_hosts=BACKTRACKING, hosts_file=hosts)
    uf, ua = "user.rforbid", "user.radmit"
    seen = len(t2.requests)
    expect_denied(gw, forbid, "regex-forbid-1", uf, costly, port, BACKTRACKING)
    expect_denied(gw, admit, "regex-admit-1", ua, costly, port, "-", verdict="not allowed")
    h.check(len(t2.requests) == seen, "a target the regex could not decide reached 127.0.0.2")
    for ag, what in ((forbid, "forbidden_hosts"), (admit, "allowed_hosts")):
        lines = ag.find(UNDECIDED)
        h.check(len(lines) == 1 and lines[0].get("rule") == BACKTRACKING and
                lines[0].get("error") == "match limit exceeded",
                "%s: expected one %r line naming the rule and the limit, got %r"
                % (what, UNDECIDED, lines))
    # still serving, and deciding what the regex can decide
    expect_allowed(gw, uf, "ok.test", port, "two")
    expect_denied(gw, forbid, "regex-forbid-1", uf, "aaaa1", port, BACKTRACKING)
    expect_allowed(gw, ua, "aaaa1", port, "two")
    expect_denied(gw, admit, "regex-admit-1", ua, "ok.test", port, "-", verdict="not allowed")
    h.check(forbid.alive() and admit.alive() and gw.alive(), "a daemon died")
    unreached(bad, "backtracking regex")
    no_secrets(env)


if __name__ == "__main__":
    h.run([
        test_production_forbidden_hosts,
        test_mixed_name_dialled_only_at_allowed_address,
        test_allowed_hosts,
        test_invalid_patterns_are_config_errors,
        test_evil_suffixes,
        test_backtracking_regex_fails_closed,
    ])
