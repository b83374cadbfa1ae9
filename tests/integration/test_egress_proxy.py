#!/usr/bin/env python3
"""Agents whose network only allows HTTP egress (issue 13, item 4):
[client] egress_proxy = http://[user:password@]host:port.

Through Debian's tinyproxy (run here in the foreground as the test's child,
on a free loopback port, CONNECT allowed to the gateway's tunnel port only,
Basic authentication, outgoing connections bound to 127.0.0.2):
- with the right credentials every tunnel goes through the proxy: the
  gateway sees the agent's tunnels coming from 127.0.0.2 (tinyproxy's
  outgoing address; a direct dial would come from 127.0.0.1), and requests
  through the gateway reach the target; the gateway's certificate is still
  checked against gateway_server_name (not the proxy's name);
- without credentials tinyproxy answers 407, with wrong ones 401 (what
  tinyproxy 1.11 sends): each is one WARN naming the status and reason,
  then a retry with the link's backoff; a SIGHUP with the right password
  connects on the next attempt;
- nothing listening on the proxy's port: the connect error is logged and
  retried until a proxy comes up there.

Through fake proxies (raw servers): an answer that is not HTTP, a proxy
that closes after the request, one that never answers (the handshake
deadline), each a clean WARN and a retry; a proxy given by name
(localhost, resolved on the resolver thread) whose 200 comes one byte at a
time and then relays works; bytes right after the 200 head go to TLS,
not away (a TLS alert there fails the handshake at once, where dropping it
would leave the agent waiting for the gateway until the deadline).

The proxy password never appears in any log, and --check-config refuses a
bad URL naming the key without repeating it.
"""
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# tinyproxy's BasicAuth takes [-A-Za-z0-9._] only
PROXY_USER = "egress-agent"
PROXY_PASS = "itest-Egress-Secret-7c41"
WRONG_PASS = "itest-Egress-Wrong-d09e"
# what the URL must percent-encode ('@', '%', ':' in the user name) or may
# keep (':' in the password); the fake proxies check the decoded values
ODD_USER = "agent@corp%x"
ODD_PASS = "itest-Egress:Odd@Secret%51"
BIND_ADDR = "127.0.0.2"          # tinyproxy's outgoing address
ATTEMPTS = 3                     # failed attempts each failure case waits for


def url(port, user=PROXY_USER, password=PROXY_PASS, host="127.0.0.1"):
    enc = lambda s: s.replace("%", "%25").replace("@", "%40").replace(":", "%3A")  # noqa: E731
    cred = "%s:%s@" % (enc(user), enc(password)) if user is not None else ""
    return "http://%s%s:%d" % (cred, host, port)


class Tinyproxy:
    """tinyproxy -d (foreground, a child of the test): CONNECT only to
    connect_port, Basic authentication, outgoing connections from BIND_ADDR;
    ended by its PID."""

    def __init__(self, env, connect_port, port=None):
        binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
        h.check(os.access(binary, os.X_OK),
                "tinyproxy is not installed (tools/setup.sh installs Debian's package)")
        self.port = port or h.free_port()
        self.config = os.path.join(env.dir, "tinyproxy-%d.conf" % self.port)
        with open(self.config, "w") as f:
            f.write("\n".join([
                "Port %d" % self.port,
                "Listen 127.0.0.1",
                "Bind %s" % BIND_ADDR,
                "Timeout 30",
                "MaxClients 50",
                "LogLevel Connect",
                "Allow 127.0.0.1",
                "ConnectPort %d" % connect_port,
                "BasicAuth %s %s" % (PROXY_USER, PROXY_PASS),
                "DisableViaHeader Yes",
            ]) + "\n")
        self.log_path = os.path.join(env.dir, "tinyproxy-%d.log" % self.port)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "-d", "-c", self.config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=env.dir)
        env.servers.append(self)  # close() at clean-up
        h.wait_until(lambda: self.proc.poll() is None and h._port_open("127.0.0.1", self.port),
                     5 + h.slack(), "tinyproxy to listen (log: %s)" % self.log_path)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        h.end_child(self.proc)


def read_head(conn):
    """The request head a proxy receives (up to the blank line)."""
    data = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def relay(a, b):
    """Copy both ways until either side closes."""
    def pump(src, dst):
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(10)


