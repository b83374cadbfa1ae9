#!/usr/bin/env python3
"""Several gateways per agent ([client] gateway_addr lists them): agents of
two groups keep their replicas to both gateways, each tunnel on its own;
Debian's HAProxy in TCP mode with health checks balances users over the two
gateways' proxy ports. Every request through HAProxy succeeds and both
gateways carry some; after kill -9 of one gateway and HAProxy's health
check, every request succeeds through the other; restarted on the same
ports, the agents return to it and requests reach it again. A GOAWAY from
one gateway touches only that gateway's tunnels. Each agent's metrics
(anyproxy_agent_tunnels{gateway,state}) show one label set per gateway,
and a killed gateway's tunnels not up while the other's stay up.

Gateways share nothing (docs/scaling.md): here each has its own tunnel
port, proxy ports and control socket on 127.0.0.1.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REPLICAS = 2
# HAProxy health checks: a connect every CHECK_INTER_MS; FALL failures mark
# a server down, RISE successes up again.
CHECK_INTER_MS = 200
CHECK_FALL = 2
CHECK_RISE = 1
REQUESTS = 8  # per group and protocol in each batch
GROUPS = {"p1": ("production", "user.production"), "d1": ("", "user")}


def gateway_pair(env):
    """Two gateways with proxies, each with its own ports and control socket.
    Returns {name: Daemon} with .tunnel_port and .control set."""
    gws = {}
    for name in ("gw-a", "gw-b"):
        port = h.free_port()
        control = os.path.join(env.dir, name + ".sock")
        gw = h.proxy_gateway(env, name, port=port, control=control, wait=False,
                             log_level="info")
        gw.tunnel_port, gw.control = port, control
        gws[name] = gw
    for gw in gws.values():
        ready(env, gw)
    return gws


def ready(env, gw, since=0):
    env.wait_gateway_ready(gw, since=since, socket_path=gw.control)
    for port in (gw.http_port, gw.socks_port):
        h.wait_until(lambda: h._port_open("127.0.0.1", port), 5 + h.slack(),
                     "%s's proxy listener on 127.0.0.1:%d" % (gw.name, port))


def agents(env, gws):
    """One agent per group, each listing both gateways and serving [metrics]
    on .metrics_port; waits until both gateways list it with all its
    tunnels."""
    addrs = ", ".join("127.0.0.1:%d" % gw.tunnel_port for gw in gws.values())
    out = {}
    for cid, (group, _) in GROUPS.items():
        config = env.client_config("agent-" + cid, cid, group or None, REPLICAS,
                                   gateway_addr=addrs, **h.PROXY_CLIENT)
        metrics_port = h.free_port()
        h.add_section(config, "metrics", {"listen_addr": "127.0.0.1:%d" % metrics_port})
        out[cid] = env.agent(cid, replicas=REPLICAS, wait=False, config=config)
        out[cid].metrics_port = metrics_port
    for cid, d in out.items():
        for gw in gws.values():
            env.wait_listed(cid, tunnels=REPLICAS, daemon=d, socket_path=gw.control)
    return out


def tunnel_states(d):
    """{gateway: {state: tunnels}} from the agent's anyproxy_agent_tunnels."""
    out = {}
    for (name, labels), v in h.scrape_metrics(d.metrics_port).items():
        if name == "anyproxy_agent_tunnels":
            lab = dict(labels)
            out.setdefault(lab["gateway"], {})[lab["state"]] = int(v)
    return out


def wait_tunnels_up(d, want, timeout, what):
    """Wait until the agent exports `want` ({gateway: tunnels up}) and every
    gateway's tunnels add up to REPLICAS; returns the last states."""
    last = {}

    def reached():
        last.clear()
        last.update(tunnel_states(d))
        return (set(last) == set(want) and
                all(sum(st.values()) == REPLICAS for st in last.values()) and
                all(last[g].get("up") == n for g, n in want.items()))
    try:
        h.wait_until(reached, timeout, what)
    except h.TestFailure:
        h.fail("%s: %s exports %r, want up %r" % (what, d.name, last, want))
    return last


def totals(env, gw):
    """{client_id: streams_total} on one gateway."""
    return {cid: c["streams_total"] for cid, c in env.clients(gw.control).items()}


