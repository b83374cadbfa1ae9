#!/usr/bin/env python3
"""The example deployments in configs/examples/ (issue 10, item 5).

Every file there passes --check-config of the program its name says
(gateway.ini: anyproxy-gateway, client-*.ini: anyproxy-client), run in a
folder that holds certs/ as the examples expect; every key is commented;
the spec's deployments are all there with the spec's ids, groups and
replica counts; each agent's credential is one its gateway admits to its
group. A broken copy of an example fails the same check. Then each
deployment runs on loopback, as shipped except for the addresses (ports,
control socket and the name the agents check come from the environment):
every agent joins its group, and a request of each group is carried by an
agent of that group.
"""
import configparser
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

EXAMPLES = os.path.join(h.CONFIGS, "examples")
DEPLOYMENTS = ("multi-environment", "geographic", "load-balancing", "multi-tenant")
# the spec's "Deployment Scenarios": client_id -> (group_id, replicas or None)
SPEC_AGENTS = {
    "multi-environment": {"prod-client-001": ("production", 3),
                          "test-client-001": ("testing", 2),
                          "dev-client-001": ("development", 1)},
    "geographic": {"us-east-001": ("us-east", None), "eu-west-001": ("eu-west", None),
                   "ap-001": ("asia-pacific", None)},
}


def example_files():
    files = sorted(glob.glob(os.path.join(EXAMPLES, "*", "*.ini")))
    h.check(files, "no example files in %s" % EXAMPLES)
    return files


def program_for(path):
    """The program a file is for, by its name; its sections must agree."""
    name = os.path.basename(path)
    if name == "gateway.ini":
        program = "gateway"
    elif name.startswith("client-"):
        program = "client"
    else:
        h.fail("%s: an example is gateway.ini or client-*.ini" % path)
    sections = load(path).sections()
    h.check(("gateway" in sections) == (program == "gateway") and
            ("client" in sections) == (program == "client"),
            "%s: sections %r do not match its name" % (path, sections))
    return program


def load(path):
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"),
                                   inline_comment_prefixes=None, strict=True)
    cp.read(path)
    return cp


def check_config(env, program, path):
    binary = h.gateway_bin() if program == "gateway" else h.client_bin()
    return subprocess.run([binary, "-c", path, "--check-config"], capture_output=True,
                          text=True, timeout=30, cwd=env.dir, env=h._daemon_env(None))


def with_certs(env):
    """env.dir holds certs/ (ca.crt, server.crt, server.key) like the
    examples' folder."""
    dst = os.path.join(env.dir, "certs")
    if not os.path.isdir(dst):
        shutil.copytree(env.certs, dst)


def rel(path):
    return os.path.relpath(path, h.REPO)


# ---- the files -------------------------------------------------------------------------

def test_every_example_passes_check_config(env):
    with_certs(env)
    for path in example_files():
        program = program_for(path)
        r = check_config(env, program, path)
        h.check(r.returncode == 0 and "valid" in r.stdout,
                "%s is not valid for anyproxy-%s (rc %d): %s"
                % (rel(path), program, r.returncode, r.stderr))
        lines = open(path).read().splitlines()
        for i, line in enumerate(lines):
            if line.strip() and not line.lstrip().startswith((";", "#", "[")):
                h.check(i > 0 and lines[i - 1].lstrip().startswith((";", "#")),
                        "%s:%d: %r has no comment above it" % (rel(path), i + 1, line))


def test_a_broken_example_fails_the_check(env):
    """The check can fail: a copy of each kind of example with one mistake
    is refused, naming the line."""
    with_certs(env)
    gateway = os.path.join(EXAMPLES, "multi-tenant", "gateway.ini")
    client = os.path.join(EXAMPLES, "multi-tenant", "client-acme.ini")
    cases = [
        (gateway, "agent_password = acme-agents-secret", "agent_password =", "agent_password"),
        (gateway, "require_group_section = true", "require_group_section = maybe",
         "require_group_section"),
        (client, "group_id = acme", "group_id = acme/corp", "group_id"),
        (client, "replicas = 2", "replica = 2", "replica"),
    ]
    for i, (src, old, new, what) in enumerate(cases):
        text = open(src).read()
        h.check(old in text, "%s no longer has %r: update this test" % (rel(src), old))
        path = os.path.join(env.dir, "broken-%d-%s" % (i, os.path.basename(src)))
        with open(path, "w") as f:
            f.write(text.replace(old, new))
        program = "gateway" if os.path.basename(src) == "gateway.ini" else "client"
        r = check_config(env, program, path)
        h.check(r.returncode == 2 and what in r.stderr,
                "%r instead of %r: rc %d, stderr %r" % (new, old, r.returncode, r.stderr))


