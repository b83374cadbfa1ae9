#!/usr/bin/env python3
"""Tenant isolation on the users' side (issue 8, deliver 3 and 4).

- No fallback across a tenant boundary: a group with a [group.NAME] section
  whose agents are gone gets SOCKS5 REP 0x03 / HTTP 503 and never reaches
  the default group's agent; a sectionless group still falls back, until
  [gateway] fallback_to_default = false (reloaded on SIGHUP) turns that off.
- One identity, parsed once: the 64-byte-group truncation attack is refused
  as bad credentials and routes nowhere; and a property test over a corpus
  of user names (dots, case, NUL and control bytes, over-long parts) through
  both proxies, raw, with every candidate password: whenever a request is
  admitted, the agent that carried it is one of exactly the group the name
  names (or the default group's, for a sectionless group without agents),
  and the password used is that group's; everything else is refused.

Which agent carried a request is read from apctl's per-client
streams_total, snapshotted around every admitted request; over the whole
run the sum of the deltas must equal the admitted-and-served count, so no
refused attempt opened a stream either.
"""
import base64
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

USER = h.PROXY_USER
LISTENER_PASS = h.PROXY_PASS
WRONG_PASS = "itest-Iso-Wrong-7c1d"
ID_MAX = 64       # FRAME_MAX_ID_LEN: a group id
BASE_MAX = 255    # FRAME_MAX_TEXT_LEN: the OPEN frame's user field
NAME_MAX = 255    # SOCKS5 ULEN, HTTP Basic user part (decoded)
ID_ALPHABET = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
NO_AGENT = "no clients available in group '%s'"


# ---- gateway with [group.NAME] sections --------------------------------------------------

def iso_gateway(env, sections, **keys):
    """A gateway with both proxies (user / proxy_pass) and one
    [group.NAME] auth_password = PASS section per sections item."""
    merged = dict(h.PROXY_GATEWAY)
    merged.update(keys)
    config = env.gateway_config("gateway", **merged)
    http_port, socks_port = h.free_port(), h.free_port()
    text = open(config).read()
    for section, port in (("proxy.http", http_port), ("proxy.socks5", socks_port)):
        text += "\n[%s]\nlisten_addr = 127.0.0.1:%d\nauth_username = %s\nauth_password = %s\n" % (
            section, port, USER, LISTENER_PASS)
    for name, password in sections.items():
        text += "\n[group.%s]\nauth_password = %s\n" % (name, password)
    with open(config, "w") as f:
        f.write(text)
    gw = env.start("gateway", "gateway", config)
    gw.http_port, gw.socks_port = http_port, socks_port
    env.gw = gw
    env.wait_gateway_ready(gw)
    for port in (http_port, socks_port):
        h.wait_until(lambda: h._port_open("127.0.0.1", port), 5 + h.slack(),
                     "the proxy listener on 127.0.0.1:%d" % port)
    return gw


def echo_target(env):
    t = h.RawServer(h.echo_handler)
    env.servers.append(t)
    return t


def reload_gateway(gw, old, new):
    with open(gw.config) as f:
        text = f.read()
    h.check(old in text, "gateway config holds no %r" % old)
    with open(gw.config, "w") as f:
        f.write(text.replace(old, new, 1))
    mark = gw.mark()
    gw.send_signal(1)  # SIGHUP
    gw.wait_for_log("Configuration reloaded", 5 + h.slack(), since=mark)


# ---- raw proxy clients (any bytes in the user name) --------------------------------------

class Outcome:
    """What one attempt got: 'refused' (auth failure), 'served' (connected,
    one byte echoed), 'no-agent' or 'failed' after admission, 'closed'
    (no answer at all)."""

    def __init__(self, kind, detail=""):
        self.kind = kind
        self.detail = detail

    def __repr__(self):
        return "%s%s" % (self.kind, " (%s)" % self.detail if self.detail else "")


def _echo_one(s):
    s.sendall(b"z")
    return h.recv_exact(s, 1) == b"z"


