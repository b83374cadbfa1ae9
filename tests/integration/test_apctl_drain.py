#!/usr/bin/env python3
"""apctl drain / undrain, the control socket's permissions, and apctl watch.

drain CLIENT_ID: new streams of the client's group go to its other clients,
its open streams go on; undrain puts it back in rotation. The mark holds for
the id across a reconnect. State-changing commands need root, the gateway's
user or the socket's group; listing needs only a connection (docs/apctl.md
"Permissions"). Tests run as root; the unprivileged peer is apctl run by
setpriv as nobody.
"""
import grp
import json
import os
import pty
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GROUP = "pool"
USER = "%s.%s" % (h.PROXY_USER, GROUP)


def target(env):
    t = h.HttpTarget("127.0.0.1", name="A")
    env.servers.append(t)
    return t


def echo(env):
    s = h.RawServer(h.echo_handler)
    env.servers.append(s)
    return s


def fetch(gw, url):
    r = h.curl(["-sS", "-x", "http://%s:%s@127.0.0.1:%d" % (USER, h.PROXY_PASS, gw.http_port),
                "-w", "\n%{http_code}", url], timeout=20)
    body, _, code = r.stdout.rpartition(b"\n")
    return r.returncode, int(code or 0), body


def two_agents(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "a1", GROUP)
    h.proxy_agent(env, "a2", GROUP)
    return gw


def echo_once(sock, data):
    sock.sendall(data)
    got = h.recv_exact(sock, len(data))
    h.check(got == data, "echo through the drained client returned %r" % got[:40])


def test_drain_sends_new_streams_elsewhere_open_ones_finish(env):
    gw = two_agents(env)
    t, e = target(env), echo(env)
    before = h.stream_totals(env)
    sock = h.proxy_stream(gw, "socks5", "127.0.0.1", e.port, user=USER)
    echo_once(sock, b"before the drain")
    opened = h.stream_delta(before, h.stream_totals(env))
    h.check(len(opened) == 1, "one client should hold the open stream: %r" % opened)
    held = next(iter(opened))
    other = "a2" if held == "a1" else "a1"

    mark = gw.mark()
    rc, out, err = env.apctl("--json", "drain", held)
    h.check(rc == 0, "apctl drain %s: rc %d %s" % (held, rc, err))
    h.check(json.loads(out) == {"client_id": held, "connected": True, "drained": True,
                                "streams_active": 1}, "drain reply: %s" % out)
    line = gw.wait_for_log("Client drained", 5, since=mark)
    h.check(line.get("client_id") == held and line.get("peer_uid") == "0",
            "drain log line should name the client and the peer uid 0: %r" % line)

    clients = env.clients()
    h.check(clients[held]["drained"] is True and clients[other]["drained"] is False,
            "apctl clients --json drained flags: %r" % clients)
    h.check(env.groups()[GROUP]["drained"] == 1, "groups should count 1 drained client")
    rc, out, _ = env.apctl("clients")
    header, rows = h.parse_table(out)
    h.check("DRAINED" in header, "aligned clients output has no DRAINED column:\n%s" % out)
    col = header.index("DRAINED")
    shown = {r[0]: r[col] for r in rows}
    h.check(shown == {held: "true", other: "false"}, "DRAINED column: %r" % shown)

    before = h.stream_totals(env)
    for i in range(4):
        rc, code, body = fetch(gw, t.url("/info"))
        h.check(rc == 0 and code == 200, "request %d while %s is drained: rc %d code %d"
                % (i, held, rc, code))
    h.expect_streams(env, before, {other: 4}, "4 requests with %s drained" % held)

    # the stream opened before the drain still relays both ways, then ends
    echo_once(sock, b"after the drain" * 1000)
    sock.close()
    h.wait_until(lambda: env.clients()[held]["streams_active"] == 0, 5,
                 "the drained client's open stream to end")

    rc, out, err = env.apctl("--json", "undrain", held)
    h.check(rc == 0 and json.loads(out)["drained"] is False, "undrain: rc %d %s %s"
            % (rc, out, err))
    gw.wait_for_log("Client undrained", 5, since=mark)
    before = h.stream_totals(env)
    for i in range(4):
        rc, code, _ = fetch(gw, t.url("/info"))
        h.check(rc == 0 and code == 200, "request %d after undrain: code %d" % (i, code))
    h.expect_streams(env, before, {"a1": 2, "a2": 2}, "4 requests after undrain")


