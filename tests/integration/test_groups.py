#!/usr/bin/env python3
"""Groups and apctl, with the demo configs as shipped (configs/demo/).

A gateway and three agents start from configs/demo/*.ini, in a folder that
holds certs/ like the demo's; only the ports come from the environment
(GATEWAY_LISTEN_ADDR, PROXY_*_LISTEN_ADDR, CLIENT_GATEWAY_ADDR). prod-1 and
prod-2 are in "production" with replicas=2, default-1 is in the default group.
"""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DEMO = os.path.join(h.CONFIGS, "demo")
AGENTS = {"prod-1": ("production", 2), "prod-2": ("production", 2), "default-1": ("", 1)}
CLIENT_COLUMNS = ["client_id", "group_id", "tunnels", "remote_addr", "connected_since",
                  "streams_active", "streams_total", "bytes_in", "bytes_out", "drained",
                  "suspect"]
GROUP_COLUMNS = ["group_id", "clients", "tunnels", "streams_active", "drained"]


def setup(env):
    # the demo folder: certs/ and the control socket under run/ (relative paths)
    shutil.copytree(env.certs, os.path.join(env.dir, "certs"))
    env.control = os.path.join(env.dir, "run", "gateway.sock")
    port_env = {
        "GATEWAY_LISTEN_ADDR": "127.0.0.1:%d" % env.port,
        "PROXY_HTTP_LISTEN_ADDR": "127.0.0.1:%d" % h.free_port(),
        "PROXY_SOCKS5_LISTEN_ADDR": "127.0.0.1:%d" % h.free_port(),
    }
    gw = env.start("gateway", "gateway", os.path.join(DEMO, "gateway.ini"), port_env)
    env.gw = gw
    env.wait_gateway_ready(gw)
    env.agent_daemons = {}
    for cid in AGENTS:
        ini = os.path.join(DEMO, cid + ".ini")
        env.agent_daemons[cid] = env.start(
            "client", cid, ini, {"CLIENT_GATEWAY_ADDR": "127.0.0.1:%d" % env.port})
    for cid, (_group, replicas) in AGENTS.items():
        env.wait_listed(cid, tunnels=replicas, daemon=env.agent_daemons[cid])


def test_demo_configs_name_the_expected_clients(env):
    # the files themselves say what this test assumes
    for cid, (group, replicas) in AGENTS.items():
        text = open(os.path.join(DEMO, cid + ".ini")).read()
        h.check(re.search(r"^client_id = %s$" % re.escape(cid), text, re.M),
                "configs/demo/%s.ini: client_id is not %s" % (cid, cid))
        if group:
            h.check(re.search(r"^group_id = %s$" % group, text, re.M),
                    "configs/demo/%s.ini: group_id is not %s" % (cid, group))
            h.check(re.search(r"^replicas = %d$" % replicas, text, re.M),
                    "configs/demo/%s.ini: replicas is not %d" % (cid, replicas))
        else:
            h.check(not re.search(r"^group_id\s*=\s*\S", text, re.M),
                    "configs/demo/%s.ini should have no group_id" % cid)


def test_groups_table(env):
    rc, out, err = env.apctl("groups")
    h.check(rc == 0, "apctl groups failed (rc %d): %s" % (rc, err))
    header, rows = h.parse_table(out)
    h.check(header == [c.upper() for c in GROUP_COLUMNS],
            "apctl groups header is %r, expected %r\n%s" % (header, GROUP_COLUMNS, out))
    by_group = {r[0]: r for r in rows}
    h.check(by_group.get("production") == ["production", "2", "4", "0", "0"],
            "production row should be 2 clients, 4 tunnels, 0 streams:\n%s" % out)
    h.check(by_group.get("(default)") == ["(default)", "1", "1", "0", "0"],
            "default group row should be 1 client, 1 tunnel, 0 streams:\n%s" % out)
    h.check(len(rows) == 2, "expected exactly 2 groups:\n%s" % out)


