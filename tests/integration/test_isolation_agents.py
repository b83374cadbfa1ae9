#!/usr/bin/env python3
"""Tenant isolation on the agent side (issue 8 items 1 and 2,
docs/operations.md "Agent credentials" and "Client identity").

- A [group.NAME] section with agent_password admits agents to NAME only with
  its own credential (agent_username defaults to [gateway] auth_username):
  the shared [gateway] credential and another group's agent credential are
  refused with ERROR auth, the agent says so and apctl never lists it.
- [gateway] require_group_section = true refuses agents for every group
  without a section, the default group included; off (the default) it does
  not.
- A client_id belongs to the group and credential that registered it: an
  agent of another group (the default group included) or credential
  claiming it gets ERROR ID_IN_USE, the gateway's WARN names both remote
  addresses, the holder keeps its tunnels and keeps serving its users, and
  the refused agent backs off to its cap. The same group and credential
  still replaces (a restart: newest wins).
- SIGHUP: an admitted agent whose credential was removed or changed (or
  whose group now refuses it) is closed with ERROR auth and a WARN; adding
  an unrelated group leaves every agent alone.
- [gateway] max_tunnels_per_group bounds each tenant's tunnels: a group
  with its own agent credential, or all groups of the shared credential.
- With [gateway] client_ca, an agent certificate carrying binding URI SANs
  (anyproxy://agent/GROUP/CLIENT) joins only as one of them; one whose
  binding URI holds a NUL byte is refused.
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PROD_USERS = "itest-Prod-Users-41f0a2"
PROD_AGENTS = "itest-Prod-Agents-9c3e17"
PROD_AGENTS_NEW = "itest-Prod-Agents-New-77d5b0"
STAGING_USERS = "itest-Staging-Users-2b8d64"
STAGING_AGENTS = "itest-Staging-Agents-e51c09"
STAGING_AGENT_USER = "staging_agent"
SHARED_NEW = "itest-Gw-Shared-New-0a6f33"
LONG_CAP_MS = 3600000

SECRETS = (h.GW_PASS, PROD_USERS, PROD_AGENTS, PROD_AGENTS_NEW, STAGING_USERS,
           STAGING_AGENTS, SHARED_NEW)

REJECTED_CREDS = "Gateway rejected our credentials"
REFUSED_ID = "Gateway refused our client_id"
REVOKED = "Client credential revoked"
RELOADED = "Configuration reloaded"


# ---- helpers ---------------------------------------------------------------------------

def gateway_config(env, groups, socks=None, name="gateway", **keys):
    """The test gateway's config plus [group.NAME] sections (groups: {name:
    {key: value}}) and, with socks (a port), a [proxy.socks5] listener with
    the harness's user/password."""
    path = env.gateway_config(name, **keys)
    lines = []
    if socks:
        lines += ["[proxy.socks5]", "listen_addr = 127.0.0.1:%d" % socks,
                  "auth_username = %s" % h.PROXY_USER, "auth_password = %s" % h.PROXY_PASS, ""]
    for group, kv in groups.items():
        lines.append("[group.%s]" % group)
        lines += ["%s = %s" % (k, v) for k, v in kv.items()]
        lines.append("")
    with open(path, "a") as f:
        f.write("\n" + "\n".join(lines))
    return path


def start_gateway(env, groups, socks=False, **keys):
    port = h.free_port() if socks else None
    gw = env.start("gateway", "gateway", gateway_config(env, groups, port, **keys))
    gw.socks_port = port
    env.gw = gw
    env.wait_gateway_ready(gw)
    if port:
        h.wait_until(lambda: h._port_open("127.0.0.1", port), 5 + h.slack(),
                     "the SOCKS5 listener on 127.0.0.1:%d" % port)
    return gw


def reload(env, gw, groups, **keys):
    """Rewrite the gateway's file and SIGHUP it; returns the log mark."""
    gateway_config(env, groups, gw.socks_port, **keys)
    mark = gw.mark()
    gw.send_signal(signal.SIGHUP)
    gw.wait_for_log(RELOADED, 5 + h.slack(), since=mark)
    return mark




def gw_rejections(gw, client_id, since=0):
    return [l for l in gw.find("Client rejected", since) if l.get("client_id") == client_id]