def fake_proxy(env, answer=None, close=False, silent=False, trickle=False, gateway_port=None):
    """A raw server acting as the proxy: answer (bytes) after the request; or
    close at once; or say nothing; or (trickle) send a 200 one byte at a time
    and then relay to the gateway. Records every request head."""
    heads = []

    def handler(conn):
        head = read_head(conn)
        heads.append(head)
        if close:
            return
        if silent:
            conn.settimeout(30)
            try:
                conn.recv(1)  # until the agent gives up
            except OSError:
                pass
            return
        if trickle:
            up = socket.create_connection(("127.0.0.1", gateway_port), timeout=10)
            for b in b"HTTP/1.1 200 Connection established\r\nVia: 1.1 fake\r\n\r\n":
                conn.sendall(bytes([b]))
                time.sleep(0.005)
            relay(conn, up)
            return
        conn.sendall(answer)
        conn.settimeout(10)
        try:
            while conn.recv(4096):  # until the agent closes
                pass
        except OSError:
            pass
    s = h.RawServer(handler)
    env.servers.append(s)
    s.heads = heads
    return s


def check_no_secret(env):
    for d in env.daemons:
        for secret in (PROXY_PASS, WRONG_PASS, ODD_PASS, "Odd%40Secret"):
            h.check(secret not in d.log(), "%s's log holds the proxy password" % d.name)


def wait_failures(agent, since, reason_re, count=ATTEMPTS):
    """Wait for count "Reconnecting to gateway" lines whose reason matches,
    with attempts counting up and the backoff's delay in bounds."""
    line = agent.wait_for_log(re.compile(r"Reconnecting to gateway.*reason=.*" + reason_re),
                              10 + h.slack(5), since=since, count=count)
    lines = agent.find("Reconnecting to gateway", since)
    attempts = [int(l["attempt"]) for l in lines]
    h.check(attempts[:count] == list(range(attempts[0], attempts[0] + count)),
            "attempts should count up: %r" % attempts)
    ceilings = [int(l["max_delay_ms"]) for l in lines]
    h.check(ceilings == sorted(ceilings) and ceilings[-1] <= h.RECONNECT_MAX_MS,
            "the backoff ceiling should grow up to the cap: %r" % ceilings)
    for l in lines:
        h.check(int(l["delay_ms"]) <= int(l["max_delay_ms"]), "delay beyond its ceiling: %r" % l)
    return line


def request_ok(gw, target, user):
    r = h.curl(["-x", "http://%s:%s@127.0.0.1:%d" % (user, h.PROXY_PASS, gw.http_port),
                "--max-time", "15", target.url("/info")], timeout=20)
    h.check(r.returncode == 0 and b'"server"' in r.stdout,
            "request through the gateway failed: rc %d %r" % (r.returncode, r.stderr[-300:]))


# ---- through tinyproxy ----------------------------------------------------------------

def test_through_tinyproxy(env):
    gw = h.proxy_gateway(env)
    target = h.HttpTarget("127.0.0.1", name="egress")
    env.servers.append(target)
    tp = Tinyproxy(env, env.port)
    agent = h.proxy_agent(env, "egress-1", group_id="corp", replicas=2,
                          egress_proxy=url(tp.port))
    c = env.wait_listed("egress-1", tunnels=2, daemon=agent)
    # the gateway sees the proxy's outgoing address, never the agent's own
    h.check(c["remote_addr"].startswith(BIND_ADDR + ":"),
            "tunnel should come from tinyproxy (%s): %r" % (BIND_ADDR, c["remote_addr"]))
    for line in gw.find("Client connected"):
        h.check(line["remote_addr"].startswith(BIND_ADDR + ":"),
                "a tunnel did not come through the proxy: %r" % line)
    started = agent.find("Dialling the gateways through the egress proxy")
    h.check(started and started[0]["proxy"] == "127.0.0.1:%d" % tp.port and
            started[0]["authentication"] == "basic", "start line: %r" % started)
    # the gateway lists a tunnel once HELLO_OK is out: the agent's line may lag
    agent.wait_for_log("Connected to gateway", 5 + h.slack(), count=2)
    connected = agent.find("Connected to gateway")
    h.check(len(connected) == 2 and all(l["address"] == "127.0.0.1:%d" % tp.port
                                        for l in connected),
            "tunnels should be to the proxy's address: %r" % connected)
    h.check(tp.log().count("CONNECT 127.0.0.1:%d HTTP/1.1" % env.port) >= 2,
            "tinyproxy should have seen two CONNECTs:\n%s" % tp.log()[-2000:])
    for _ in range(4):
        request_ok(gw, target, h.PROXY_USER + ".corp")
    h.check(not agent.find("Reconnecting to gateway"), "no attempt should have failed")
    check_no_secret(env)