def test_groups_json_parses_with_json_tool(env):
    rc, out, err = env.apctl("--json", "groups")
    h.check(rc == 0, "apctl --json groups failed (rc %d): %s" % (rc, err))
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=out, capture_output=True,
                          text=True, timeout=30)
    h.check(tool.returncode == 0, "python3 -m json.tool rejected apctl --json groups "
            "(rc %d): %s\ninput: %r" % (tool.returncode, tool.stderr, out))
    groups = json.loads(out)
    h.check(isinstance(groups, list), "apctl --json groups is not an array: %r" % out)
    by_id = {g["group_id"]: g for g in groups}
    for g in groups:
        h.check(sorted(g) == sorted(GROUP_COLUMNS), "group object keys %r" % sorted(g))
    h.check(by_id.get("production", {}).get("clients") == 2 and by_id["production"]["tunnels"] == 4,
            "production in JSON: %r" % by_id.get("production"))
    # the default group is "" in JSON (the "(default)" label is for humans)
    h.check(by_id.get("", {}).get("clients") == 1 and by_id[""]["tunnels"] == 1,
            "default group in JSON: %r" % by_id.get(""))
    h.check(all(isinstance(g["clients"], int) and isinstance(g["streams_active"], int)
                for g in groups), "numbers must be JSON numbers: %r" % out)


def test_clients_table_and_json(env):
    rc, out, err = env.apctl("clients")
    h.check(rc == 0, "apctl clients failed (rc %d): %s" % (rc, err))
    header, rows = h.parse_table(out)
    h.check(header == [c.upper() for c in CLIENT_COLUMNS],
            "apctl clients header is %r\n%s" % (header, out))
    ids = sorted(r[0] for r in rows)
    h.check(ids == sorted(AGENTS), "apctl clients lists %r, expected %r\n%s"
            % (ids, sorted(AGENTS), out))
    clients = env.clients()
    for cid, (group, replicas) in AGENTS.items():
        c = clients[cid]
        h.check(list(c) == CLIENT_COLUMNS, "client object keys %r" % list(c))
        h.check(c["group_id"] == group,
                "%s: group_id %r, expected %r" % (cid, c["group_id"], group))
        h.check(c["tunnels"] == replicas,
                "%s: %r tunnels, expected %d" % (cid, c["tunnels"], replicas))
        h.check(re.match(r"^127\.0\.0\.1:\d+$", c["remote_addr"]),
                "%s: remote_addr %r" % (cid, c["remote_addr"]))
        h.check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", c["connected_since"]),
                "%s: connected_since %r" % (cid, c["connected_since"]))
        for k in ("streams_active", "streams_total", "bytes_in", "bytes_out"):
            h.check(isinstance(c[k], int) and c[k] >= 0, "%s: %s = %r" % (cid, k, c[k]))
        h.check(c["streams_active"] == 0 and c["streams_total"] == 0,
                "%s: no stream was opened yet: %r" % (cid, c))


def test_client_kv_and_json(env):
    rc, out, err = env.apctl("client", "prod-1")
    h.check(rc == 0, "apctl client prod-1 failed (rc %d): %s" % (rc, err))
    kv = h.parse_kv(out)
    h.check(list(kv) == CLIENT_COLUMNS, "apctl client prints keys %r:\n%s" % (list(kv), out))
    h.check(kv["client_id"] == "prod-1" and kv["group_id"] == "production" and kv["tunnels"] == "2",
            "apctl client prod-1:\n%s" % out)
    rc, out, err = env.apctl("--json", "client", "default-1")
    h.check(rc == 0, "apctl --json client default-1 failed (rc %d): %s" % (rc, err))
    obj = json.loads(out)
    h.check(isinstance(obj, dict), "apctl --json client should print one object: %r" % out)
    h.check(obj["client_id"] == "default-1" and obj["group_id"] == "" and obj["tunnels"] == 1,
            "apctl --json client default-1: %r" % obj)


def test_client_unknown_exits_1(env):
    rc, out, err = env.apctl("client", "nosuch")
    h.check(rc == 1, "apctl client nosuch should exit 1, got %d (out %r)" % (rc, out))
    h.check("no such client" in err and "nosuch" in err,
            "apctl client nosuch should say so on stderr: %r" % err)
    h.check(out == "", "nothing on stdout for an error: %r" % out)


def test_apctl_without_gateway_exits_1(env):
    missing = os.path.join(env.dir, "no-gateway-here.sock")
    rc, out, err = h.apctl(missing, "groups")
    h.check(rc == 1, "apctl on a missing socket should exit 1, got %d" % rc)
    h.check(missing in err and "gateway" in err,
            "apctl should name the socket and the gateway: %r" % err)
    # a socket file nobody listens on (a gateway that died) is the same
    dead = os.path.join(env.dir, "dead.sock")
    import socket as s
    sock = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    sock.bind(dead)
    sock.close()
    rc, out, err = h.apctl(dead, "clients")
    h.check(rc == 1 and dead in err, "apctl on a dead socket: rc %d, %r" % (rc, err))
    # usage errors are 2, not 1
    rc, _, err = env.apctl("no-such-command")
    h.check(rc == 2, "apctl with an unknown command should exit 2, got %d: %r" % (rc, err))