def expect_refused_auth(env, gw, agent, client_id, reason_part, attempts=2):
    """The agent is refused with ERROR auth `attempts` times, says so, and is
    never listed meanwhile; the gateway's WARN names the reason."""
    seen = []

    def refused_enough():
        if client_id in env.clients():
            seen.append(client_id)
        return len(agent.find(REJECTED_CREDS)) >= attempts
    h.wait_until(refused_enough, 5 + h.slack(2), "%s to be refused %d times" % (client_id,
                                                                               attempts))
    h.check(not seen and client_id not in env.clients(), "apctl listed the refused %s"
            % client_id)
    line = agent.find(REJECTED_CREDS)[0]
    h.check(line.level == "ERROR", "the refusal should be an ERROR: %r" % line)
    h.check(line.get("client_id") == client_id, "refusal line without client_id: %r" % line)
    rej = gw_rejections(gw, client_id)
    h.check(rej and all(l.level == "WARN" for l in rej), "gateway rejections: %r" % rej)
    h.check(reason_part in rej[0].get("reason", ""),
            "gateway reason %r should mention %r" % (rej[0].get("reason"), reason_part))
    h.check(not [l for l in gw.find("Client connected") if l.get("client_id") == client_id],
            "the gateway logged 'Client connected' for the refused %s" % client_id)
    h.check(agent.alive(), "the refused agent exited")


def assert_no_secret(env):
    for d in env.daemons:
        text = d.log()
        for s in SECRETS:
            h.check(s not in text, "%s log contains the secret %r" % (d.name, s))


def socks_echo(gw, echo_port, user, password):
    """One SOCKS5 CONNECT to the echo server and a round trip."""
    r = h.socks5_open(gw.socks_port, "127.0.0.1", echo_port, user=user, password=password)
    try:
        h.check(r.auth_status == 0 and r.rep == 0, "SOCKS5 as %s: %r" % (user, r))
        r.sock.settimeout(10)
        r.sock.sendall(b"ping-through-production\n")
        got = h.recv_exact(r.sock, len(b"ping-through-production\n"))
        h.check(got == b"ping-through-production\n", "echo answered %r" % got)
    finally:
        r.sock.close()


# ---- admission per group -------------------------------------------------------------

def test_group_agent_password(env):
    gw = start_gateway(env, {
        "production": {"auth_password": PROD_USERS, "agent_password": PROD_AGENTS},
        "staging": {"auth_password": STAGING_USERS, "agent_username": STAGING_AGENT_USER,
                    "agent_password": STAGING_AGENTS},
    })
    # the shared credential cannot join a group that has its own
    shared = env.agent("shared-into-prod", group_id="production", wait=False)
    expect_refused_auth(env, gw, shared, "shared-into-prod", "shared [gateway] credential")
    # another group's agent credential cannot join it either
    other = env.agent("staging-into-prod", group_id="production", wait=False,
                      auth_username=STAGING_AGENT_USER, auth_password=STAGING_AGENTS)
    expect_refused_auth(env, gw, other, "staging-into-prod", "wrong agent username or password")
    # the group's own credential can (agent_username defaults to [gateway] auth_username)
    env.agent("prod-1", group_id="production", auth_password=PROD_AGENTS)
    # agent_username is checked too
    wrong_user = env.agent("staging-wrong-user", group_id="staging", wait=False,
                           auth_password=STAGING_AGENTS)
    expect_refused_auth(env, gw, wrong_user, "staging-wrong-user",
                        "wrong agent username or password")
    env.agent("staging-1", group_id="staging", auth_username=STAGING_AGENT_USER,
              auth_password=STAGING_AGENTS)
    # a group's agent credential joins nothing else: not a group without a
    # section (the shared credential's), not the default group
    free = env.agent("prod-into-free", group_id="free", wait=False, auth_password=PROD_AGENTS)
    expect_refused_auth(env, gw, free, "prod-into-free", "wrong gateway username or password")
    dflt = env.agent("prod-into-default", wait=False, auth_password=PROD_AGENTS)
    expect_refused_auth(env, gw, dflt, "prod-into-default", "wrong gateway username or password")
    # groups without agent_password keep taking the shared credential
    env.agent("free-1", group_id="free")
    env.agent("default-1")
    c = env.clients()
    h.check(sorted(c) == ["default-1", "free-1", "prod-1", "staging-1"], "clients: %r" % c)
    h.check(c["prod-1"]["group_id"] == "production" and c["staging-1"]["group_id"] == "staging",
            "groups: %r" % c)
    assert_no_secret(env)