def deployment(name):
    folder = os.path.join(EXAMPLES, name)
    gateway = load(os.path.join(folder, "gateway.ini"))
    clients = {}
    for path in sorted(glob.glob(os.path.join(folder, "client-*.ini"))):
        c = load(path)["client"]
        clients[c["client_id"]] = (path, c)
    return folder, gateway, clients


def test_the_spec_deployments_are_all_there(env):
    for name in DEPLOYMENTS:
        folder, gateway, clients = deployment(name)
        h.check(clients, "configs/examples/%s has no client-*.ini" % name)
        gw_port = gateway["gateway"]["listen_addr"].rsplit(":", 1)[1]
        for cid, (path, c) in clients.items():
            h.check(c["gateway_addr"].rsplit(":", 1)[1] == gw_port,
                    "%s: gateway_addr %s is not the gateway's port %s"
                    % (rel(path), c["gateway_addr"], gw_port))
            # the credential its gateway admits to its group
            group = c.get("group_id", "")
            section = "group." + group
            if gateway.has_section(section) and "agent_password" in gateway[section]:
                want = (gateway[section].get("agent_username",
                                             gateway["gateway"]["auth_username"]),
                        gateway[section]["agent_password"])
            else:
                h.check(gateway["gateway"].get("require_group_section", "false") != "true",
                        "%s: group %r has no section but the gateway requires one"
                        % (rel(path), group))
                want = (gateway["gateway"]["auth_username"], gateway["gateway"]["auth_password"])
            h.check((c["auth_username"], c["auth_password"]) == want,
                    "%s: its credential is not the one its gateway admits to group %r"
                    % (rel(path), group))
        for cid, (group, replicas) in SPEC_AGENTS.get(name, {}).items():
            h.check(cid in clients, "configs/examples/%s: no agent %s (the spec's)" % (name, cid))
            c = clients[cid][1]
            h.check(c.get("group_id") == group, "%s: group_id %r, the spec says %r"
                    % (cid, c.get("group_id"), group))
            if replicas:
                h.check(int(c.get("replicas", "1")) == replicas,
                        "%s: replicas %r, the spec says %d" % (cid, c.get("replicas"), replicas))
    _, lb_gateway, lb = deployment("load-balancing")
    groups = [c.get("group_id", "") for _, c in lb.values()]
    h.check(any(groups.count(g) >= 2 for g in groups if g),
            "load-balancing: no group with two agents or more: %r" % groups)
    _, mt_gateway, mt = deployment("multi-tenant")
    tenants = [s for s in mt_gateway.sections() if s.startswith("group.")]
    h.check(len(tenants) >= 2 and all("agent_password" in mt_gateway[s] for s in tenants),
            "multi-tenant: at least two [group.NAME] sections with agent_password: %r"
            % tenants)


# ---- the deployments, running ----------------------------------------------------------

def run_deployment(env, name):
    """Start the deployment as shipped on loopback; returns (gw, clients)."""
    with_certs(env)
    folder, gateway, clients = deployment(name)
    env.control = os.path.join(env.dir, "gw.sock")
    gw_env = {"GATEWAY_LISTEN_ADDR": "127.0.0.1:%d" % env.port,
              "PROXY_HTTP_LISTEN_ADDR": "127.0.0.1:%d" % h.free_port(),
              "PROXY_SOCKS5_LISTEN_ADDR": "127.0.0.1:%d" % h.free_port(),
              "CONTROL_SOCKET": env.control}
    gw = env.start("gateway", "gateway", os.path.join(folder, "gateway.ini"), gw_env)
    gw.http_port = int(gw_env["PROXY_HTTP_LISTEN_ADDR"].rsplit(":", 1)[1])
    env.gw = gw
    env.wait_gateway_ready(gw)
    daemons = {}
    for cid, (path, _c) in clients.items():
        daemons[cid] = env.start("client", cid, path, {
            "CLIENT_GATEWAY_ADDR": "127.0.0.1:%d" % env.port,
            "CLIENT_GATEWAY_SERVER_NAME": "localhost"})
    for cid, (_path, c) in clients.items():
        env.wait_listed(cid, tunnels=int(c.get("replicas", "1")), daemon=daemons[cid])
    listed = {cid: c["group_id"] for cid, c in env.clients().items()}
    for cid, (_path, c) in clients.items():
        h.check(listed.get(cid) == c.get("group_id", ""),
                "%s: apctl lists group %r, its file says %r"
                % (cid, listed.get(cid), c.get("group_id", "")))
    return gw, gateway, clients


