#!/usr/bin/env python3
"""Prometheus metrics on the gateway and the agent, and `apctl stats`
(issue 10, docs/operations.md "Metrics").

One gateway (SOCKS5 and HTTP proxies, [metrics] on a free port) and one
agent of group "mg" (its own [metrics] port, a forbidden_hosts rule for
127.0.0.3, connect_timeout_ms 1 s) serve every case; one case adds two
default-group agents for the fallback and retry counters and stops them
again. Each case scrapes both endpoints before and after a few requests
and asserts that the counters moved by exactly what the requests caused:
counters are compared, never times. Every open result the agent can give
is provoked on loopback: refused (a closed port), dns (a name glibc
refuses without asking a server), timeout (a listener whose accept queue
is full), unreachable (127.255.255.255), denied (forbidden_hosts).

Every body is checked by a strict parser of the text exposition (HELP and
TYPE before the samples, metric and label name grammar, label escaping,
histograms with monotonic cumulative buckets ending at +Inf, then _sum and
_count) and, when Debian's prometheus package is installed, by
`promtool check metrics`.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GROUP = "mg"
AGENT = "m-agent"
FORBIDDEN = "127.0.0.3"
UP_BYTES = 1000     # what the echo target reads ...
DOWN_BYTES = 3000   # ... and what it answers
METRICS_REQUEST_MAX_BYTES = 4096  # metrics.h
METRICS_MAX_CONNECTIONS = 8       # metrics.h
HANDSHAKE_TIMEOUT_MS = 10000  # the gateway's: the default, not the harness's fast 1500
CONNECT_TIMEOUT_MS = 1000     # the agent's: a silent target times out fast
UNRESOLVABLE = "-nonexistent.invalid"  # glibc refuses it before asking any DNS server
UNREACHABLE = "127.255.255.255"        # connect() fails with ENETUNREACH, nothing sent
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(ROOT, "configs", "grafana", "anyproxy.json")

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")


# ---- the exposition, parsed strictly --------------------------------------------------

def parse_labels(text, where):
    """'a="x",b="y\\"z"' -> {a: x, b: y"z}; refuses anything else."""
    labels = {}
    i = 0
    while i < len(text):
        m = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"").match(text, i)
        h.check(m is not None, "%s: bad label at %r" % (where, text[i:]))
        name = m.group(1)
        i = m.end()
        value = ""
        while True:
            h.check(i < len(text), "%s: unterminated label value" % where)
            c = text[i]
            if c == "\\":
                h.check(i + 1 < len(text) and text[i + 1] in "\\\"n",
                        "%s: bad escape in label value" % where)
                value += {"\\": "\\", '"': '"', "n": "\n"}[text[i + 1]]
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                h.check(c != "\n", "%s: raw newline in label value" % where)
                value += c
                i += 1
        h.check(name not in labels, "%s: label %s twice" % (where, name))
        labels[name] = value
        if i < len(text):
            h.check(text[i] == ",", "%s: expected ',' at %r" % (where, text[i:]))
            i += 1
    return labels


def parse_exposition(body):
    """Returns {family: {"type", "help", "samples": {(name, labels tuple): value}}}."""
    h.check(body.endswith("\n"), "the body must end with a newline")
    families = {}
    current = None
    for n, line in enumerate(body.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line)
        h.check(line != "", "%s: empty line" % where)
        if line.startswith("# HELP "):
            name, _, _help = line[7:].partition(" ")
            h.check(NAME_RE.match(name), "%s: bad metric name" % where)
            h.check(name not in families, "%s: family %s twice" % (where, name))
            families[name] = {"help": _help, "type": None, "samples": {}}
            current = name
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            h.check(name == current and families[name]["type"] is None,
                    "%s: TYPE must follow its HELP" % where)
            h.check(typ in ("counter", "gauge", "histogram"), "%s: type %r" % (where, typ))
            families[name]["type"] = typ
            continue
        h.check(not line.startswith("#"), "%s: unexpected comment" % where)
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        h.check(m is not None, "%s: not a sample" % where)
        name, labels = m.group(1), parse_labels(m.group(3) or "", where)
        for k in labels:
            h.check(LABEL_RE.match(k) and not k.startswith("__"), "%s: label name" % where)
        fam = families.get(current)
        h.check(fam is not None and fam["type"] is not None, "%s: sample before TYPE" % where)
        if fam["type"] == "histogram":
            h.check(name in (current + "_bucket", current + "_sum", current + "_count"),
                    "%s: not a series of histogram %s" % (where, current))
        else:
            h.check(name == current, "%s: sample of another family than %s" % (where, current))
            h.check("le" not in labels, "%s: le outside a histogram" % where)
        value = float(m.group(4))
        key = (name, tuple(sorted(labels.items())))
        h.check(key not in fam["samples"], "%s: series twice" % where)
        fam["samples"][key] = value
        if fam["type"] == "counter":
            h.check(value >= 0 and name.endswith("_total"), "%s: counter" % where)
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    series = {}
    for (sname, labels), value in samples.items():
        rest = tuple(kv for kv in labels if kv[0] != "le")
        entry = series.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            le = dict(labels).get("le")
            h.check(le is not None, "%s: bucket without le" % name)
            entry["buckets"].append((float(le), value))
        elif sname.endswith("_sum"):
            entry["sum"] = value
        else:
            entry["count"] = value
    for rest, e in series.items():
        b = sorted(e["buckets"])
        h.check(b and b[-1][0] == float("inf"), "%s%r: no +Inf bucket" % (name, rest))
        h.check(all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)),
                "%s%r: buckets not monotonic: %r" % (name, rest, b))
        h.check(e["count"] is not None and e["sum"] is not None,
                "%s%r: _sum and _count needed" % (name, rest))
        h.check(e["count"] == b[-1][1], "%s%r: _count != +Inf bucket" % (name, rest))