def test_require_group_section(env):
    groups = {"declared": {"auth_password": STAGING_USERS}}
    gw = start_gateway(env, groups, require_group_section="true")
    nosection = env.agent("no-section", group_id="undeclared", wait=False)
    expect_refused_auth(env, gw, nosection, "no-section", "require_group_section")
    # the default group cannot have a section: refused as well
    dflt = env.agent("default-agent", wait=False)
    expect_refused_auth(env, gw, dflt, "default-agent", "require_group_section")
    # a declared group without agent_password takes the shared credential
    env.agent("declared-1", group_id="declared")
    h.check(sorted(env.clients()) == ["declared-1"], "clients: %r" % env.clients())
    nosection.stop()
    dflt.stop()

    # off (the default): the spec's behaviour, any group takes the shared credential
    gw.stop()
    start_gateway(env, groups)
    env.agent("no-section-2", group_id="undeclared")
    env.agent("default-2")
    assert_no_secret(env)


# ---- a client_id belongs to its group and credential ---------------------------------------

def check_takeover_refused(env, gw, prod, attacker, client_id, echo_port=None,
                           user_password=None):
    """attacker (started with wait=False) claims client_id held by prod."""
    prod_addrs = h.local_addrs(prod.pid)
    line = attacker.wait_for_log(REFUSED_ID, 5 + h.slack())
    h.check(line.level == "ERROR" and line.get("client_id") == client_id,
            "the refused agent's line: %r" % line)
    retry = attacker.wait_for_log("Reconnecting to gateway", 2 + h.slack())
    h.check(retry.get("delay_ms") == retry.get("max_delay_ms") == str(LONG_CAP_MS),
            "after ID_IN_USE the agent should wait its whole cap %d ms: %r"
            % (LONG_CAP_MS, retry))
    warn = [l for l in gw_rejections(gw, client_id) if "in use" in l.get("reason", "")]
    h.check(warn and warn[0].level == "WARN", "gateway WARN for the id in use: %r"
            % gw_rejections(gw, client_id))
    w = warn[0]
    attacker_addrs = h.local_addrs(attacker.pid) | {
        l.get("remote_addr") for l in gw.find("Tunnel accepted")}
    h.check(w.get("holder_remote_addr") in prod_addrs,
            "holder_remote_addr %r is not the holder's socket %r" % (w.get("holder_remote_addr"),
                                                                    prod_addrs))
    h.check(w.get("remote_addr") not in prod_addrs and w.get("remote_addr") in attacker_addrs,
            "remote_addr %r should be the refused agent's" % w.get("remote_addr"))
    h.check(not prod.find("Gateway replaced this tunnel") and not prod.find("Disconnected"),
            "the holder lost a tunnel:\n%s" % prod.tail(10))
    h.check(not gw.find("Client tunnel replaced"), "the gateway replaced the holder's tunnel")
    # the holder keeps everything, for a while
    time.sleep(h.PING_INTERVAL * 3)
    c = env.clients()
    h.check(c[client_id]["remote_addr"] in prod_addrs and c[client_id]["tunnels"] == 2,
            "the holder's row changed: %r" % c.get(client_id))
    if echo_port:
        socks_echo(gw, echo_port, "user.production", user_password)
        row = env.clients()[client_id]
        h.check(row["streams_total"] >= 1, "production's stream went elsewhere: %r" % row)
    h.check(attacker.alive() and prod.alive(), "an agent exited")


