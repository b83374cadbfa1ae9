"""The processes of a test: Daemon (one anyproxy-gateway or anyproxy-client
with its parsed log), TestEnv (one test's folder, certificates, ports and
daemons, with proxy_gateway and proxy_agent for the proxy tests), apctl
on the control socket, and ChildScript (the test script again as a helper
process). Every daemon is stopped by its own PID, also at interpreter exit.
"""

import atexit
import calendar
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .base import (FAST_CLIENT, FAST_GATEWAY, GW_PASS, GW_USER, PROXY_CLIENT, PROXY_GATEWAY,
                   PROXY_PASS, PROXY_USER, Fatal, TestFailure, _port_open, apctl_bin, check,
                   client_bin, fail, free_port, gateway_bin, slack, wait_until)
from .certificates import certs
from .servers import FakeServer


# ---- config files --------------------------------------------------------------

def add_section(path, section, keys):
    """Append [section] with keys to the INI file at path."""
    with open(path, "a") as f:
        f.write("\n[%s]\n" % section + "".join("%s = %s\n" % kv for kv in keys.items()))


def write_ini(path, sections):
    """sections: {section: {key: value}}; None values are left out."""
    lines = []
    for section, keys in sections.items():
        lines.append("[%s]" % section)
        for k, v in keys.items():
            if v is None:
                continue
            lines.append("%s = %s" % (k, v))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# ---- logs -------------------------------------------------------------------

_LINE_RE = re.compile(
    r'^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>DEBUG|INFO|WARN|ERROR) '
    r'(?P<msg>.*?)(?P<fields>(?: [A-Za-z0-9_.-]+=(?:"(?:[^"\\]|\\.)*"|[^ "=\\]+))*)$')
_FIELD_RE = re.compile(r' ([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^ "=\\]+)')