def test_drained_only_client_is_no_client(env):
    gw = h.proxy_gateway(env)
    h.proxy_agent(env, "solo", GROUP)
    t = target(env)
    rc, _, err = env.apctl("drain", "solo")
    h.check(rc == 0, "drain solo: %s" % err)
    rc, code, body = fetch(gw, t.url("/info"))
    h.check(code == 503, "with its only client drained the group should answer 503 like a "
            "group without agents, got %d %r" % (code, body[:200]))
    r = h.socks5_open(gw.socks_port, "127.0.0.1", t.port, user=USER)
    r.sock.close()
    h.check(r.rep == 0x03, "SOCKS5 with the only client drained: %r (want REP 3)" % r)
    rc, _, err = env.apctl("undrain", "solo")
    h.check(rc == 0, "undrain solo: %s" % err)
    rc, code, _ = fetch(gw, t.url("/info"))
    h.check(code == 200, "after undrain the group serves again, got %d" % code)


def test_drain_holds_for_the_id_across_reconnect(env):
    h.proxy_gateway(env)
    agent = h.proxy_agent(env, "back", GROUP)
    rc, _, err = env.apctl("drain", "back")
    h.check(rc == 0, "drain back: %s" % err)
    agent.stop()
    env.wait_gone("back", 10)
    # while it is away the mark is still there: drain again is a no-op,
    # and the reply says it is not connected
    rc, out, err = env.apctl("--json", "drain", "back")
    h.check(rc == 0 and json.loads(out) == {"client_id": "back", "connected": False,
                                            "drained": True, "streams_active": 0},
            "drain of a drained, gone client: rc %d %s %s" % (rc, out, err))
    h.proxy_agent(env, "back", GROUP, name="agent-back-2")
    h.check(env.clients()["back"]["drained"] is True,
            "a reconnected drained client should still be drained")
    rc, out, err = env.apctl("undrain", "back")
    h.check(rc == 0, "undrain back: %s" % err)
    kv = h.parse_kv(out)
    h.check(kv.get("drained") == "false" and kv.get("connected") == "true",
            "undrain text reply: %r" % kv)
    h.check(env.clients()["back"]["drained"] is False, "undrain did not clear the mark")


def test_drain_unknown_client_fails(env):
    env.gateway()
    for args in (("drain", "nope"), ("undrain", "nope"), ("--json", "drain", "nope")):
        rc, out, err = env.apctl(*args)
        h.check(rc == 1, "apctl %s: rc %d, want 1" % (" ".join(args), rc))
        h.check(err.strip() == "apctl: no such client: nope" and out == "",
                "apctl %s: stdout %r stderr %r" % (" ".join(args), out, err))
    rc, _, err = env.apctl("drain")
    h.check(rc == 2 and "drain needs ID" in err, "drain without ID: rc %d %r" % (rc, err))


# ---- permissions ------------------------------------------------------------------

def shared_socket_dir():
    """A folder nobody can reach (the test folders are 0700); removed by the caller."""
    d = tempfile.mkdtemp(prefix="ap-apctl-")
    os.chmod(d, 0o755)
    return d


def apctl_as_nobody(path, *args, groups=None):
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    cmd += ["--groups=%s" % ",".join(groups)] if groups else ["--clear-groups"]
    cmd += [h.apctl_bin(), "-s", path] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    return r.returncode, r.stdout, r.stderr


def test_state_changes_need_privilege_listing_does_not(env):
    d = shared_socket_dir()
    try:
        path = os.path.join(d, "gw.sock")
        env.control = path
        gw = h.proxy_gateway(env, control=path,
                             control_keys={"socket_mode": "0666", "socket_group": "users"})
        h.proxy_agent(env, "a1", GROUP)
        st = os.stat(path)
        h.check(stat.S_IMODE(st.st_mode) == 0o666 and st.st_gid == grp.getgrnam("users").gr_gid,
                "socket mode %o gid %d, want 0666 and group users"
                % (stat.S_IMODE(st.st_mode), st.st_gid))
        rc, out, err = apctl_as_nobody(path, "--json", "clients")
        h.check(rc == 0 and json.loads(out)[0]["client_id"] == "a1",
                "nobody should list clients: rc %d %s" % (rc, err))
        mark = gw.mark()
        rc, out, err = apctl_as_nobody(path, "drain", "a1")
        h.check(rc == 1 and err.startswith("apctl: permission denied") and out == "",
                "nobody's drain: rc %d stdout %r stderr %r" % (rc, out, err))
        line = gw.wait_for_log("Control command refused", 5, since=mark)
        h.check(line.level == "WARN" and line.get("command") == "drain"
                and line.get("peer_uid") == str(65534), "refusal log line: %r" % line)
        h.check(env.clients()["a1"]["drained"] is False, "a refused drain changed the state")
        # a member of the socket's group may
        rc, out, err = apctl_as_nobody(path, "drain", "a1", groups=["users"])
        h.check(rc == 0, "a member of the socket's group should drain: rc %d %s" % (rc, err))
        line = gw.wait_for_log("Client drained", 5, since=mark)
        h.check(line.get("peer_uid") == str(65534), "drain log should name uid 65534: %r"
                % line)
        rc, _, err = apctl_as_nobody(path, "undrain", "a1")
        h.check(rc == 1 and "permission denied" in err, "nobody's undrain: rc %d %s" % (rc, err))
        h.check(env.clients()["a1"]["drained"] is True, "a refused undrain changed the state")
        h.check(gw.stop() == 0, "the gateway did not stop cleanly")
        h.check(not os.path.exists(path), "the gateway left its socket behind")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_default_socket_mode_and_unknown_group(env):
    env.gateway()
    st = os.stat(env.control)
    h.check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getegid(),
            "default socket mode %o gid %d, want 0660 and the gateway's group"
            % (stat.S_IMODE(st.st_mode), st.st_gid))
    bad = env.gateway("bad", wait=False, control=os.path.join(env.dir, "bad.sock"),
                      port=h.free_port(),
                      control_keys={"socket_group": "no-such-group-ap"})
    rc = bad.wait_exit(10)
    bad.expect_unclean = True
    h.check(rc != 0, "a gateway with an unknown socket_group should not start")
    h.check(bad.find("no such group: no-such-group-ap"), "no error names the group:\n%s"
            % bad.tail())