def test_takeover_from_default_group_refused(env):
    # no [group.NAME] at all: the shared credential everywhere, as at 1a86f75
    port = h.free_port()
    gw = env.start("gateway", "gateway", gateway_config(env, {}, port))
    gw.socks_port = port
    env.gw = gw
    env.wait_gateway_ready(gw)
    echo = h.RawServer(h.echo_handler)
    env.servers.append(echo)
    prod = env.agent("prod-client-001", group_id="production", replicas=2,
                     name="production-agent")
    attacker = env.agent("prod-client-001", name="default-attacker", wait=False,
                         reconnect_max_delay_ms=LONG_CAP_MS)
    check_takeover_refused(env, gw, prod, attacker, "prod-client-001", echo.port, h.PROXY_PASS)
    h.check(env.groups()["production"]["clients"] == 1 and "" not in env.groups(),
            "groups: %r" % env.groups())


def test_takeover_with_other_credential_refused(env):
    gw = start_gateway(env, {
        "production": {"auth_password": PROD_USERS, "agent_password": PROD_AGENTS},
    }, socks=True)
    echo = h.RawServer(h.echo_handler)
    env.servers.append(echo)
    prod = env.agent("prod-client-001", group_id="production", replicas=2,
                     name="production-agent", auth_password=PROD_AGENTS)
    # a group without a section (the shared credential) claims the id
    staging = env.agent("prod-client-001", group_id="staging", name="staging-attacker",
                        wait=False, reconnect_max_delay_ms=LONG_CAP_MS)
    check_takeover_refused(env, gw, prod, staging, "prod-client-001", echo.port, PROD_USERS)
    staging.stop()
    # the same id in production with the shared credential: refused as bad
    # credentials before the id is even looked at
    shared = env.agent("prod-client-001", group_id="production", name="shared-attacker",
                       wait=False)
    shared.wait_for_log(REJECTED_CREDS, 5 + h.slack())
    c = env.clients()["prod-client-001"]
    h.check(c["remote_addr"] in h.local_addrs(prod.pid), "the holder changed: %r" % c)
    assert_no_secret(env)


def test_same_group_and_credential_still_replaces(env):
    gw = start_gateway(env, {
        "production": {"auth_password": PROD_USERS, "agent_password": PROD_AGENTS},
    })
    old = env.agent("prod-client-001", group_id="production", name="prod-old",
                    auth_password=PROD_AGENTS, reconnect_max_delay_ms=LONG_CAP_MS)
    new = env.agent("prod-client-001", group_id="production", name="prod-new", wait=False,
                    auth_password=PROD_AGENTS)

    def new_listed():
        c = env.clients().get("prod-client-001")
        return c and c["remote_addr"] in h.local_addrs(new.pid)
    h.wait_until(new_listed, 5 + h.slack(), "the restarted agent to own prod-client-001")
    old.wait_for_log("Gateway replaced this tunnel", 3 + h.slack())
    h.check(gw.find("Client tunnel replaced"), "no replacement logged")
    h.check(not new.find(REFUSED_ID) and not old.find(REFUSED_ID), "ID_IN_USE for a restart")


# ---- reload ---------------------------------------------------------------------------