def socks5_try(port, user, password, target_port):
    """A raw RFC 1929 exchange with user/password as bytes, then CONNECT."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"\x05\x01\x02")
        h.check(h.recv_exact(s, 2) == b"\x05\x02", "SOCKS5 method reply")
        s.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        try:
            ver, status = h.recv_exact(s, 2)
        except ConnectionError:
            return Outcome("closed", "no auth status")
        if status != 0:
            how, _, rest = h.read_until_closed(s, 5)
            h.check(rest == b"", "bytes after a failed auth: %r" % rest)
            return Outcome("refused", "auth status 0x%02x" % status)
        s.sendall(b"\x05\x01\x00" + h.socks5_target_bytes("127.0.0.1", target_port))
        head = h.recv_exact(s, 4)
        h.recv_exact(s, {1: 4, 4: 16}[head[3]] + 2)
        if head[1] == 0x00:
            h.check(_echo_one(s), "SOCKS5: the echo did not come back")
            return Outcome("served")
        if head[1] == 0x03:
            return Outcome("no-agent", "REP 0x03")
        return Outcome("failed", "REP 0x%02x" % head[1])
    finally:
        s.close()


def http_try(port, user, password, target_port):
    """CONNECT with a raw Basic credential: base64(user ':' password), so
    control bytes reach the gateway as they are."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        cred = base64.b64encode(user + b":" + password).decode()
        authority = "127.0.0.1:%d" % target_port
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n"
                   % (authority, authority, cred)).encode())
        status, headers, text, rest = h.read_http_head(s)
        if status == 407:
            h.check(headers.get("proxy-authenticate", "").startswith("Basic"),
                    "407 without a Basic challenge:\n%s" % text)
            return Outcome("refused", "407")
        if status == 200:
            h.check(rest == b"", "bytes after 200: %r" % rest)
            h.check(_echo_one(s), "HTTP: the echo did not come back")
            return Outcome("served")
        body = h.read_http_body(s, headers, rest, timeout=5)
        if status == 503 and b"no clients available" in body:
            return Outcome("no-agent", body.decode("latin-1").strip())
        return Outcome("failed", "%s %r" % (status, body[:200]))
    finally:
        s.close()


def served_by(env, before, after=None):
    """The one client whose streams_total moved since before (None: none)."""
    d = h.stream_delta(before, after if after is not None else h.stream_totals(env))
    h.check(len(d) <= 1 and all(v == 1 for v in d.values()),
            "one request moved these counters: %r" % d)
    return next(iter(d), None)


# ---- (a) no fallback across a tenant boundary --------------------------------------------