# ---- watch ------------------------------------------------------------------------

def test_watch_frames(env):
    h.proxy_gateway(env)
    h.proxy_agent(env, "a1", GROUP)
    rc, out, err = env.apctl("watch", "--count", "2", "--interval", "0.1")
    h.check(rc == 0, "watch --count 2: rc %d %s" % (rc, err))
    frames = [l for l in out.splitlines() if l.startswith("apctl watch  ")]
    h.check(len(frames) == 2, "watch --count 2 printed %d frames:\n%s" % (len(frames), out))
    lines = out.splitlines()
    h.check(sum(l.startswith("GROUP_ID ") for l in lines) == 2
            and sum(l.startswith("CLIENT_ID ") for l in lines) == 2
            and sum(l.startswith("a1 ") for l in lines) == 2,
            "each frame shows groups and clients:\n%s" % out)
    h.check("\033" not in out, "no terminal escapes into a pipe")

    rc, out, err = env.apctl("--json", "watch", "--count", "3", "--interval", "0.1")
    h.check(rc == 0, "watch --json: rc %d %s" % (rc, err))
    lines = out.splitlines()
    h.check(len(lines) == 3, "watch --json --count 3 printed %d lines:\n%s" % (len(lines), out))
    for line in lines:
        doc = json.loads(line)
        h.check(set(doc) == {"time", "groups", "clients"}
                and doc["clients"][0]["client_id"] == "a1"
                and doc["groups"][0]["group_id"] == GROUP,
                "watch --json document: %r" % doc)

    for bad in (("--interval", "0"), ("--interval", "0.0001"), ("--interval", "x"),
                ("--count", "0"), ("--count", "-1")):
        rc, _, err = env.apctl("watch", *bad)
        h.check(rc == 2 and "bad --" in err, "watch %s: rc %d %r" % (" ".join(bad), rc, err))
    rc, _, err = env.apctl("clients", "--count", "2")
    h.check(rc == 2, "--count outside watch should be a usage error: rc %d" % rc)


def test_watch_on_a_terminal_stops_at_ctrl_c(env):
    env.gateway()
    master, slave = pty.openpty()
    before = termios.tcgetattr(master)
    p = subprocess.Popen([h.apctl_bin(), "-s", env.control, "watch", "--interval", "0.2"],
                         stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 10
        while out.count(b"apctl watch  ") < 2 and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                out += os.read(master, 65536)
        h.check(out.count(b"apctl watch  ") >= 2, "no two frames on the terminal: %r"
                % out[-300:])
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    h.check(rc == 0, "watch after Ctrl-C: rc %d %r" % (rc, p.stderr.read()))
    h.check(out.startswith(b"\033[H\033[2J"), "each frame clears the terminal: %r" % out[:40])
    after = termios.tcgetattr(master)
    os.close(master)
    h.check(after == before, "watch changed the terminal's modes")


def test_watch_without_gateway_fails(env):
    rc, out, err = h.apctl(os.path.join(env.dir, "none.sock"), "--json", "watch", "--count",
                           "1")
    h.check(rc == 1 and "cannot reach the gateway" in err, "rc %d %r" % (rc, err))
    h.check(json.loads(out).get("error"), "a failed refresh is still one JSON document: %r"
            % out)


h.run([
    test_drain_sends_new_streams_elsewhere_open_ones_finish,
    test_drained_only_client_is_no_client,
    test_drain_holds_for_the_id_across_reconnect,
    test_drain_unknown_client_fails,
    test_state_changes_need_privilege_listing_does_not,
    test_default_socket_mode_and_unknown_group,
    test_watch_frames,
    test_watch_on_a_terminal_stops_at_ctrl_c,
    test_watch_without_gateway_fails,
])