def test_reload_closes_agents_whose_credential_went(env):
    groups = {
        "production": {"auth_password": PROD_USERS, "agent_password": PROD_AGENTS},
        "staging": {"auth_password": STAGING_USERS},
    }
    gw = start_gateway(env, groups)
    prod = env.agent("prod-1", group_id="production", auth_password=PROD_AGENTS)
    staging = env.agent("staging-1", group_id="staging")
    free = env.agent("free-1", group_id="free")
    dflt = env.agent("default-1")
    addrs = {k: env.clients()[k]["remote_addr"] for k in ("prod-1", "staging-1", "free-1",
                                                          "default-1")}

    def revoked(since):
        return {l.get("client_id"): l for l in gw.find(REVOKED, since)}

    def still(ids):
        c = env.clients()
        for i in ids:
            h.check(i in c and c[i]["remote_addr"] == addrs[i],
                    "%s should keep its tunnel: %r" % (i, c.get(i)))

    # an unrelated group: nobody is touched
    groups["other"] = {"auth_password": "itest-Other-Users", "agent_password": "itest-Other-A"}
    mark = reload(env, gw, groups)
    time.sleep(h.PING_INTERVAL * 2)
    h.check(not revoked(mark), "closed on an unrelated change: %r" % revoked(mark))
    still(addrs)

    # production's agent password changes: its agent is closed, no one else
    groups["production"]["agent_password"] = PROD_AGENTS_NEW
    mark = reload(env, gw, groups)
    line = revoked(mark).get("prod-1")
    h.check(line is not None and line.level == "WARN", "no WARN for prod-1: %r" % revoked(mark))
    h.check(line.get("group_id") == "production" and line.get("remote_addr") == addrs["prod-1"],
            "the WARN should name the group and the address: %r" % line)
    prod.wait_for_log(REJECTED_CREDS, 3 + h.slack())
    env.wait_gone("prod-1", 3 + h.slack())
    h.check(set(revoked(mark)) == {"prod-1"}, "closed: %r" % revoked(mark))
    still(["staging-1", "free-1", "default-1"])
    # it keeps retrying with the old password and is refused each time
    n = len(prod.find(REJECTED_CREDS))
    prod.wait_for_log(REJECTED_CREDS, 3 + h.slack(), count=n + 1)
    h.check("prod-1" not in env.clients(), "the old password joined after the reload")
    prod.stop()
    prod2 = env.agent("prod-2", group_id="production", auth_password=PROD_AGENTS_NEW)

    # staging gets its own agent password: its shared-credential agent goes
    groups["staging"]["agent_password"] = STAGING_AGENTS
    mark = reload(env, gw, groups)
    h.check("staging-1" in revoked(mark), "staging-1 not closed: %r" % revoked(mark))
    staging.wait_for_log(REJECTED_CREDS, 3 + h.slack())
    env.wait_gone("staging-1", 3 + h.slack())
    still(["free-1", "default-1"])

    # production's agent password is removed: its own-credential agent goes
    del groups["production"]["agent_password"]
    mark = reload(env, gw, groups)
    h.check(set(revoked(mark)) == {"prod-2"}, "closed: %r" % revoked(mark))
    prod2.wait_for_log(REJECTED_CREDS, 3 + h.slack())
    env.wait_gone("prod-2", 3 + h.slack())
    still(["free-1", "default-1"])

    # require_group_section: agents of groups without a section go
    mark = reload(env, gw, groups, require_group_section="true")
    h.check(set(revoked(mark)) == {"free-1", "default-1"}, "closed: %r" % revoked(mark))
    env.wait_gone("free-1", 3 + h.slack())
    env.wait_gone("default-1", 3 + h.slack())
    for a in (free, dflt):
        a.wait_for_log(REJECTED_CREDS, 3 + h.slack())
    assert_no_secret(env)


def test_reload_shared_password_change_closes_shared_agents(env):
    # no new keys: the shared credential changes on SIGHUP
    gw = start_gateway(env, {})
    a = env.agent("shared-1", group_id="g")
    mark = gw.mark()
    path = env.gateway_config("gateway", auth_password=SHARED_NEW)
    h.check(os.path.exists(path), "config not written")
    gw.send_signal(signal.SIGHUP)
    gw.wait_for_log(RELOADED, 5 + h.slack(), since=mark)
    a.wait_for_log(REJECTED_CREDS, 3 + h.slack())
    env.wait_gone("shared-1", 3 + h.slack())
    line = gw.find(REVOKED, mark)
    h.check(line and line[0].get("client_id") == "shared-1" and line[0].level == "WARN",
            "no WARN for the closed agent: %r" % line)
    assert_no_secret(env)


# ---- mutual TLS: certificates bound to a group and client id -------------------------------

def agent_cert(env, name, *pairs):
    """An agent certificate from the test CA, bound to GROUP/CLIENT pairs."""
    r = subprocess.run(["bash", h.GEN_CERTS, "--agent", env.certs, name] + list(pairs),
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, "gen-certs.sh --agent %s failed: %s" % (name, r.stderr))
    return {"tls_cert": os.path.join(env.certs, name + ".crt"),
            "tls_key": os.path.join(env.certs, name + ".key")}