def test_section_group_never_falls_back(env):
    gw = iso_gateway(env, {"tenant": "tenant-Pass-1f"})
    h.proxy_agent(env, "def")
    tenant = h.proxy_agent(env, "tenant-1", "tenant")
    t = echo_target(env)
    u_tenant = (b"user.tenant", b"tenant-Pass-1f")
    u_open = (b"user.nosection", LISTENER_PASS.encode())

    # while its agent is there, the tenant is served by it
    for try_ in (socks5_try, http_try):
        before = h.stream_totals(env)
        r = try_(gw.socks_port if try_ is socks5_try else gw.http_port, *u_tenant, t.port)
        h.check(r.kind == "served", "%s, tenant agent up: %r" % (try_.__name__, r))
        h.check(served_by(env, before) == "tenant-1", "served by the tenant's agent")

    tenant.stop()
    env.wait_gone("tenant-1", 5 + h.slack())
    before = h.stream_totals(env)
    mark = gw.mark()
    r = socks5_try(gw.socks_port, *u_tenant, t.port)
    h.check(r.kind == "no-agent", "SOCKS5 tenant without agents: want REP 0x03, got %r" % r)
    r = http_try(gw.http_port, *u_tenant, t.port)
    h.check(r.kind == "no-agent" and r.detail.endswith(NO_AGENT % "tenant"),
            "HTTP tenant without agents: want 503 %r, got %r" % (NO_AGENT % "tenant", r))
    h.check("default group" not in r.detail,
            "the 503 must not claim a default-group attempt: %r" % r.detail)
    # the absolute-URI path says the same
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        s.sendall(("GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s"
                   "\r\n\r\n" % (t.port, h.basic_auth("user.tenant", "tenant-Pass-1f"))).encode())
        status, headers, text, rest = h.read_http_head(s)
        body = h.read_http_body(s, headers, rest, timeout=5)
    finally:
        s.close()
    h.check(status == 503 and (NO_AGENT % "tenant").encode() in body,
            "HTTP GET tenant without agents: %r %r" % (status, body))
    h.check(h.stream_delta(before, h.stream_totals(env)) == {},
            "the default group's agent must see no stream of the tenant: %r"
            % h.stream_delta(before, h.stream_totals(env)))
    h.check(not gw.find("falling back", mark), "the gateway logged a fallback:\n%s"
            % gw.tail(10))
    errs = gw.find(NO_AGENT % "tenant", mark)
    h.check(errs and errs[0].level == "ERROR" and errs[0].get("no_fallback"),
            "ERROR line naming why there was no fallback: %r" % errs)

    # a sectionless group without agents still falls back (the spec)
    for try_ in (socks5_try, http_try):
        before = h.stream_totals(env)
        r = try_(gw.socks_port if try_ is socks5_try else gw.http_port, *u_open, t.port)
        h.check(r.kind == "served", "%s sectionless group: %r" % (try_.__name__, r))
        h.check(served_by(env, before) == "def", "sectionless group falls back to def")

    # fallback_to_default = false (SIGHUP): now no group falls back
    reload_gateway(gw, "[gateway]\n", "[gateway]\nfallback_to_default = false\n")
    before = h.stream_totals(env)
    r = socks5_try(gw.socks_port, *u_open, t.port)
    h.check(r.kind == "no-agent", "SOCKS5 sectionless, fallback off: %r" % r)
    r = http_try(gw.http_port, *u_open, t.port)
    h.check(r.kind == "no-agent" and r.detail.endswith(NO_AGENT % "nosection"),
            "HTTP sectionless, fallback off: %r" % r)
    r = socks5_try(gw.socks_port, *u_tenant, t.port)
    h.check(r.kind == "no-agent", "SOCKS5 tenant, fallback off: %r" % r)
    h.check(h.stream_delta(before, h.stream_totals(env)) == {},
            "fallback off: no stream anywhere: %r" % h.stream_delta(before, h.stream_totals(env)))
    # the default group itself is no fallback: still served
    for try_ in (socks5_try, http_try):
        before = h.stream_totals(env)
        r = try_(gw.socks_port if try_ is socks5_try else gw.http_port, b"user",
                 LISTENER_PASS.encode(), t.port)
        h.check(r.kind == "served" and served_by(env, before) == "def",
                "%s default group with fallback off: %r" % (try_.__name__, r))

    # and back on
    reload_gateway(gw, "fallback_to_default = false", "fallback_to_default = true")
    before = h.stream_totals(env)
    r = http_try(gw.http_port, *u_open, t.port)
    h.check(r.kind == "served" and served_by(env, before) == "def",
            "fallback on again: %r" % r)


def test_fallback_off_from_start(env):
    """fallback_to_default = false in the file from the start."""
    gw = iso_gateway(env, {}, fallback_to_default="false")
    h.proxy_agent(env, "def")
    t = echo_target(env)
    before = h.stream_totals(env)
    r = socks5_try(gw.socks_port, b"user.elsewhere", LISTENER_PASS.encode(), t.port)
    h.check(r.kind == "no-agent", "SOCKS5: %r" % r)
    r = http_try(gw.http_port, b"user.elsewhere", LISTENER_PASS.encode(), t.port)
    h.check(r.kind == "no-agent" and r.detail.endswith(NO_AGENT % "elsewhere"), "HTTP: %r" % r)
    h.check(h.stream_delta(before, h.stream_totals(env)) == {}, "no stream")


# ---- (b) the 64-byte truncation attack ---------------------------------------------------