def promtool(body, what):
    tool = shutil.which("promtool")
    if not tool:
        return False
    r = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True, text=True,
                       timeout=30)
    # promtool exits non-zero for errors; lint remarks come on the output too
    h.check(r.returncode == 0, "promtool check metrics on the %s: %s%s" % (what, r.stdout,
                                                                             r.stderr))
    return True


def exchange(port, request):
    """Send a raw request to the metrics port; returns the whole answer,
    which must end in a clean close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(request)
        how, _, data = h.read_until_closed(s, 10 + h.slack())
    finally:
        s.close()
    h.check(how == "eof", "the endpoint must close cleanly, not %s" % how)
    return data


def http_get(port, request):
    """Send a raw request to the metrics port; returns (status, headers, body)."""
    head, _, body = exchange(port, request).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    h.check(int(headers.get("content-length", -1)) == len(body),
            "Content-Length %r for a body of %d bytes" % (headers.get("content-length"),
                                                          len(body)))
    return status, headers, body


def scrape(port, what):
    status, headers, body = http_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    h.check(status == 200, "%s scrape: status %d" % (what, status))
    h.check(headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
            "%s scrape: content type %r" % (what, headers.get("content-type")))
    text = body.decode("utf-8")
    return parse_exposition(text), text


def value(fams, family, series=None, **labels):
    """The value of one series (0 when absent)."""
    fam = fams.get(family)
    h.check(fam is not None, "no family %s" % family)
    want = tuple(sorted(labels.items()))
    for (name, lab), v in fam["samples"].items():
        if name == (series or family) and tuple(kv for kv in lab) == want:
            return v
    return 0


def total(fams, family, series=None, **labels):
    """Sum of the series of family whose labels include `labels`."""
    fam = fams.get(family)
    h.check(fam is not None, "no family %s" % family)
    n = 0
    for (name, lab), v in fam["samples"].items():
        d = dict(lab)
        if name == (series or family) and "le" not in d and \
                all(d.get(k) == x for k, x in labels.items()):
            n += v
    return n


# ---- the daemons ---------------------------------------------------------------------



def setup(env):
    env.gw_metrics = h.free_port()
    env.agent_metrics = h.free_port()
    http_port, socks_port = h.free_port(), h.free_port()
    # handshakes held open by test_handshakes_are_exported live until the
    # test closes them, not until a short deadline cuts them
    config = env.gateway_config("gateway", handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS,
                                **h.PROXY_GATEWAY)
    for section, port in (("proxy.http", http_port), ("proxy.socks5", socks_port)):
        h.add_section(config, section, {"listen_addr": "127.0.0.1:%d" % port,
                                      "auth_username": h.PROXY_USER,
                                      "auth_password": h.PROXY_PASS})
    h.add_section(config, "metrics", {"listen_addr": "127.0.0.1:%d" % env.gw_metrics})
    # a TCP port forward into the agent's group, to an echo server
    env.fw_echo = h.RawServer(h.echo_handler)
    env.servers.append(env.fw_echo)
    env.fw_port = h.free_port()
    h.add_section(config, "forward.fw", {"listen_addr": "127.0.0.1:%d" % env.fw_port,
                                       "target": "127.0.0.1:%d" % env.fw_echo.port,
                                       "group": GROUP})
    env.gw = env.start("gateway", "gateway", config)
    env.gw.http_port, env.gw.socks_port = http_port, socks_port
    env.wait_gateway_ready(env.gw)
    for port in (http_port, socks_port, env.gw_metrics):
        h.wait_until(lambda: h._port_open("127.0.0.1", port), 5 + h.slack(),
                     "listener on %d" % port)
    config = env.client_config("agent-m", AGENT, GROUP, forbidden_hosts=FORBIDDEN,
                               connect_timeout_ms=CONNECT_TIMEOUT_MS, **h.PROXY_CLIENT)
    h.add_section(config, "metrics", {"listen_addr": "127.0.0.1:%d" % env.agent_metrics})
    env.agent_d = env.start("client", "agent-m", config)
    env.wait_listed(AGENT, tunnels=1, daemon=env.agent_d)
    h.wait_until(lambda: h._port_open("127.0.0.1", env.agent_metrics), 5 + h.slack(),
                 "the agent's metrics listener")

    def echo(c):
        got = b""
        while len(got) < UP_BYTES:
            b = c.recv(UP_BYTES - len(got))
            if not b:
                return
            got += b
        c.sendall(b"d" * DOWN_BYTES)
    env.echo = h.RawServer(echo, host="127.0.0.2")
    env.servers.append(env.echo)


def settled(env):
    """Wait until no user connection and no stream is left on either side."""
    def idle():
        g, _ = scrape(env.gw_metrics, "gateway")
        a, _ = scrape(env.agent_metrics, "agent")
        return (total(g, "anyproxy_gateway_user_connections") == 0 and
                total(g, "anyproxy_gateway_streams") == 0 and
                value(a, "anyproxy_agent_streams") == 0)
    h.wait_until(idle, 5 + h.slack(), "connections and streams to end")


# ---- cases ---------------------------------------------------------------------------

GATEWAY_FAMILIES = {
    "anyproxy_build_info": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "anyproxy_gateway_user_connections": "gauge",
    "anyproxy_gateway_user_connections_total": "counter",
    "anyproxy_gateway_user_refused_total": "counter",
    "anyproxy_gateway_auth_failures_total": "counter",
    "anyproxy_gateway_opens_total": "counter",
    "anyproxy_gateway_fallbacks_total": "counter",
    "anyproxy_gateway_streams": "gauge",
    "anyproxy_gateway_streams_total": "counter",
    "anyproxy_gateway_bytes_total": "counter",
    "anyproxy_gateway_client_bytes_total": "counter",
    "anyproxy_gateway_client_tunnels": "gauge",
    "anyproxy_gateway_forward_connections": "gauge",
    "anyproxy_gateway_forward_connections_total": "counter",
    "anyproxy_gateway_forward_refused_total": "counter",
    "anyproxy_gateway_datagrams_dropped_total": "counter",
    "anyproxy_gateway_open_retries_total": "counter",
    "anyproxy_gateway_tunnels_suspected_total": "counter",
    "anyproxy_gateway_groups": "gauge",
    "anyproxy_gateway_agents": "gauge",
    "anyproxy_gateway_tunnels": "gauge",
    "anyproxy_gateway_handshakes": "gauge",
    "anyproxy_gateway_handshake_pauses_total": "counter",
    "anyproxy_gateway_handshakes_refused_per_address_total": "counter",
    "anyproxy_gateway_handshakes_stale_closed_total": "counter",
    "anyproxy_gateway_workers": "gauge",
    "anyproxy_gateway_handovers_total": "counter",
    "anyproxy_gateway_worker_streams_total": "counter",
    "anyproxy_gateway_worker_handovers_total": "counter",
    "anyproxy_gateway_handshake_duration_seconds": "histogram",
    "anyproxy_gateway_open_duration_seconds": "histogram",
}
AGENT_FAMILIES = {
    "anyproxy_build_info": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "anyproxy_agent_tunnels": "gauge",
    "anyproxy_agent_gateway_connects_total": "counter",
    "anyproxy_agent_gateway_failures_total": "counter",
    "anyproxy_agent_reconnects_total": "counter",
    "anyproxy_agent_streams": "gauge",
    "anyproxy_agent_streams_total": "counter",
    "anyproxy_agent_worker_streams_total": "counter",
    "anyproxy_agent_opens_total": "counter",
    "anyproxy_agent_host_denials_total": "counter",
    "anyproxy_agent_dns_duration_seconds": "histogram",
}


def test_exposition_is_valid(env):
    g, gtext = scrape(env.gw_metrics, "gateway")
    a, atext = scrape(env.agent_metrics, "agent")
    for fams, want, what in ((g, GATEWAY_FAMILIES, "gateway"), (a, AGENT_FAMILIES, "agent")):
        for name, typ in want.items():
            h.check(name in fams, "%s: no family %s" % (what, name))
            h.check(fams[name]["type"] == typ, "%s: %s is a %s, want %s"
                    % (what, name, fams[name]["type"], typ))
        extra = set(fams) - set(want)
        h.check(not extra, "%s: families the test does not know (document them): %r"
                % (what, sorted(extra)))
    h.check(value(g, "anyproxy_gateway_agents", group=GROUP) == 1, "one agent in mg")
    h.check(value(g, "anyproxy_gateway_tunnels", group=GROUP) == 1, "one tunnel in mg")
    gw_addr = "127.0.0.1:%d" % env.port
    h.check(value(a, "anyproxy_agent_tunnels", gateway=gw_addr, state="up") == 1,
            "the agent's tunnel to %s is up: %r" % (gw_addr, a["anyproxy_agent_tunnels"]))
    h.check(value(a, "anyproxy_agent_gateway_connects_total", gateway=gw_addr) == 1,
            "one tunnel reached HELLO_OK")
    h.check(value(g, "anyproxy_gateway_client_tunnels", group=GROUP, client=AGENT,
                  state="ok") == 1, "the agent's one tunnel is not suspect")
    info = [dict(l) for (n, l) in g["anyproxy_build_info"]["samples"]]
    h.check(info and info[0]["program"] == "anyproxy-gateway", "build info: %r" % info)
    h.check(value(g, "process_open_fds") > 0 and value(g, "process_resident_memory_bytes") > 0,
            "fds and RSS are read")
    ran = [promtool(gtext, "gateway"), promtool(atext, "agent")]
    h.note("promtool check metrics: %s" % ("ran" if all(ran) else
                                           "skipped (promtool not installed)"))


def socks5_request(env, host, port, user, password=h.PROXY_PASS):
    r = h.socks5_open(env.gw.socks_port, host, port, user=user, password=password)
    try:
        if r.rep == 0:
            r.sock.sendall(b"u" * UP_BYTES)
            got = b""
            while len(got) < DOWN_BYTES:
                b = r.sock.recv(65536)
                if not b:
                    break
                got += b
            h.check(len(got) == DOWN_BYTES, "echo answer: %d bytes" % len(got))
    finally:
        r.sock.close()
    return r


def test_counters_move_exactly(env):
    settled(env)
    g0, _ = scrape(env.gw_metrics, "gateway")
    a0, _ = scrape(env.agent_metrics, "agent")
    user = "%s.%s" % (h.PROXY_USER, GROUP)
    closed = h.free_port()
    # ok (SOCKS5): 1000 bytes up, 3000 down
    r = socks5_request(env, "127.0.0.2", env.echo.port, user)
    h.check(r.rep == 0, "ok request: %r" % r)
    # ok (HTTP CONNECT), the same exchange
    s, status, _, _, rest = h.http_connect(env.gw.http_port, "127.0.0.2", env.echo.port,
                                           user=user)
    h.check(status == 200 and not rest, "CONNECT: %r" % status)
    s.sendall(b"u" * UP_BYTES)
    got = b""
    while len(got) < DOWN_BYTES:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    h.check(len(got) == DOWN_BYTES, "CONNECT echo: %d bytes" % len(got))
    # denied by the agent's forbidden_hosts
    r = socks5_request(env, FORBIDDEN, env.echo.port, user)
    h.check(r.rep == 2, "forbidden target: %r" % r)
    # refused, through the agent's resolver (localhost, a port nobody serves)
    r = socks5_request(env, "localhost", closed, user)
    h.check(r.rep == 5, "closed port: %r" % r)
    # no agent: a group nobody serves (and no default-group agent)
    r = socks5_request(env, "127.0.0.2", env.echo.port, h.PROXY_USER + ".nobody")
    h.check(r.rep == 3, "no agent: %r" % r)
    # authentication failures, one per proxy
    r = socks5_request(env, "127.0.0.2", env.echo.port, user, password="wrong")
    h.check(r.auth_status not in (None, 0), "wrong SOCKS5 password: %r" % r)
    s, status, _, _, _ = h.http_connect(env.gw.http_port, "127.0.0.2", env.echo.port,
                                        user=user, password="wrong")
    s.close()
    h.check(status == 407, "wrong HTTP password: %r" % status)
    settled(env)
    g1, _ = scrape(env.gw_metrics, "gateway")
    a1, _ = scrape(env.agent_metrics, "agent")

    def dg(family, series=None, **labels):
        return value(g1, family, series, **labels) - value(g0, family, series, **labels)

    def da(family, series=None, **labels):
        return value(a1, family, series, **labels) - value(a0, family, series, **labels)

    want = {
        ("anyproxy_gateway_user_connections_total", (("proxy", "socks5"),)): 5,
        ("anyproxy_gateway_user_connections_total", (("proxy", "http"),)): 2,
        ("anyproxy_gateway_opens_total", (("proxy", "socks5"), ("result", "ok"))): 1,
        ("anyproxy_gateway_opens_total", (("proxy", "http"), ("result", "ok"))): 1,
        ("anyproxy_gateway_opens_total", (("proxy", "socks5"), ("result", "denied"))): 1,
        ("anyproxy_gateway_opens_total", (("proxy", "socks5"), ("result", "refused"))): 1,
        ("anyproxy_gateway_opens_total", (("proxy", "socks5"), ("result", "no_agent"))): 1,
        ("anyproxy_gateway_auth_failures_total", (("proxy", "socks5"),)): 1,
        ("anyproxy_gateway_auth_failures_total", (("proxy", "http"),)): 1,
        ("anyproxy_gateway_streams_total", (("group", GROUP), ("proxy", "socks5"))): 3,
        ("anyproxy_gateway_streams_total", (("group", GROUP), ("proxy", "http"))): 1,
        ("anyproxy_gateway_bytes_total", (("direction", "out"), ("group", GROUP))): 2 * UP_BYTES,
        ("anyproxy_gateway_bytes_total", (("direction", "in"), ("group", GROUP))): 2 * DOWN_BYTES,
        ("anyproxy_gateway_client_bytes_total",
         (("client", AGENT), ("direction", "out"), ("group", GROUP))): 2 * UP_BYTES,
        ("anyproxy_gateway_client_bytes_total",
         (("client", AGENT), ("direction", "in"), ("group", GROUP))): 2 * DOWN_BYTES,
        ("anyproxy_gateway_fallbacks_total", ()): 0,
    }
    for (family, labels), n in want.items():
        got = dg(family, **dict(labels))
        h.check(got == n, "%s%r moved by %r, want %d" % (family, labels, got, n))
    # every request that reached routing had its handshake timed, and every
    # OPEN sent to the agent its answer
    hs = dg("anyproxy_gateway_handshake_duration_seconds",
            "anyproxy_gateway_handshake_duration_seconds_count", listener="socks5")
    h.check(hs == 4, "socks5 handshakes timed: %r, want 4" % hs)
    hs = dg("anyproxy_gateway_handshake_duration_seconds",
            "anyproxy_gateway_handshake_duration_seconds_count", listener="http")
    h.check(hs == 1, "http handshakes timed: %r, want 1" % hs)
    op = dg("anyproxy_gateway_open_duration_seconds",
            "anyproxy_gateway_open_duration_seconds_count")
    h.check(op == 4, "opens timed: %r, want 4" % op)
    agent_want = {
        ("anyproxy_agent_streams_total", ()): 4,
        ("anyproxy_agent_opens_total", (("result", "ok"),)): 2,
        ("anyproxy_agent_opens_total", (("result", "denied"),)): 1,
        ("anyproxy_agent_opens_total", (("result", "refused"),)): 1,
        ("anyproxy_agent_host_denials_total", (("rule", FORBIDDEN), ("verdict", "forbidden"))): 1,
        ("anyproxy_agent_reconnects_total", ()): 0,
    }
    for (family, labels), n in agent_want.items():
        got = da(family, **dict(labels))
        h.check(got == n, "agent %s%r moved by %r, want %d" % (family, labels, got, n))
    dns = da("anyproxy_agent_dns_duration_seconds", "anyproxy_agent_dns_duration_seconds_count")
    h.check(dns == 1, "DNS lookups timed: %r, want 1 (localhost)" % dns)


def test_failed_opens_by_result(env):
    """Each kind of failed target is one open of its result on both sides:
    dns (a name glibc refuses), timeout (a listener whose accept queue is
    full, past the agent's connect_timeout_ms) and unreachable."""
    settled(env)
    hole = h.Blackhole()
    env.servers.append(hole)
    g0, _ = scrape(env.gw_metrics, "gateway")
    a0, _ = scrape(env.agent_metrics, "agent")
    user = "%s.%s" % (h.PROXY_USER, GROUP)
    for host, port, rep in ((UNRESOLVABLE, 80, 4), ("127.0.0.1", hole.port, 6),
                            (UNREACHABLE, 80, 4)):
        r = socks5_request(env, host, port, user)
        h.check(r.rep == rep, "%s:%d: REP %r, want %d" % (host, port, r.rep, rep))
    settled(env)
    g1, _ = scrape(env.gw_metrics, "gateway")
    a1, _ = scrape(env.agent_metrics, "agent")
    for result in ("dns", "timeout", "unreachable", "ok", "refused", "denied", "no_agent"):
        want = 1 if result in ("dns", "timeout", "unreachable") else 0
        got = (value(g1, "anyproxy_gateway_opens_total", proxy="socks5", result=result) -
               value(g0, "anyproxy_gateway_opens_total", proxy="socks5", result=result))
        h.check(got == want, "gateway opens_total{socks5,%s} moved by %r, want %d"
                % (result, got, want))
        got = (value(a1, "anyproxy_agent_opens_total", result=result) -
               value(a0, "anyproxy_agent_opens_total", result=result))
        h.check(got == want, "agent opens_total{%s} moved by %r, want %d" % (result, got, want))
    dns = (value(a1, "anyproxy_agent_dns_duration_seconds",
                 "anyproxy_agent_dns_duration_seconds_count") -
           value(a0, "anyproxy_agent_dns_duration_seconds",
                 "anyproxy_agent_dns_duration_seconds_count"))
    h.check(dns == 1, "DNS lookups timed: %r, want 1 (the failed one)" % dns)


def test_handshakes_are_exported(env):
    """Connections held silent before their handshake are the pre-auth
    gauge, by side, and go when closed; every tunnel that reached HELLO_OK
    is one tunnel handshake timed."""
    settled(env)
    g0, _ = scrape(env.gw_metrics, "gateway")
    a0, _ = scrape(env.agent_metrics, "agent")
    base_proxy = value(g0, "anyproxy_gateway_handshakes", side="proxy")
    base_tunnel = value(g0, "anyproxy_gateway_handshakes", side="tunnel")
    h.check(base_proxy == 0 and base_tunnel == 0,
            "no handshake in progress at rest: proxy %r tunnel %r" % (base_proxy, base_tunnel))
    tunnel_hs = value(g0, "anyproxy_gateway_handshake_duration_seconds",
                      "anyproxy_gateway_handshake_duration_seconds_count", listener="tunnel")
    connects = total(a0, "anyproxy_agent_gateway_connects_total")
    h.check(connects >= 1 and tunnel_hs == connects,
            "tunnel handshakes timed %r, the agent's tunnels that reached HELLO_OK %r"
            % (tunnel_hs, connects))
    held = []
    try:
        for port, n in ((env.gw.socks_port, 3), (env.gw.http_port, 2), (env.port, 4)):
            held += [socket.create_connection(("127.0.0.1", port), timeout=5)
                     for _ in range(n)]
        # half a SOCKS5 greeting and half an HTTP head: still before auth
        held[0].sendall(b"\x05")
        held[3].sendall(b"CONNECT 127.0.0.2:1 HTTP/1.1\r\n")
        want = {"proxy": 5, "tunnel": 4}
        last = {}

        def held_counted():
            g, _ = scrape(env.gw_metrics, "gateway")
            last.update({side: value(g, "anyproxy_gateway_handshakes", side=side)
                         for side in want})
            return last == want
        try:
            h.wait_until(held_counted, 2 + h.slack(), "the held handshakes to be counted")
        except h.TestFailure:
            h.fail("anyproxy_gateway_handshakes is %r, want %r" % (last, want))
    finally:
        for s in held:
            s.close()
    last.clear()
    try:
        h.wait_until(lambda: held_counted() or last == {"proxy": 0, "tunnel": 0},
                     2 + h.slack(), "the closed handshakes to leave the gauge")
    except h.TestFailure:
        h.fail("after closing: anyproxy_gateway_handshakes is %r" % last)


def default_agent(env, cid, **keys):
    """An agent of the default group (started and stopped by one case)."""
    return env.agent(cid, None, **dict(h.PROXY_CLIENT, **keys))


def test_fallbacks_and_retries_are_counted(env):
    """Users of a group without agents fall back to the default group,
    whose two agents are "d-deny" (forbidden_hosts refuses the echo's
    address) and "d-ok": every request succeeds; fallbacks_total moves by
    the number of requests, open_retries_total by the number of streams
    d-deny refused, and the tunnel handshake histogram by the two new
    tunnels. Both agents leave again at the end."""
    settled(env)
    g0, _ = scrape(env.gw_metrics, "gateway")
    agents = [default_agent(env, "d-deny", forbidden_hosts="127.0.0.2"),
              default_agent(env, "d-ok")]
    try:
        before = h.stream_totals(env)
        mark = env.gw.mark()
        n = 6
        for i in range(n):
            r = socks5_request(env, "127.0.0.2", env.echo.port, h.PROXY_USER + ".empty")
            h.check(r.rep == 0, "fallback request %d: %r" % (i, r))
        settled(env)
        g1, _ = scrape(env.gw_metrics, "gateway")
        d = h.stream_delta(before, h.stream_totals(env))
        h.check(d.get("d-ok") == n and d.get("d-deny", 0) >= 1 and set(d) <= {"d-ok", "d-deny"},
                "streams: %r, want %d on d-ok and some on d-deny" % (d, n))

        def dg(family, series=None, **labels):
            return value(g1, family, series, **labels) - value(g0, family, series, **labels)
        lines = env.gw.find("No clients available in group group=empty, falling back to "
                            "default", mark)
        h.check(len(lines) == n, "fallback lines: %d, want %d" % (len(lines), n))
        h.check(dg("anyproxy_gateway_fallbacks_total") == n,
                "fallbacks_total moved by %r, want %d"
                % (dg("anyproxy_gateway_fallbacks_total"), n))
        retries = env.gw.find("Retrying the request with another agent of the group", mark)
        h.check(len(retries) == d["d-deny"], "retry lines %d, streams refused by d-deny %d"
                % (len(retries), d["d-deny"]))
        h.check(dg("anyproxy_gateway_open_retries_total") == d["d-deny"],
                "open_retries_total moved by %r, want %d"
                % (dg("anyproxy_gateway_open_retries_total"), d["d-deny"]))
        h.check(dg("anyproxy_gateway_opens_total", proxy="socks5", result="ok") == n,
                "opens ok moved by %r, want %d (a retried request is one open)"
                % (dg("anyproxy_gateway_opens_total", proxy="socks5", result="ok"), n))
        hs = dg("anyproxy_gateway_handshake_duration_seconds",
                "anyproxy_gateway_handshake_duration_seconds_count", listener="tunnel")
        h.check(hs == 2, "tunnel handshakes timed: %r, want 2 (the two new agents)" % hs)
    finally:
        for a in agents:
            rc = a.stop()
            h.check(rc == 0, "%s exited %r" % (a.name, rc))
    for cid in ("d-deny", "d-ok"):
        env.wait_gone(cid, 5 + h.slack())


def test_apctl_stats_agrees_with_the_scrape(env):
    settled(env)
    g, _ = scrape(env.gw_metrics, "gateway")
    js = env.apctl_json("stats")
    rc, out, err = env.apctl("stats")
    h.check(rc == 0, "apctl stats: rc %d %s" % (rc, err))
    kv = h.parse_kv(out)
    h.check(set(kv) == set(js), "text and JSON name the same counters: %r vs %r"
            % (sorted(kv), sorted(js)))
    for k, v in js.items():
        h.check(isinstance(v, int) and str(v) == kv[k], "%s: text %r, JSON %r" % (k, kv[k], v))
    expect = {
        "user_connections": total(g, "anyproxy_gateway_user_connections"),
        "user_connections_total": total(g, "anyproxy_gateway_user_connections_total"),
        "user_refused_total": total(g, "anyproxy_gateway_user_refused_total"),
        "streams": total(g, "anyproxy_gateway_streams"),
        "streams_total": total(g, "anyproxy_gateway_streams_total"),
        "bytes_in": total(g, "anyproxy_gateway_bytes_total", direction="in"),
        "bytes_out": total(g, "anyproxy_gateway_bytes_total", direction="out"),
        "auth_failures": total(g, "anyproxy_gateway_auth_failures_total"),
        "fallbacks": total(g, "anyproxy_gateway_fallbacks_total"),
        "groups": total(g, "anyproxy_gateway_groups"),
        "agents": total(g, "anyproxy_gateway_agents"),
        "tunnels": total(g, "anyproxy_gateway_tunnels"),
        "handshakes_proxy": total(g, "anyproxy_gateway_handshakes", side="proxy"),
        "handshakes_tunnel": total(g, "anyproxy_gateway_handshakes", side="tunnel"),
    }
    for result in ("ok", "refused", "dns", "timeout", "denied", "no_agent", "unreachable",
                   "limit", "error"):
        expect["opens_" + result] = total(g, "anyproxy_gateway_opens_total", result=result)
    h.check(set(expect) == set(js), "apctl stats columns: %r" % sorted(js))
    for k, v in expect.items():
        h.check(js[k] == v, "apctl stats %s = %r, the scrape says %r" % (k, js[k], v))
    h.check(js["opens_ok"] >= 2 and js["bytes_out"] >= 2 * UP_BYTES,
            "the earlier requests are counted: %r" % js)


def test_forwards_are_counted(env):
    """A connection through [forward.fw] is counted by the forward and as an
    open of proxy "forward"."""
    g0, _ = scrape(env.gw_metrics, "gateway")
    s = socket.create_connection(("127.0.0.1", env.fw_port), timeout=5)
    try:
        s.sendall(b"ping")
        h.check(h.recv_exact(s, 4) == b"ping", "echo through the forward")
        g1, _ = scrape(env.gw_metrics, "gateway")
        h.check(value(g1, "anyproxy_gateway_forward_connections", forward="fw") == 1,
                "one connection open through the forward")
    finally:
        s.close()
    h.check(value(g1, "anyproxy_gateway_forward_connections_total", forward="fw") ==
            value(g0, "anyproxy_gateway_forward_connections_total", forward="fw") + 1,
            "one connection accepted by the forward")
    h.check(value(g1, "anyproxy_gateway_opens_total", proxy="forward", result="ok") ==
            value(g0, "anyproxy_gateway_opens_total", proxy="forward", result="ok") + 1,
            "the forward's open counted under proxy=forward")
    settled(env)


def test_suspect_tunnel_is_exported(env):
    """A hung agent (SIGSTOP) misses a PONG: the gateway exports its tunnel
    as suspect until it answers again after SIGCONT."""
    def suspect():
        g, _ = scrape(env.gw_metrics, "gateway")
        return value(g, "anyproxy_gateway_client_tunnels", group=GROUP, client=AGENT,
                     state="suspect")
    g0, _ = scrape(env.gw_metrics, "gateway")
    env.agent_d.send_signal(signal.SIGSTOP)
    try:
        h.wait_until(lambda: suspect() == 1, 4 + h.slack(), "the hung agent's tunnel suspect")
    finally:
        env.agent_d.send_signal(signal.SIGCONT)
    g1, _ = scrape(env.gw_metrics, "gateway")
    h.check(value(g1, "anyproxy_gateway_tunnels_suspected_total") ==
            value(g0, "anyproxy_gateway_tunnels_suspected_total") + 1, "one suspicion counted")
    h.wait_until(lambda: suspect() == 0, 4 + h.slack(), "the tunnel to answer again")


def test_endpoint_answers_only_get_metrics(env):
    for port in (env.gw_metrics, env.agent_metrics):
        status, _, _ = http_get(port, b"GET /other HTTP/1.1\r\n\r\n")
        h.check(status == 404, "GET /other: %d" % status)
        status, headers, _ = http_get(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        h.check(status == 405 and "GET" in headers.get("allow", ""), "POST: %d" % status)
        status, _, _ = http_get(port, b"GET /metrics FOO\r\n\r\n")
        h.check(status == 400, "bad request line: %d" % status)
        # a head that reaches the bound without its end (exactly the bound,
        # so that no unread byte turns the close into a reset)
        start = b"GET /metrics HTTP/1.1\r\nX: "
        status, _, _ = http_get(port, start + b"a" * (METRICS_REQUEST_MAX_BYTES - len(start)))
        h.check(status == 431, "oversized head: %d" % status)
        data = exchange(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        h.check(head.startswith(b"HTTP/1.1 200") and body == b"", "HEAD: %r" % data[:80])
    # the daemons went on serving
    scrape(env.gw_metrics, "gateway")
    scrape(env.agent_metrics, "agent")


def test_scrape_connections_are_bounded(env):
    """At METRICS_MAX_CONNECTIONS silent connections the endpoint stops
    accepting: one more waits in the backlog, unanswered, until a slot
    frees. Silent connections are left open for the shutdown that ends
    the run (the clean-shutdown case checks both daemons exit 0, with no
    sanitizer report)."""
    for port in (env.gw_metrics, env.agent_metrics):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10)
                for _ in range(METRICS_MAX_CONNECTIONS)]
        # each one was accepted: a request on it would be served
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        extra.settimeout(0.5)
        try:
            early = extra.recv(1)
        except (socket.timeout, TimeoutError):
            early = None
        h.check(early is None, "a connection past the bound was served at once: %r" % early)
        idle.pop().close()
        extra.settimeout(10 + h.slack())
        how, _, data = h.read_until_closed(extra, 10 + h.slack())
        extra.close()
        h.check(how == "eof" and data.startswith(b"HTTP/1.1 200"),
                "the waiting scrape once a slot freed: %s %r" % (how, data[:40]))
        for s in idle[:-3]:
            s.close()
        env.servers.append(Closer(idle[-3:]))


def test_group_series_go_with_the_group(env):
    """When the group's last agent leaves and no stream of it is open, its
    series are dropped (label sets stay bounded) while apctl stats keeps
    what they counted."""
    settled(env)
    before = env.apctl_json("stats")
    g, _ = scrape(env.gw_metrics, "gateway")
    h.check(total(g, "anyproxy_gateway_bytes_total", group=GROUP) > 0, "mg has series")
    rc = env.agent_d.stop()
    h.check(rc == 0, "the agent (with silent scrapers connected) exited %r" % rc)
    env.wait_gone(AGENT, 5 + h.slack())
    g, _ = scrape(env.gw_metrics, "gateway")
    for family in ("anyproxy_gateway_streams", "anyproxy_gateway_streams_total",
                   "anyproxy_gateway_bytes_total", "anyproxy_gateway_client_bytes_total",
                   "anyproxy_gateway_agents", "anyproxy_gateway_tunnels"):
        left = [k for k in g[family]["samples"] if ("group", GROUP) in k[1]]
        h.check(not left, "%s still has series of the gone group: %r" % (family, left))
    after = env.apctl_json("stats")
    for k in ("streams_total", "bytes_in", "bytes_out", "opens_ok", "user_connections_total"):
        h.check(after[k] == before[k], "apctl stats %s went from %r to %r" % (k, before[k],
                                                                            after[k]))
    h.check(after["agents"] == 0 and after["groups"] == 0, "no agent left: %r" % after)


class Closer:
    """Sockets closed at clean-up, after the daemons stopped."""

    def __init__(self, socks):
        self.socks = socks

    def close(self):
        for s in self.socks:
            s.close()


def dashboard_exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from dashboard_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v)