def test_tinyproxy_refusals_then_reload(env):
    h.proxy_gateway(env)
    tp = Tinyproxy(env, env.port)
    # no credentials: 407
    agent = h.proxy_agent(env, "egress-none", wait=False, egress_proxy=url(tp.port, user=None))
    agent.wait_for_log(re.compile(r"Egress proxy refused CONNECT.* status=407"), 10 + h.slack())
    refused = agent.find("Egress proxy refused CONNECT")[0]
    h.check(refused.level == "WARN" and refused["reason"] == "Proxy Authentication Required" and
            refused["proxy"] == "127.0.0.1:%d" % tp.port and
            refused["gateway"] == "127.0.0.1:%d" % env.port, "refusal line: %r" % refused)
    wait_failures(agent, 0, "egress proxy refused CONNECT: 407")
    agent.stop()

    # wrong password: tinyproxy 1.11 answers 401; retried with backoff
    name = "agent-egress-wrong"
    agent = h.proxy_agent(env, "egress-wrong", name=name, wait=False,
                          egress_proxy=url(tp.port, password=WRONG_PASS))
    wait_failures(agent, 0, "egress proxy refused CONNECT: 401 Unauthorized")
    lines = agent.find("Egress proxy refused CONNECT")
    h.check(len(lines) >= ATTEMPTS and all(l["status"] == "401" for l in lines),
            "each attempt should be refused once: %r" % lines)
    h.check("egress-wrong" not in env.clients(), "the agent must not be connected")
    # fix the password and reload: the next dial uses it
    env.client_config(name, "egress-wrong", **dict(h.PROXY_CLIENT, egress_proxy=url(tp.port)))
    mark = agent.mark()
    agent.send_signal(signal.SIGHUP)
    agent.wait_for_log("The next dials go through the egress proxy", 5 + h.slack(), since=mark)
    c = env.wait_listed("egress-wrong", tunnels=1, daemon=agent, timeout=10 + h.slack(5))
    h.check(c["remote_addr"].startswith(BIND_ADDR + ":"), "through the proxy: %r" % c)
    check_no_secret(env)


def test_proxy_down_then_up(env):
    h.proxy_gateway(env)
    port = h.free_port()  # nothing listens there yet
    agent = h.proxy_agent(env, "egress-down", wait=False, egress_proxy=url(port))
    wait_failures(agent, 0, r"egress proxy: connect to 127\.0\.0\.1:%d: Connection refused"
                  % port)
    Tinyproxy(env, env.port, port=port)
    c = env.wait_listed("egress-down", tunnels=1, daemon=agent, timeout=10 + h.slack(5))
    h.check(c["remote_addr"].startswith(BIND_ADDR + ":"), "through the proxy: %r" % c)


# ---- through fake proxies ----------------------------------------------------------------

