#!/usr/bin/env python3
"""One host name rule (grammar_host_name) at the HTTP proxy and the agent.

A host name is at most 253 bytes without one final dot, in labels of at
most 63 bytes (RFC 1035). The gateway's HTTP parser used to allow 255
bytes and labels of any length, so a name the agent's rules refuse was
accepted, routed and opened, and then failed at the agent; now the HTTP
proxy answers 400 Bad Request itself and opens no stream. Names at the
limits still work end to end: the agent's hosts_file (a test file, never
/etc/hosts) maps them to an HttpTarget on 127.0.0.2.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

LABEL_63 = "a" * 63 + ".test"
LABEL_64 = "b" * 64 + ".test"
# three 63-byte labels and a 61-byte one: 253 bytes; one more byte: 254
NAME_253 = ".".join(["c" * 63] * 3 + ["d" * 61])
NAME_254 = ".".join(["c" * 63] * 3 + ["d" * 62])


def setup(env):
    env.gwp = h.proxy_gateway(env)
    env.target = h.HttpTarget("127.0.0.2", name="T", files={"x.txt": b"reached\n"})
    env.servers.append(env.target)
    hosts = os.path.join(env.dir, "hosts")
    with open(hosts, "w") as f:
        f.write("# test hosts file (never /etc/hosts)\n")
        for name in (LABEL_63, NAME_253):
            f.write("127.0.0.2 %s\n" % name)
    h.proxy_agent(env, "def", None, hosts_file=hosts)
    h.check(len(NAME_253) == 253 and len(NAME_254) == 254, "name lengths")


def connect_status(env, host):
    s, status, _, text, _ = h.http_connect(env.gwp.http_port, host, env.target.port)
    s.close()
    return status, text


def test_names_at_the_limits_work(env):
    for name in (LABEL_63, NAME_253, NAME_253 + "."):
        status, text = connect_status(env, name)
        h.check(status == 200, "CONNECT %d-byte name: %r" % (len(name), text))


def test_long_label_refused_with_400(env):
    before = sum(h.stream_totals(env).values())
    status, text = connect_status(env, LABEL_64)
    h.check(status == 400, "CONNECT with a 64-byte label: %r" % text)
    h.check(sum(h.stream_totals(env).values()) == before, "a stream was opened")


def test_long_name_refused_with_400(env):
    for name in (NAME_254, NAME_254 + "."):
        status, text = connect_status(env, name)
        h.check(status == 400, "CONNECT %d-byte name: %r" % (len(name), text))


def test_absolute_form_long_label_refused_with_400(env):
    r = h.curl(["-o", "/dev/null", "-w", "%{http_code}", "-x",
                "http://%s:%s@127.0.0.1:%d" % (h.PROXY_USER, h.PROXY_PASS, env.gwp.http_port),
                "http://%s:%d/file/x.txt" % (LABEL_64, env.target.port)])
    h.check(r.stdout == b"400", "GET with a 64-byte label: %r %r" % (r.stdout, r.stderr))


def test_socks5_same_rule_at_the_agent(env):
    """SOCKS5 passes the name on (its gateway check is the byte alphabet
    only); the agent applies the same rule: host unreachable (REP 0x04)."""
    for name, rep in ((LABEL_63, 0), (NAME_253, 0), (LABEL_64, 4), (NAME_254, 4)):
        r = h.socks5_open(env.gwp.socks_port, name, env.target.port)
        r.sock.close()
        h.check(r.rep == rep, "SOCKS5 %d-byte name: %r, expected REP %d" % (len(name), r, rep))


if __name__ == "__main__":
    h.run([
        test_names_at_the_limits_work,
        test_long_label_refused_with_400,
        test_long_name_refused_with_400,
        test_absolute_form_long_label_refused_with_400,
        test_socks5_same_rule_at_the_agent,
    ], fixture=setup)