def _unquote(v):
    """Undo the logfmt quoting of src/core/log.c: \\" \\\\ \\n \\t \\xHH."""
    if not v.startswith('"'):
        return v
    body, out, i = v[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "x" and i + 3 < len(body) and re.match(r"[0-9a-f]{2}", body[i + 2:i + 4]):
                out.append(chr(int(body[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append({"n": "\n", "t": "\t"}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class LogLine:
    """One text log line: time (epoch seconds), level, msg, fields (dict)."""

    def __init__(self, raw):
        self.raw = raw
        m = _LINE_RE.match(raw)
        self.parsed = bool(m)
        self.time = None
        self.level = self.msg = None
        self.fields = {}
        if m:
            t = time.strptime(m.group("time")[:19], "%Y-%m-%dT%H:%M:%S")
            self.time = calendar.timegm(t) + int(m.group("time")[20:23]) / 1000
            self.level = m.group("level")
            self.msg = m.group("msg")
            for fm in _FIELD_RE.finditer(m.group("fields")):
                self.fields[fm.group(1)] = _unquote(fm.group(2))

    def __getitem__(self, key):
        return self.fields[key]

    def get(self, key, default=None):
        return self.fields.get(key, default)

    def __repr__(self):
        return self.raw


# ---- processes ----------------------------------------------------------------

_live = []  # every Daemon started and not yet reaped

# Environment variables that would override the configs we write (SECTION_KEY)
# are removed from the daemons' environment unless a test sets them.
_OVERRIDE_PREFIXES = ("GATEWAY_", "CLIENT_", "PROXY_HTTP_", "PROXY_SOCKS5_", "LOG_",
                      "CONTROL_", "APCTL_")


def _daemon_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OVERRIDE_PREFIXES)}
    for k, v in (extra or {}).items():
        env[k] = str(v)
    return env


class Daemon:
    """One anyproxy-gateway or anyproxy-client process; its stdout and
    stderr (the log, by default on stderr) go to NAME.log in the test folder."""

    def __init__(self, env, kind, name, config, extra_env=None, args=()):
        self.testenv = env
        self.kind = kind  # "gateway" or "client"
        self.name = name
        self.config = config
        self.extra_env = dict(extra_env or {})
        self.args = list(args)
        self.log_path = os.path.join(env.dir, name + ".log")
        self.proc = None
        self.rc = None
        self.hard_killed = False
        self.expect_unclean = False  # the test killed it on purpose
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        check(self.proc is None or self.proc.poll() is not None, "%s already running" % self.name)
        binary = gateway_bin() if self.kind == "gateway" else client_bin()
        with open(self.log_path, "ab") as log:
            log.write(b"" if self.starts == 0 else b"--- restart ---\n")
            self.proc = subprocess.Popen([binary, "-c", self.config] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.testenv.dir, env=_daemon_env(self.extra_env))
        self.starts += 1
        self.rc = None
        self.hard_killed = False
        self.expect_unclean = False
        _live.append(self)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        check(self.alive(), "%s (pid %d) is not running (rc %s); log:\n%s"
              % (self.name, self.proc.pid, self.proc.poll(), self.tail()))
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        """Wait for the process to exit; returns its exit code."""
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("%s (pid %d) did not exit within %.1f s" % (self.name, self.proc.pid, timeout))
        if self in _live:
            _live.remove(self)
        return self.rc

    def kill9(self):
        """SIGKILL by PID and reap (the test's own choice: not a failure)."""
        self.expect_unclean = True
        os.kill(self.proc.pid, signal.SIGKILL)
        return self.wait_exit(10)

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """SIGCONT (in case a test stopped it), sig, then SIGKILL after
        timeout. Returns the exit code; never raises."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            for s in (signal.SIGCONT, sig):
                try:
                    os.kill(self.proc.pid, s)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.hard_killed = True
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.rc = self.proc.returncode
        if self in _live:
            _live.remove(self)
        return self.rc

    # -- the log --

    def log_bytes(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def log(self):
        return self.log_bytes().decode("utf-8", "replace")

    def mark(self):
        """An offset into the log: pass as since= to look only at later lines."""
        return len(self.log_bytes())

    def lines(self, since=0):
        text = self.log_bytes()[since:].decode("utf-8", "replace")
        return [LogLine(l) for l in text.splitlines()]

    def find(self, pattern, since=0):
        """Lines containing pattern (a str, or a compiled regex)."""
        out = []
        for line in self.lines(since):
            if isinstance(pattern, str):
                if pattern in line.raw:
                    out.append(line)
            elif pattern.search(line.raw):
                out.append(line)
        return out

    def wait_for_log(self, pattern, timeout, since=0, count=1):
        """Wait until `count` lines match; returns the last one of them."""
        def found():
            hits = self.find(pattern, since)
            if len(hits) >= count:
                return hits[count - 1]
            if not self.alive():
                raise Fatal("%s exited (rc %s) before logging %r" % (self.name, self.proc.poll(),
                                                             getattr(pattern, "pattern", pattern)))
            return None
        try:
            return wait_until(found, timeout, "%s to log %r%s" % (
                self.name, getattr(pattern, "pattern", pattern),
                " %d times" % count if count > 1 else ""))
        except TestFailure as e:
            fail("%s\n--- %s log (tail) ---\n%s" % (e, self.name, self.tail()))

    def tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def sanitizer_report(self):
        text = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer",
                       "SUMMARY: UndefinedBehaviorSanitizer"):
            if marker in text:
                return marker
        return None


def _reap_all():
    for d in list(_live):
        d.stop(timeout=5)


atexit.register(_reap_all)


# ---- control socket ----------------------------------------------------------

def apctl(socket_path, *args, timeout=10, env=None):
    """Run apctl -s SOCKET ARGS...; returns (rc, stdout, stderr)."""
    cmd = [apctl_bin()]
    if socket_path is not None:
        cmd += ["-s", socket_path]
    cmd += [str(a) for a in args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=_daemon_env(env))
    except subprocess.TimeoutExpired:
        fail("apctl %s did not finish within %d s" % (" ".join(map(str, args)), timeout))
    return r.returncode, r.stdout, r.stderr


def parse_table(text):
    """apctl's aligned output -> (header list, rows as lists)."""
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines:
        return [], []
    header = lines[0].split()
    return header, [l.split() for l in lines[1:]]


def parse_kv(text):
    out = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


# ---- one test's world ------------------------------------------------------------

_base_dir = None


def _base():
    global _base_dir
    if _base_dir is None:
        _base_dir = tempfile.mkdtemp(prefix="ap-itest-")
    return _base_dir


class TestEnv:
    """A temporary folder with certificates, a free tunnel port and a control
    socket path; starts daemons into it and stops them all in cleanup()."""

    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=name[:20] + "-", dir=_base())
        self.certs = certs("main")
        self.port = free_port()
        self.control = os.path.join(self.dir, "gw.sock")
        self.daemons = []
        self.servers = []
        self.gw = None

    # -- config files --

    def gateway_config(self, name="gateway", port=None, control=None, **keys):
        """keys go to [gateway], but log_level to [log] and control_keys (a
        dict) to [control]."""
        gw = {
            "listen_addr": "127.0.0.1:%d" % (port or self.port),
            "tls_cert": os.path.join(self.certs, "server.crt"),
            "tls_key": os.path.join(self.certs, "server.key"),
            "auth_username": GW_USER,
            "auth_password": GW_PASS,
        }
        gw.update({k: v for k, v in FAST_GATEWAY.items()})
        log = {"level": keys.pop("log_level", "debug")}
        control_keys = {"socket": control or self.control}
        control_keys.update(keys.pop("control_keys", {}))
        gw.update(keys)
        return write_ini(os.path.join(self.dir, name + ".ini"), {
            "gateway": gw,
            "control": control_keys,
            "log": log,
        })

    def client_config(self, name, client_id, group_id=None, replicas=None, port=None, **keys):
        cl = {
            "gateway_addr": "127.0.0.1:%d" % (port or self.port),
            "gateway_tls_cert": os.path.join(self.certs, "ca.crt"),
            "gateway_server_name": "localhost",
            "client_id": client_id,
            "group_id": group_id,
            "replicas": replicas,
            "auth_username": GW_USER,
            "auth_password": GW_PASS,
        }
        cl.update(FAST_CLIENT)
        log = {"level": keys.pop("log_level", "debug")}
        cl.update(keys)
        return write_ini(os.path.join(self.dir, name + ".ini"), {"client": cl, "log": log})

    # -- daemons --

    def start(self, kind, name, config, env=None, args=()):
        d = Daemon(self, kind, name, config, env, args)
        self.daemons.append(d)
        return d.start()

    def gateway(self, name="gateway", wait=True, env=None, **keys):
        """Start a gateway on self.port with the fast test timings; waits until
        it has logged "Gateway started" and apctl answers."""
        config = self.gateway_config(name, **keys)
        gw = self.start("gateway", name, config, env)
        if self.gw is None or not self.gw.alive():
            self.gw = gw
        if wait:
            self.wait_gateway_ready(gw)
        return gw

    def wait_gateway_ready(self, gw, timeout=None, since=0, socket_path=None):
        gw.wait_for_log("Gateway started", timeout or 5 + slack(), since=since)
        path = socket_path or self.control

        def answers():
            rc, _, _ = apctl(path, "groups")
            return rc == 0
        wait_until(answers, 5 + slack(), "apctl to answer on %s" % path)

    def agent(self, client_id, group_id=None, replicas=None, name=None, wait=True, env=None,
              config=None, **keys):
        """Start an agent; with wait (default) waits until apctl lists it with
        all its tunnels."""
        name = name or "agent-" + client_id
        if config is None:
            config = self.client_config(name, client_id, group_id, replicas, **keys)
        d = self.start("client", name, config, env)
        if wait:
            self.wait_listed(client_id, tunnels=replicas or 1, daemon=d)
        return d

    # -- apctl --

    def apctl(self, *args, socket_path=None, timeout=10):
        return apctl(socket_path or self.control, *args, timeout=timeout)

    def apctl_json(self, *args, socket_path=None):
        rc, out, err = self.apctl("--json", *args, socket_path=socket_path)
        check(rc == 0, "apctl --json %s failed (rc %d): %s" % (" ".join(args), rc, err))
        try:
            return json.loads(out)
        except ValueError as e:
            fail("apctl --json %s printed invalid JSON (%s): %r" % (" ".join(args), e, out))

    def clients(self, socket_path=None):
        return {c["client_id"]: c for c in self.apctl_json("clients", socket_path=socket_path)}

    def groups(self, socket_path=None):
        return {g["group_id"]: g for g in self.apctl_json("groups", socket_path=socket_path)}

    def wait_listed(self, client_id, tunnels=None, timeout=None, daemon=None, socket_path=None):
        """Wait until apctl lists client_id (with `tunnels` tunnels); returns its row."""
        def listed():
            if daemon is not None and not daemon.alive():
                raise Fatal("%s exited (rc %s); log:\n%s" % (daemon.name, daemon.proc.poll(),
                                                     daemon.tail()))
            c = self.clients(socket_path).get(client_id)
            if c and (tunnels is None or c["tunnels"] == tunnels):
                return c
            return None
        try:
            return wait_until(listed, timeout or 5 + slack(2),
                              "apctl to list %s%s" % (client_id, " with %d tunnels" % tunnels
                                                      if tunnels else ""))
        except TestFailure as e:
            logs = ""
            if daemon is not None:
                logs += "\n--- %s log ---\n%s" % (daemon.name, daemon.tail())
            if self.gw is not None:
                logs += "\n--- gateway log ---\n%s" % self.gw.tail()
            fail(str(e) + logs)

    def wait_gone(self, client_id, timeout, socket_path=None):
        return wait_until(lambda: client_id not in self.clients(socket_path), timeout,
                          "apctl to stop listing %s" % client_id, interval=0.02)

    def fake_server(self, greeting=None, port=0):
        s = FakeServer(port, greeting)
        self.servers.append(s)
        return s

    # -- teardown --

    def cleanup(self):
        """Stop every daemon (SIGTERM, then SIGKILL); returns problems found:
        unclean exits of daemons we stopped, sanitizer reports."""
        problems = []
        for d in reversed(self.daemons):
            was_running = d.alive()
            rc = d.stop(timeout=10)
            if was_running and not d.expect_unclean:
                if d.hard_killed:
                    problems.append("%s (pid %d) ignored SIGTERM for 10 s and was killed"
                                    % (d.name, d.pid))
                elif rc != 0:
                    problems.append("%s (pid %d) exited %s after SIGTERM" % (d.name, d.pid, rc))
            report = d.sanitizer_report()
            if report:
                problems.append("%s log holds a sanitizer report (%s)" % (d.name, report))
        for s in self.servers:
            s.close()
        return problems

    def dump_logs(self, n=30):
        out = []
        for d in self.daemons:
            out.append("--- %s (%s) log, last %d lines ---" % (d.name, d.log_path, n))
            out.append(d.tail(n))
        return "\n".join(out)


# ---- proxy tests: a gateway with its proxies ----------------------------------

def proxy_gateway(env, name="gateway", http=True, socks5=True, user=PROXY_USER,
                  password=PROXY_PASS, wait=True, gw_env=None, https=False, metrics=False,
                  listener_auth=None, **keys):
    """Start a gateway with [proxy.http] and [proxy.socks5] listeners on free
    127.0.0.1 ports (http / socks5 False: that listener is off; user None: no
    proxy authentication). https True adds [proxy.https] with env.certs'
    server certificate; metrics True adds [metrics] (scrape it with
    scrape_metrics(gw.metrics_port)). listener_auth maps a section
    ("proxy.https") to the (user, password) of that listener alone. The
    Daemon gets .http_port, .socks_port, .https_port and .metrics_port."""
    merged = dict(PROXY_GATEWAY)
    merged.update(keys)
    config = env.gateway_config(name, **merged)
    http_port = free_port() if http else None
    socks_port = free_port() if socks5 else None
    https_port = free_port() if https else None
    metrics_port = free_port() if metrics else None
    extra = {}
    for section, port in (("proxy.http", http_port), ("proxy.socks5", socks_port),
                          ("proxy.https", https_port)):
        if section == "proxy.https" and not port:
            continue  # no section at all: the file stays as before
        keys_ = {"listen_addr": "127.0.0.1:%d" % port if port else ""}
        auth = (listener_auth or {}).get(section, (user, password))
        if port and auth[0] is not None:
            keys_["auth_username"], keys_["auth_password"] = auth
        if port and section == "proxy.https":
            keys_["tls_cert"] = os.path.join(env.certs, "server.crt")
            keys_["tls_key"] = os.path.join(env.certs, "server.key")
        extra[section] = keys_
    if metrics_port:
        extra["metrics"] = {"listen_addr": "127.0.0.1:%d" % metrics_port}
    with open(config) as f:
        text = f.read()
    lines = []
    for section, kv in extra.items():
        lines.append("[%s]" % section)
        lines += ["%s = %s" % (k, v) for k, v in kv.items()]
        lines.append("")
    with open(config, "w") as f:
        f.write(text + "\n" + "\n".join(lines))
    gw = env.start("gateway", name, config, gw_env)
    gw.http_port = http_port
    gw.socks_port = socks_port
    gw.https_port = https_port
    gw.metrics_port = metrics_port
    if env.gw is None or not env.gw.alive():
        env.gw = gw
    if wait:
        env.wait_gateway_ready(gw)
        for port in (http_port, socks_port, https_port, metrics_port):
            if port:
                wait_until(lambda: _port_open("127.0.0.1", port), 5 + slack(),
                           "the proxy listener on 127.0.0.1:%d" % port)
    return gw


def proxy_agent(env, client_id, group_id=None, replicas=None, **keys):
    """env.agent() with the relaxed ping timings of PROXY_CLIENT."""
    merged = dict(PROXY_CLIENT)
    merged.update(keys)
    return env.agent(client_id, group_id=group_id, replicas=replicas, **merged)


# ---- helper processes ----------------------------------------------------------

def end_child(proc, timeout=5):
    """End a peer the test started (haproxy, tinyproxy: a subprocess.Popen)
    by its PID: SIGTERM, then SIGKILL after timeout; always reaps it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ChildScript:
    """The running test script started again as a helper process with args
    (its own `if "--x" in sys.argv` branch), speaking lines on stdin/stdout.
    Used where one process cannot hold enough sockets (the 20000-fd cap)."""

    def __init__(self, args):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(sys.argv[0])] + args,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink(line)

    def line(self, timeout, what):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            fail("%s: no answer within %.0f s (stderr: %s)" % (what, timeout,
                                                              "".join(self.err)[-500:]))

    def say(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout=30):
        """Close its stdin (the helper's signal to end) and reap it."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