def test_grafana_dashboard_names_existing_metrics(env):
    with open(DASHBOARD) as f:
        board = json.load(f)
    h.check(board.get("panels"), "the dashboard has panels")
    g, _ = scrape(env.gw_metrics, "gateway")
    a, _ = scrape(env.agent_metrics, "agent")
    known = set()
    for fams in (g, a):
        for name, fam in fams.items():
            known.add(name)
            if fam["type"] == "histogram":
                known |= {name + "_bucket", name + "_sum", name + "_count"}
    exprs = list(dashboard_exprs(board))
    h.check(len(exprs) >= 8, "the dashboard's queries: %d" % len(exprs))
    for expr in exprs:
        names = re.findall(r"\b(anyproxy_[a-z0-9_]+|process_[a-z0-9_]+)\b", expr)
        h.check(names, "expression names no metric: %r" % expr)
        for n in names:
            h.check(n in known, "dashboard expression %r names unknown metric %s" % (expr, n))


if __name__ == "__main__":
    h.run([
        test_exposition_is_valid,
        test_counters_move_exactly,
        test_failed_opens_by_result,
        test_handshakes_are_exported,
        test_apctl_stats_agrees_with_the_scrape,
        test_forwards_are_counted,
        # after the apctl comparison: the default group's series leave with
        # its agents while apctl stats keeps what they counted
        test_fallbacks_and_retries_are_counted,
        test_suspect_tunnel_is_exported,
        test_endpoint_answers_only_get_metrics,
        test_grafana_dashboard_names_existing_metrics,
        test_scrape_connections_are_bounded,
        test_group_series_go_with_the_group,
    ], fixture=setup)