def test_truncated_group_attack(env):
    g64 = ("tenant-" + "x" * ID_MAX)[:ID_MAX]
    g64_pass = "g64-Pass-90ab"
    gw = iso_gateway(env, {g64: g64_pass})
    h.proxy_agent(env, "g64-agent", g64)
    h.proxy_agent(env, "def")
    t = echo_target(env)
    listener = LISTENER_PASS.encode()

    # the group's own password opens it (the control case)
    for try_, port in ((socks5_try, gw.socks_port), (http_try, gw.http_port)):
        before = h.stream_totals(env)
        r = try_(port, ("user." + g64).encode(), g64_pass.encode(), t.port)
        h.check(r.kind == "served" and served_by(env, before) == "g64-agent",
                "%s user.<64-byte group> with its password: %r" % (try_.__name__, r))

    before = h.stream_totals(env)
    mark = gw.mark()
    for name in ("user." + g64 + "X", "user." + g64 + ".anything", "user." + g64 + "." + g64,
                 "user." + g64):
        for try_, port in ((socks5_try, gw.socks_port), (http_try, gw.http_port)):
            r = try_(port, name.encode(), listener, t.port)
            h.check(r.kind == "refused",
                    "%s %r with the listener password must be refused as bad credentials, "
                    "got %r" % (try_.__name__, name, r))
    h.check(h.stream_delta(before, h.stream_totals(env)) == {},
            "the attack opened streams: %r" % h.stream_delta(before, h.stream_totals(env)))
    fails = gw.find("Proxy authentication failed", mark)
    h.check(len(fails) == 8 and all(l.level == "WARN" for l in fails),
            "8 WARN 'Proxy authentication failed': %r" % fails)
    h.check(sum(1 for l in fails if "longer than" in (l.get("reason") or "")) == 6,
            "6 refusals name the group length rule: %r" % [l.get("reason") for l in fails])
    for d in env.daemons:
        h.check(LISTENER_PASS not in d.log() and g64_pass not in d.log(),
                "%s logged a password" % d.name)


# ---- (c) property test: the authenticated group is the routed group ---------------------

T64 = ("t64-" + "y" * ID_MAX)[:ID_MAX]  # a tenant at the id length limit
SECTIONS = {"alpha": "pw-Alpha-11", "Beta.eu": "pw-Beta-22", "gone": "pw-Gone-33",
            T64: "pw-T64-44"}
AGENTS = {"alpha": "a-1", "Beta.eu": "b-1", "open": "o-1", "open.x": "ox-1", T64: "t64-1",
          "": "d-0"}
PASSWORDS = [LISTENER_PASS.encode(), b"pw-Alpha-11", b"pw-Beta-22", b"pw-Gone-33",
             b"pw-T64-44", b"", WRONG_PASS.encode()]


def corpus():
    g64 = b"g" * ID_MAX
    groups = [b"", b".", b".alpha", b".Alpha", b".ALPHA", b".alpha.", b".alpha.x", b".alphaX",
              b".alph", b".alpha\x00", b".alpha\x00x", b".al\x01pha", b".alpha\n", b".alpha ",
              b". alpha", b".Beta.eu", b".beta.eu", b".Beta", b".Beta.eu.", b".Beta.eu:x",
              b".open", b".Open", b".open.x", b".open.y", b".open.", b".ghost", b".gone",
              b".a:b", b".:", b"..alpha", b".-", b"." + g64, b"." + g64 + b"X",
              b"." + g64 + b".alpha", b"." + T64.encode(), b"." + T64.encode() + b"X",
              b"." + T64.encode() + b".alpha", b"." + T64.encode()[:-1], b".alpha\x7f", b".alpha\xff", b".\xc3\xa4",
              b".alpha/x", b".alpha%00"]
    bases = [b"user", b"User", b"", b"intruder", b"us\x00er", b"user\x01", b"user\r\n",
             b"user\x7f", b"us er", b"us:er", b"user\xc3\xa4"]
    names = set()
    for b in bases:
        for g in groups:
            names.add(b + g)
    names.add(b"u" * BASE_MAX)
    names.add(b"u" * (BASE_MAX - len(b".alpha")) + b".alpha")
    names.add(b"u" * (BASE_MAX - ID_MAX - 1) + b"." + g64)
    names.add(b"\x00")
    names.add(b"\x00.alpha")
    names.add(b"user\x00.alpha")
    return sorted(names)


def parse(name):
    """The model of username_parse: (base, group) or None when refused."""
    base, dot, group = name.partition(b".")
    if len(group) > ID_MAX or any(c not in ID_ALPHABET for c in group):
        return None
    if len(base) > BASE_MAX or any(c < 0x20 or c == 0x7f for c in base):
        return None
    return base, group


def credentials_for(proto, name, password):
    """(user, password) as the gateway decodes them, or None when the
    protocol itself cannot carry or refuses them."""
    if proto == "socks5":
        if not 1 <= len(name) <= NAME_MAX or len(password) > NAME_MAX:
            return None
        return name, password
    # HTTP Basic: the user part ends at the first ':'; NUL bytes are refused
    raw = name + b":" + password
    if b"\x00" in raw:
        return None
    user, _, pw = raw.partition(b":")
    if len(user) > NAME_MAX or len(pw) > NAME_MAX:
        return None
    return user, pw