def test_certificate_binding(env):
    # no [group.NAME]: only the certificates differ (fails on 1a86f75 by behaviour)
    gw = start_gateway(env, {}, client_ca=os.path.join(env.certs, "ca.crt"))
    stg = agent_cert(env, "bind-stg-%d" % os.getpid(), "staging/stg-1", "/edge-1")
    # bound to (staging, stg-1) and (default group, edge-1): joins as either
    env.agent("stg-1", group_id="staging", **stg)
    env.agent("edge-1", name="edge-agent", **stg)
    # ... and as nothing else: another id, or its id in another group
    other_id = env.agent("stg-2", group_id="staging", wait=False, **stg)
    expect_refused_auth(env, gw, other_id, "stg-2", "bound to other groups or client ids")
    other_group = env.agent("edge-1x", group_id="free", wait=False, **stg)
    expect_refused_auth(env, gw, other_group, "edge-1x", "bound to other groups or client ids")

    # an unbound certificate (same CA, same shared credential) does not take a bound id
    prod = agent_cert(env, "bind-prod-%d" % os.getpid(), "production/prod-client-001")
    holder = env.agent("prod-client-001", group_id="production", name="bound-holder",
                       replicas=2, **prod)
    free = agent_cert(env, "unbound-%d" % os.getpid())
    env.agent("free-1", group_id="free", **free)
    taker = env.agent("prod-client-001", group_id="production", name="unbound-taker",
                      wait=False, reconnect_max_delay_ms=LONG_CAP_MS, **free)
    check_takeover_refused(env, gw, holder, taker, "prod-client-001")
    c = env.clients()
    h.check(sorted(c) == ["edge-1", "free-1", "prod-client-001", "stg-1"], "clients: %r" % c)
    h.check(c["edge-1"]["group_id"] == "" and c["stg-1"]["group_id"] == "staging",
            "groups: %r" % c)
    assert_no_secret(env)


def der_tlv(tag, body):
    n = len(body)
    length = bytes([n]) if n < 128 else bytes([0x81, n]) if n < 256 else bytes([0x82, n >> 8, n & 255])
    return bytes([tag]) + length + body