def check_carried(env, gw, gateway, clients, user, password, group):
    """A request of user/password through the HTTP proxy is carried by an
    agent of group: 200 where the agent may reach the loopback target,
    else the agent's own 403, whose failure line names it."""
    t = h.HttpTarget("127.0.0.1", name="T")
    env.servers.append(t)
    mark = gw.mark()
    r = h.curl(["-x", "http://%s:%s@127.0.0.1:%d" % (user, password, gw.http_port),
                "-o", "/dev/null", "-w", "%{http_code}", t.url("/info")], timeout=20)
    code = int(r.stdout or 0)
    members = [cid for cid, (_p, c) in clients.items() if c.get("group_id", "") == group]
    sel = [l for l in gw.find("Selected client from group", mark)
           if l.get("group") == group and l.get("client_id") in members]
    h.check(sel, "%s: no 'Selected client from group group=%s' with one of %r (HTTP %d):\n%s"
            % (user, group, members, code, gw.tail(20)))
    if code == 403:
        fails = gw.find("HTTP request failed", mark)
        h.check(fails and fails[-1].get("client_id") in members and
                fails[-1].get("reason") == "NOT_ALLOWED",
                "%s: 403 should be the agent's host rules: %r" % (user, fails))
    else:
        h.check(code == 200 and t.requests, "%s: HTTP %d %r" % (user, code, r.stderr))


def test_multi_environment_runs(env):
    gw, gateway, clients = run_deployment(env, "multi-environment")
    password = gateway["proxy.http"]["auth_password"]
    for group in ("production", "testing", "development"):
        check_carried(env, gw, gateway, clients, "user." + group, password, group)


def test_geographic_runs(env):
    gw, gateway, clients = run_deployment(env, "geographic")
    password = gateway["proxy.http"]["auth_password"]
    for group in ("us-east", "eu-west", "asia-pacific"):
        check_carried(env, gw, gateway, clients, "user." + group, password, group)


def test_load_balancing_runs(env):
    gw, gateway, clients = run_deployment(env, "load-balancing")
    password = gateway["proxy.http"]["auth_password"]
    before = h.stream_totals(env)
    for _ in range(4):
        check_carried(env, gw, gateway, clients, "user.production", password, "production")
    after = h.stream_totals(env)
    members = [cid for cid, (_p, c) in clients.items() if c.get("group_id") == "production"]
    moved = {cid for cid in members if after.get(cid, 0) > before.get(cid, 0)}
    h.check(moved == set(members), "4 requests should use every agent of the group %r: %r"
            % (members, moved))
    check_carried(env, gw, gateway, clients, "user", password, "")


def test_multi_tenant_runs(env):
    gw, gateway, clients = run_deployment(env, "multi-tenant")
    listener_user = gateway["proxy.http"]["auth_username"]
    for section in [s for s in gateway.sections() if s.startswith("group.")]:
        group = section[len("group."):]
        g = gateway[section]
        user = "%s.%s" % (g.get("auth_username", listener_user), group)
        check_carried(env, gw, gateway, clients, user, g["auth_password"], group)
        # the listener's password does not open a tenant's group
        r = h.curl(["-x", "http://%s:%s@127.0.0.1:%d" % (user, gateway["proxy.http"][
            "auth_password"], gw.http_port), "-o", "/dev/null", "-w", "%{http_code}",
            "http://127.0.0.1:9/"], timeout=20)
        h.check(r.stdout == b"407", "%s with the listener's password: HTTP %r"
                % (user, r.stdout))


if __name__ == "__main__":
    h.run([
        test_every_example_passes_check_config,
        test_a_broken_example_fails_the_check,
        test_the_spec_deployments_are_all_there,
        test_multi_environment_runs,
        test_geographic_runs,
        test_load_balancing_runs,
        test_multi_tenant_runs,
    ])