def test_property_identity(env):
    gw = iso_gateway(env, SECTIONS)
    for group, cid in AGENTS.items():
        h.proxy_agent(env, cid, group or None)
    t = echo_target(env)
    group_of = {cid: group for group, cid in AGENTS.items()}
    start = after = h.stream_totals(env)
    attempts = admitted = served = 0
    bad = []
    for name in corpus():
        for password in PASSWORDS:
            for proto in ("socks5", "http"):
                creds = credentials_for(proto, name, password)
                if proto == "socks5" and creds is None:
                    continue  # SOCKS5 cannot carry it at all
                attempts += 1
                if proto == "socks5":
                    r = socks5_try(gw.socks_port, name, password, t.port)
                else:
                    r = http_try(gw.http_port, name, password, t.port)
                what = "%s name=%r password=%r: %r" % (proto, name, password, r)
                ident = parse(creds[0]) if creds else None
                if r.kind == "closed":
                    bad.append("closed without answering as bad credentials: " + what)
                    continue
                if r.kind == "refused":
                    # no snapshot (apctl is the slow part): a stream opened
                    # by a refused attempt shows in the next admitted one's
                    # delta, and in the total at the end
                    # every admissible attempt must have been admitted
                    if ident is not None:
                        base, group = ident
                        gname = group.decode()
                        want = SECTIONS.get(gname)
                        ok_pw = creds[1] == (want.encode() if want else LISTENER_PASS.encode())
                        if base == USER.encode() and ok_pw:
                            bad.append("refused a valid name and its password: " + what)
                    continue
                admitted += 1
                served += r.kind == "served"
                # the counters moved by this attempt (and by the refused
                # ones since the last snapshot, which must be none)
                before, after = after, h.stream_totals(env)
                if ident is None:
                    cid = served_by(env, before, after)
                    if cid and group_of[cid] in SECTIONS:
                        bad.append("a name the parser refuses reached a tenant's agent: "
                                   "%s, carried by %s (group %r)" % (what, cid, group_of[cid]))
                    else:
                        bad.append("admitted a name the parser refuses: %s, carried by %s"
                                   % (what, cid))
                    continue
                base, group = ident
                gname = group.decode()
                if base != USER.encode():
                    bad.append("admitted base %r: %s" % (base, what))
                # the credential used must be the group's: its section's
                # password, or the listener's for a sectionless group
                want = SECTIONS.get(gname)
                if creds[1] != (want.encode() if want else LISTENER_PASS.encode()):
                    bad.append("admitted with another group's password: " + what)
                cid = served_by(env, before, after)
                if r.kind == "served":
                    if cid is None:
                        bad.append("served without a counted stream: " + what)
                        continue
                    got = group_of[cid]
                    if got == gname:
                        continue
                    if got == "" and gname not in SECTIONS and gname not in AGENTS:
                        continue  # the spec's fallback, for a sectionless group
                    bad.append("group %r routed to %r (%s): %s" % (gname, got, cid, what))
                elif r.kind == "no-agent":
                    if cid is not None:
                        bad.append("no-agent answer but a stream opened: " + what)
                    if not (gname in SECTIONS and gname not in AGENTS):
                        bad.append("no agent for %r, which has one (or may fall back): %s"
                                   % (gname, what))
                else:
                    bad.append("unexpected answer: " + what)
    total = sum(h.stream_delta(start, h.stream_totals(env)).values())
    h.note("%d attempts, %d admitted, %d served, %d streams counted"
           % (attempts, admitted, served, total))
    if bad:
        kinds = {}
        for b in bad:
            kinds.setdefault(b.split(":")[0], []).append(b)
        fail_text = ["%d violations of %d kinds" % (len(bad), len(kinds))]
        for k, items in kinds.items():
            fail_text.append("%d x %s; first ones:" % (len(items), k))
            fail_text += ["  " + i for i in items[:4]]
        h.fail("\n".join(fail_text))
    h.check(total == served, "%d streams counted for %d served requests" % (total, served))
    h.check(admitted > 40 and served > 30, "too few admitted requests to mean anything")


if __name__ == "__main__":
    h.run([
        test_section_group_never_falls_back,
        test_fallback_off_from_start,
        test_truncated_group_attack,
        test_property_identity,
    ])