def agent_cert_with_uri(env, name, uri):
    """An agent certificate from the test CA whose one URI SAN is the raw
    bytes uri (openssl's text syntax cannot hold a NUL: the SAN is given
    as DER, a GeneralNames SEQUENCE of one [6] IA5String)."""
    der = der_tlv(0x30, der_tlv(0x86, uri))
    d = env.certs
    key, csr, ext, crt = (os.path.join(d, name + s) for s in (".key", ".csr", ".ext", ".crt"))
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
                "subjectAltName=DER:%s\n" % der.hex())
    for cmd in (["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
                ["openssl", "req", "-new", "-key", key, "-subj", "/CN=" + name, "-out", csr],
                ["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.crt"),
                 "-CAkey", os.path.join(d, "ca.key"), "-CAcreateserial", "-days", "2",
                 "-sha256", "-extfile", ext, "-out", crt]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        h.check(r.returncode == 0, "%s failed: %s" % (" ".join(cmd[:2]), r.stderr))
    return {"tls_cert": crt, "tls_key": key}


def expect_limited(gw, agent, client_id, reason_part):
    """The agent is refused with ERROR LIMIT (it says so and retries) and
    the gateway's WARN names the reason."""
    agent.wait_for_log("Gateway reported an error", 5 + h.slack(2))
    errs = agent.find("Gateway reported an error")
    h.check(all(e.get("code", "").upper() == "LIMIT" for e in errs),
            "%s should be refused with code=LIMIT: %r" % (client_id, errs))
    rej = gw_rejections(gw, client_id)
    h.check(rej and reason_part in rej[0].get("reason", ""),
            "gateway reason for %s should mention %r: %r" % (client_id, reason_part, rej))


def test_tunnels_per_tenant_bounded(env):
    """[gateway] max_tunnels_per_group = 2. Group production, with its own
    agent credential, is one tenant; the groups the shared credential
    admits are another, all together (else its holder could take every
    descriptor through many group names). prod-1 (two replicas) fills
    production: prod-2 gets ERROR LIMIT. Shared agents of groups x and y
    fill the shared credential's part: z-1 of a new group z gets ERROR
    LIMIT too, while production's agent is untouched; once prod-1 is gone
    its restart gets in again."""
    gw = start_gateway(env, {
        "production": {"auth_password": PROD_USERS, "agent_password": PROD_AGENTS},
    }, max_tunnels_per_group=2)
    prod = env.agent("prod-1", group_id="production", replicas=2, auth_password=PROD_AGENTS)
    extra = env.agent("prod-2", group_id="production", wait=False, auth_password=PROD_AGENTS)
    expect_limited(gw, extra, "prod-2", "max_tunnels_per_group reached")
    env.agent("x-1", group_id="x")
    env.agent("y-1", group_id="y")
    z = env.agent("z-1", group_id="z", wait=False)
    expect_limited(gw, z, "z-1", "groups of the shared credential")
    c = env.clients()
    h.check(sorted(c) == ["prod-1", "x-1", "y-1"] and c["prod-1"]["tunnels"] == 2,
            "clients: %r" % c)
    h.check(not prod.find("Disconnected from gateway"), "prod-1 was disturbed")
    extra.stop()
    z.stop()
    prod.kill9()
    env.wait_gone("prod-1", 5 + h.slack(2))
    again = env.agent("prod-1", group_id="production", replicas=2, name="prod-1-again",
                      wait=False, auth_password=PROD_AGENTS)
    env.wait_listed("prod-1", tunnels=2, timeout=10 + h.slack(2), daemon=again)
    h.check(sorted(env.clients()) == ["prod-1", "x-1", "y-1"], "after the restart: %r"
            % env.clients())


def test_certificate_binding_with_nul_refused(env):
    """One URI SAN "anyproxy://agent/staging/stg-1 NUL anyproxy://agent/
    production/prod-1" (what a CA checking only the tenant's prefix would
    sign) is not two bindings: the certificate is refused at the handshake,
    as production/prod-1 and as staging/stg-1, and the gateway's log says
    why; a bound agent of production keeps its id (before the fix the NUL
    certificate was admitted as production/prod-1 and replaced it)."""
    gw = start_gateway(env, {}, client_ca=os.path.join(env.certs, "ca.crt"))
    prod = agent_cert(env, "nul-prod-%d" % os.getpid(), "production/prod-1")
    holder = env.agent("prod-1", group_id="production", name="nul-holder", **prod)
    evil = agent_cert_with_uri(env, "nul-evil-%d" % os.getpid(),
                               b"anyproxy://agent/staging/stg-1\x00"
                               b"anyproxy://agent/production/prod-1")
    mark = gw.mark()
    for client_id, group in (("prod-1", "production"), ("stg-1", "staging")):
        since = gw.mark()
        a = env.agent(client_id, group_id=group, name="nul-" + group, wait=False,
                      reconnect_max_delay_ms=LONG_CAP_MS, **evil)
        h.wait_until(lambda: [l for l in gw.find("Tunnel closed before authentication", since)
                              if "URI with a NUL byte" in l.get("reason", "")],
                     5 + h.slack(2), "the gateway to refuse the certificate as %s" % group)
        a.stop()
    c = env.clients()
    h.check(sorted(c) == ["prod-1"] and c["prod-1"]["group_id"] == "production",
            "clients: %r" % c)
    h.check(not gw.find("Client connected", mark), "the NUL certificate was admitted")
    h.check(not holder.find("Gateway replaced this tunnel"), "the holder was replaced")
    h.check(holder.alive(), "the holder exited")


def test_certificate_binding_adds_to_group_password(env):
    gw = start_gateway(env, {
        "production": {"auth_password": PROD_USERS, "agent_password": PROD_AGENTS},
    }, client_ca=os.path.join(env.certs, "ca.crt"))
    prod = agent_cert(env, "bind-prod2-%d" % os.getpid(), "production/prod-1")
    shared = env.agent("prod-1", group_id="production", name="bound-shared", wait=False,
                       **prod)
    expect_refused_auth(env, gw, shared, "prod-1", "shared [gateway] credential")
    shared.stop()
    env.agent("prod-1", group_id="production", auth_password=PROD_AGENTS, **prod)
    assert_no_secret(env)


if __name__ == "__main__":
    h.run([
        test_group_agent_password,
        test_require_group_section,
        test_takeover_from_default_group_refused,
        test_takeover_with_other_credential_refused,
        test_same_group_and_credential_still_replaces,
        test_reload_closes_agents_whose_credential_went,
        test_reload_shared_password_change_closes_shared_agents,
        test_certificate_binding,
        test_certificate_binding_adds_to_group_password,
        test_certificate_binding_with_nul_refused,
        test_tunnels_per_tenant_bounded,
    ])