def control_raw(env, request):
    """One raw exchange on the control socket: the whole reply to EOF."""
    import socket as s
    sock = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    sock.settimeout(5 + h.slack())
    sock.connect(env.control)
    sock.sendall(request)
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    return reply


def test_control_refuses_bad_requests(env):
    # the gateway checks a command's name and argument against the protocol's
    # command table, whoever asks
    for request, reply in [(b"nope\n", b"ERR unknown command\n"),
                           (b"client\n", b"ERR this command needs an argument\n"),
                           (b"groups x\n", b"ERR this command takes no argument\n"),
                           (b"client no-such-id\n", b"ERR no such client: no-such-id\n"),
                           (b"BAD!\n", b"ERR bad command\n")]:
        got = control_raw(env, request)
        h.check(got == reply, "control %r: %r, expected %r" % (request, got, reply))
    got = control_raw(env, b"version\n")
    h.check(got.startswith(b"OK\nversion:s\twolfssl:s\taesni:s\tuptime_s:n\n"),
            "control version: %r" % got)


def test_control_socket_is_private(env):
    # [control] socket_mode's default: the gateway's user and group only
    st = os.stat(env.control)
    mode = stat.S_IMODE(st.st_mode)
    h.check(stat.S_ISSOCK(st.st_mode), "%s is not a socket" % env.control)
    h.check(mode == 0o660, "control socket mode is %o, expected 660" % mode)
    h.check(st.st_gid == os.getegid(), "control socket group is %d, expected the gateway's %d"
            % (st.st_gid, os.getegid()))


def test_apctl_version(env):
    rc, out, err = env.apctl("version")
    h.check(rc == 0, "apctl version failed (rc %d): %s" % (rc, err))
    h.check("wolfSSL" in out, "apctl version should name wolfSSL:\n%s" % out)


def test_gateway_logged_connects(env):
    for cid, (group, _replicas) in AGENTS.items():
        lines = [l for l in env.gw.find("Client connected") if l.get("client_id") == cid]
        h.check(len(lines) == 1, "gateway should log 'Client connected' once for %s, got %r"
                % (cid, lines))
        h.check(lines[0].get("group_id") == group,
                "Client connected for %s has group_id %r" % (cid, lines[0].get("group_id")))
        h.check(lines[0].level == "INFO", "Client connected should be INFO: %r" % lines[0])
    tls = env.gw.find("TLS established")
    h.check(tls and all(l.get("version") == "TLSv1.3" for l in tls),
            "gateway should log TLS established version=TLSv1.3: %r" % tls[:2])
    h.check(all(l.get("cipher") for l in tls), "TLS established should name the cipher")


def test_group_vanishes_with_its_last_client(env):
    for cid in ("prod-1", "prod-2"):
        d = env.agent_daemons[cid]
        d.send_signal(signal.SIGTERM)
        rc = d.wait_exit(5 + h.slack())
        h.check(rc == 0, "%s exited %d after SIGTERM" % (cid, rc))
    h.wait_until(lambda: "production" not in env.groups(), 3 + h.slack(),
                 "the production group to vanish")
    groups = env.groups()
    h.check(list(groups) == [""] and groups[""]["clients"] == 1,
            "only the default group should remain: %r" % groups)
    # and a new agent brings the group back
    env.agent_daemons["prod-1"].start()
    env.wait_listed("prod-1", tunnels=2, daemon=env.agent_daemons["prod-1"])
    g = env.groups()
    h.check(g.get("production", {}).get("clients") == 1 and g["production"]["tunnels"] == 2,
            "production should be back with 1 client / 2 tunnels: %r" % g)


if __name__ == "__main__":
    h.run([
        test_demo_configs_name_the_expected_clients,
        test_groups_table,
        test_groups_json_parses_with_json_tool,
        test_clients_table_and_json,
        test_client_kv_and_json,
        test_client_unknown_exits_1,
        test_apctl_without_gateway_exits_1,
        test_control_refuses_bad_requests,
        test_control_socket_is_private,
        test_apctl_version,
        test_gateway_logged_connects,
        test_group_vanishes_with_its_last_client,
    ], fixture=setup)