# ---- HAProxy ---------------------------------------------------------------------------

class Haproxy:
    """haproxy -db (foreground, a child of the test) in TCP mode with a SOCKS5
    and an HTTP front end, each balancing round-robin over the gateways'
    matching proxy ports with health checks; ended by its PID."""

    def __init__(self, env, gws):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        h.check(os.access(binary, os.X_OK),
                "haproxy is not installed (tools/setup.sh installs Debian's package)")
        self.stats = os.path.join(env.dir, "haproxy.sock")
        self.socks_port, self.http_port = h.free_port(), h.free_port()
        self.names = list(gws)
        lines = [
            "global",
            "    maxconn 2000",
            "    stats socket %s mode 600 level admin" % self.stats,
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    retries 2",
            "    option redispatch",
        ]
        for proto, port, attr in (("socks", self.socks_port, "socks_port"),
                                  ("http", self.http_port, "http_port")):
            lines += ["frontend fe_%s" % proto,
                      "    bind 127.0.0.1:%d" % port,
                      "    default_backend be_%s" % proto,
                      "backend be_%s" % proto,
                      "    balance roundrobin"]
            for name, gw in gws.items():
                lines.append("    server %s 127.0.0.1:%d check inter %dms fall %d rise %d"
                             % (name, getattr(gw, attr), CHECK_INTER_MS, CHECK_FALL,
                                CHECK_RISE))
        self.config = os.path.join(env.dir, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(env.dir, "haproxy.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", self.config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=env.dir)
        env.servers.append(self)  # close() at clean-up
        h.wait_until(lambda: self.proc.poll() is None and os.path.exists(self.stats) and
                     h._port_open("127.0.0.1", self.socks_port) and
                     h._port_open("127.0.0.1", self.http_port), 5 + h.slack(),
                     "haproxy to listen (log: %s)" % self.log_path)

    def states(self):
        """{(backend, server): status} from the stats socket's "show stat"."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.stats)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        rows = data.decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        col = {k: i for i, k in enumerate(header)}
        out = {}
        for row in rows[1:]:
            f = row.split(",")
            if len(f) > col["status"] and f[col["svname"]] in self.names:
                out[(f[col["pxname"]], f[col["svname"]])] = f[col["status"]]
        return out

    def wait_status(self, server, status, timeout):
        """Wait until both backends show server with status ("UP"/"DOWN")."""
        def reached():
            st = self.states()
            return all(st.get((be, server), "").startswith(status)
                       for be in ("be_socks", "be_http"))
        h.wait_until(reached, timeout, "haproxy to mark %s %s" % (server, status),
                     interval=0.05)

    def close(self):
        h.end_child(self.proc)


def request(hap, target, proto, user):
    """One request through HAProxy; returns (ok, detail)."""
    if proto == "socks5":
        args = ["--socks5-hostname", "%s:%s@127.0.0.1:%d" % (user, h.PROXY_PASS, hap.socks_port)]
    else:
        args = ["-x", "http://%s:%s@127.0.0.1:%d" % (user, h.PROXY_PASS, hap.http_port)]
    r = h.curl(args + ["-sS", "--max-time", "15", target.url("/info")], timeout=20)
    if r.returncode != 0:
        return False, "curl rc %d: %r" % (r.returncode, r.stderr[-300:])
    try:
        server = json.loads(r.stdout)["server"]
    except ValueError:
        return False, "not the target's answer: %r" % r.stdout[:200]
    return server == target.name, "answer from %r" % server


def batch(hap, target, what):
    """REQUESTS per group and protocol; every one must succeed."""
    bad = []
    for cid, (_, user) in GROUPS.items():
        for proto in ("socks5", "http"):
            for i in range(REQUESTS):
                ok, detail = request(hap, target, proto, user)
                if not ok:
                    bad.append("%s %s #%d: %s" % (proto, user, i, detail))
    h.check(not bad, "%s: %d of %d requests failed:\n%s"
            % (what, len(bad), 2 * len(GROUPS) * REQUESTS, "\n".join(bad[:10])))


def carried(env, gw, before):
    """Streams each agent carried through gw since `before`."""
    after = totals(env, gw)
    return {cid: after.get(cid, 0) - before.get(cid, 0) for cid in GROUPS}


# ---- cases ---------------------------------------------------------------------------------

def test_agent_tunnels_to_every_gateway(env):
    """Each agent holds its replicas on both gateways, with the same
    client_id; its log names the gateway of every tunnel line."""
    gws = gateway_pair(env)
    ds = agents(env, gws)
    for cid, d in ds.items():
        names = {"127.0.0.1:%d" % gw.tunnel_port for gw in gws.values()}
        dialled = {l.get("gateway") for l in d.find("Dialling gateway")}
        h.check(dialled == names, "%s: 'Dialling gateway' lines name %r, expected %r"
                % (cid, dialled, names))
        for name in names:
            ups = [l for l in d.find("Connected to gateway") if l.get("gateway") == name]
            h.check(sorted(l.get("replica") for l in ups) == [str(r) for r in range(REPLICAS)],
                    "%s: replicas connected to %s: %r" % (cid, name, ups))
            h.check(max(int(l.get("tunnels_up", 0)) for l in ups) == REPLICAS,
                    "%s: tunnels_up never reached %d for %s: %r" % (cid, REPLICAS, name, ups))
    for gw in gws.values():
        c = env.clients(gw.control)
        h.check(c["p1"]["group_id"] == "production" and c["d1"]["group_id"] == "",
                "%s lists %r" % (gw.name, c))
    # the metrics name each gateway in its own label set, all replicas up
    for cid, d in ds.items():
        wait_tunnels_up(d, {"127.0.0.1:%d" % gw.tunnel_port: REPLICAS for gw in gws.values()},
                        2 + h.slack(), "%s's tunnels in its metrics" % cid)


def test_agent_shutdown_drains_every_gateway(env):
    """SIGTERM: the agent drains its tunnels to every gateway (GOAWAY, the
    reason in its log) and exits cleanly; both gateways drop it."""
    gws = gateway_pair(env)
    ds = agents(env, gws)
    d = ds["p1"]
    mark = d.mark()
    d.send_signal(signal.SIGTERM)
    h.check(d.wait_exit(10 + h.slack()) == 0, "the agent did not exit cleanly")
    lines = d.find("Disconnected from gateway", since=mark)
    for gw in gws.values():
        name = "127.0.0.1:%d" % gw.tunnel_port
        mine = [l for l in lines if l.get("gateway") == name]
        h.check(len(mine) == REPLICAS and
                all(l.get("reason") == "agent shutting down" for l in mine),
                "expected %d 'Disconnected from gateway gateway=%s reason=\"agent shutting "
                "down\"' lines: %r" % (REPLICAS, name, mine))
        env.wait_gone("p1", 5 + h.slack(), socket_path=gw.control)
        h.check("d1" in env.clients(gw.control), "%s dropped the other agent" % gw.name)


def test_haproxy_in_front_of_two_gateways(env):
    gws = gateway_pair(env)
    a, b = gws["gw-a"], gws["gw-b"]
    ds = agents(env, gws)
    target = h.HttpTarget(name="origin-mg")
    env.servers.append(target)
    hap = Haproxy(env, gws)
    hap.wait_status("gw-a", "UP", 5 + h.slack())
    hap.wait_status("gw-b", "UP", 5 + h.slack())

    # 1. both up: every request succeeds, both gateways carry some of each group
    before = {gw.name: totals(env, gw) for gw in gws.values()}
    batch(hap, target, "both gateways up")
    for gw in gws.values():
        got = carried(env, gw, before[gw.name])
        h.check(all(n > 0 for n in got.values()),
                "%s carried no stream of some group: %r" % (gw.name, got))
        h.note("%s carried %r" % (gw.name, got))

    # 2. kill -9 gateway A: once HAProxy's health check marks it down, every
    # request succeeds through B; the agents keep their tunnels to B
    marks = {cid: d.mark() for cid, d in ds.items()}
    a.kill9()
    t_kill = time.monotonic()
    hap.wait_status("gw-a", "DOWN", CHECK_FALL * CHECK_INTER_MS / 1000 + 5 + h.slack())
    h.note("haproxy marked gw-a down %.2f s after kill -9" % (time.monotonic() - t_kill))
    for cid, d in ds.items():
        d.wait_for_log("Disconnected from gateway gateway=127.0.0.1:%d" % a.tunnel_port,
                       5 + h.slack(), since=marks[cid], count=REPLICAS)
        h.check(not [l for l in d.find("Disconnected from gateway", since=marks[cid])
                     if l.get("gateway") != "127.0.0.1:%d" % a.tunnel_port],
                "%s lost a tunnel to gw-b when gw-a died" % cid)
    # the agents' metrics: gw-a's tunnels are not up (waiting, reconnecting),
    # gw-b's all are
    name_a, name_b = ("127.0.0.1:%d" % gw.tunnel_port for gw in (a, b))
    for cid, d in ds.items():
        st = wait_tunnels_up(d, {name_a: 0, name_b: REPLICAS}, 2 + h.slack(),
                             "%s's metrics after gw-a died" % cid)
        h.note("%s exports %r" % (cid, st))
    before_b = totals(env, b)
    batch(hap, target, "gw-a killed, marked down")
    got = carried(env, b, before_b)
    h.check(got == {cid: 2 * REQUESTS for cid in GROUPS},
            "gw-b should have carried every request: %r" % got)
    for cid in GROUPS:
        h.check(env.clients(b.control)[cid]["tunnels"] == REPLICAS,
                "%s lost tunnels on gw-b" % cid)

    # 3. restart A on the same ports: the agents return to it (their backoff
    # is capped at reconnect_max_delay_ms) and requests reach it again
    mark = a.mark()
    a.start()
    ready(env, a, since=mark)
    t0 = time.monotonic()
    deadline = h.PROXY_CLIENT["ping_timeout_ms"] / 1000 + 10 + h.slack(2)
    for cid, d in ds.items():
        env.wait_listed(cid, tunnels=REPLICAS, timeout=deadline, daemon=d, socket_path=a.control)
    h.note("agents back on gw-a %.2f s after its restart" % (time.monotonic() - t0))
    for cid, d in ds.items():
        wait_tunnels_up(d, {name_a: REPLICAS, name_b: REPLICAS}, 2 + h.slack(),
                        "%s's metrics after gw-a restarted" % cid)
    hap.wait_status("gw-a", "UP", 5 + h.slack())
    before = {gw.name: totals(env, gw) for gw in gws.values()}
    batch(hap, target, "gw-a restarted")
    got = carried(env, a, before["gw-a"])
    h.check(all(n > 0 for n in got.values()),
            "requests did not reach the restarted gw-a: %r" % got)
    for cid, d in ds.items():
        h.check(d.alive(), "agent %s died" % cid)


def test_goaway_from_one_gateway_touches_only_its_tunnels(env):
    """SIGTERM one gateway: its GOAWAY closes only its tunnels; the agent
    keeps the other gateway's and retries the stopped one."""
    gws = gateway_pair(env)
    a, b = gws["gw-a"], gws["gw-b"]
    ds = agents(env, gws)
    marks = {cid: d.mark() for cid, d in ds.items()}
    b.send_signal(signal.SIGTERM)
    h.check(b.wait_exit(10 + h.slack()) == 0, "gw-b did not stop cleanly")
    name_b = "127.0.0.1:%d" % b.tunnel_port
    for cid, d in ds.items():
        d.wait_for_log("Gateway is going away gateway=%s" % name_b, 5 + h.slack(),
                       since=marks[cid])
        d.wait_for_log("Reconnecting to gateway gateway=%s" % name_b, 5 + h.slack(),
                       since=marks[cid])
        others = [l for l in d.find(re.compile("Disconnected from gateway|Gateway is going away"),
                                    since=marks[cid]) if l.get("gateway") != name_b]
        h.check(not others, "%s: lines about gw-a after gw-b's GOAWAY: %r" % (cid, others))
        h.check(env.clients(a.control)[cid]["tunnels"] == REPLICAS,
                "%s lost tunnels on gw-a" % cid)


if __name__ == "__main__":
    h.run([test_agent_tunnels_to_every_gateway, test_agent_shutdown_drains_every_gateway,
           test_haproxy_in_front_of_two_gateways,
           test_goaway_from_one_gateway_touches_only_its_tunnels])