def test_proxy_answers_garbage(env):
    h.proxy_gateway(env)
    fp = fake_proxy(env, answer=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    agent = h.proxy_agent(env, "egress-garbage", wait=False,
                          egress_proxy=url(fp.port, ODD_USER, ODD_PASS))
    wait_failures(agent, 0, "egress proxy: malformed answer to CONNECT")
    line = agent.find("Egress proxy sent a malformed answer to CONNECT")[0]
    h.check(line.level == "WARN" and line["error"], "malformed line: %r" % line)
    # what the agent asked: CONNECT to the gateway with the decoded credentials
    head = fp.heads[0].decode()
    want = ("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Proxy-Authorization: Basic %s\r\n\r\n"
            % (env.port, env.port, base64.b64encode(("%s:%s" % (ODD_USER, ODD_PASS)).encode())
               .decode()))
    h.check(head == want, "request: %r, want %r" % (head, want))
    check_no_secret(env)


def test_proxy_closes_early(env):
    h.proxy_gateway(env)
    fp = fake_proxy(env, close=True)
    agent = h.proxy_agent(env, "egress-close", wait=False, egress_proxy=url(fp.port))
    wait_failures(agent, 0, "egress proxy: closed the connection before answering CONNECT")


def test_proxy_silent(env):
    h.proxy_gateway(env)
    fp = fake_proxy(env, silent=True)
    agent = h.proxy_agent(env, "egress-silent", wait=False, egress_proxy=url(fp.port))
    wait_failures(agent, 0, "egress proxy: no answer to CONNECT in time", count=2)
    lines = agent.find("Egress proxy did not answer CONNECT in time")
    h.check(len(lines) >= 2 and lines[0].level == "WARN", "timeout lines: %r" % lines)
    # SIGTERM while the proxy keeps the next CONNECT waiting: the agent
    # stops at once (exit 0), it does not sit out the deadline
    h.wait_until(lambda: len(fp.heads) > len(lines), 5 + h.slack(), "the next CONNECT")
    mark = agent.mark()
    h.check(agent.stop() == 0, "the agent should stop cleanly")
    h.check(not agent.find("did not answer CONNECT in time", since=mark),
            "the agent waited for the deadline: %s" % agent.tail())


def test_proxy_answer_in_pieces(env):
    h.proxy_gateway(env)
    fp = fake_proxy(env, trickle=True, gateway_port=env.port)
    # a name: resolved on the resolver thread (then every address tried)
    agent = h.proxy_agent(env, "egress-trickle",
                          egress_proxy=url(fp.port, user=None, host="localhost"))
    h.check("Proxy-Authorization" not in fp.heads[0].decode(),
            "no credentials were configured: %r" % fp.heads[0])
    h.check(not agent.find("Reconnecting to gateway"), "no attempt should have failed")
    started = agent.find("Dialling the gateways through the egress proxy")
    h.check(started and started[0]["proxy"] == "localhost:%d" % fp.port and
            started[0]["authentication"] == "none", "start line: %r" % started)


def test_bytes_after_the_head_go_to_tls(env):
    h.proxy_gateway(env)
    # a TLS alert record (fatal, handshake_failure) right behind the 200
    alert = b"\x15\x03\x03\x00\x02\x02\x28"
    fp = fake_proxy(env, answer=b"HTTP/1.1 200 Connection established\r\n\r\n" + alert)
    agent = h.proxy_agent(env, "egress-tls", wait=False, egress_proxy=url(fp.port))
    line = agent.wait_for_log("Gateway connection failed", 5 + h.slack())
    h.check("timed out" not in line["reason"] and "deadline" not in line["reason"],
            "the alert should have failed TLS at once, not the deadline: %r" % line)
    first = agent.lines()[0].time
    h.check(line.time - first < h.HANDSHAKE_TIMEOUT,
            "TLS failed only after the handshake deadline: %r" % line)


def test_check_config(env):
    cert = os.path.join(env.certs, "ca.crt")
    base = ["[client]", "gateway_addr = 127.0.0.1:%d" % env.port,
            "gateway_tls_cert = %s" % cert, "client_id = cfg", "auth_username = u",
            "auth_password = p"]
    for value, needle in ((url(3128), None),
                          ("https://u:%s@proxy:3128" % PROXY_PASS, "https:// proxy"),
                          ("http://u:%s@proxy" % PROXY_PASS, "missing ':port'"),
                          ("http://u:%s@proxy:3128/x" % PROXY_PASS, "no path")):
        path = os.path.join(env.dir, "check.ini")
        with open(path, "w") as f:
            f.write("\n".join(base + ["egress_proxy = %s" % value]) + "\n")
        r = subprocess.run([h.client_bin(), "-c", path, "--check-config"], capture_output=True,
                           text=True, timeout=30, env=h._daemon_env({}))
        out = r.stdout + r.stderr
        h.check(PROXY_PASS not in out and PROXY_PASS.replace(":", "%3A") not in out,
                "--check-config repeats the password: %r" % out)
        if needle is None:
            h.check(r.returncode == 0 and "is valid" in r.stdout, "valid: %r" % out)
        else:
            h.check(r.returncode == 2 and "%s:7: [client] egress_proxy: " % path in r.stderr and
                    needle in r.stderr, "refused %r: %r" % (value, out))


if __name__ == "__main__":
    h.run([test_through_tinyproxy, test_tinyproxy_refusals_then_reload, test_proxy_down_then_up,
           test_proxy_answers_garbage, test_proxy_closes_early, test_proxy_silent,
           test_proxy_answer_in_pieces, test_bytes_after_the_head_go_to_tls,
           test_check_config])
