"""harness.py — shared helpers for anyproxy's integration tests.

Python 3 standard library only. A test file is a script:

    import harness as h

    def test_something(env):
        gw = env.gateway()
        env.agent("a1", group_id="g")
        ...

    if __name__ == "__main__":
        h.run([test_something])

h.run() gives every case a fresh TestEnv (a temporary folder, a free tunnel
port, a control socket path, generated certificates), prints "ok - NAME" or
"not ok - NAME" per case and exits 0 only when every case passed (never 77).

Rules every helper keeps:
- all traffic is on 127.0.0.1; ports come from binding port 0;
- every process is started here, recorded, and stopped by its own PID
  (SIGCONT, SIGTERM, then SIGKILL after a timeout), also when an assertion
  fails and at interpreter exit;
- every wait is bounded and fails with a message saying what it waited for;
- a daemon stopped by the clean-up must exit 0, and its log must hold no
  sanitizer report: a crash, leak or unclean exit fails the case.

The binaries come from $AP_BUILD_DIR (meson sets it; run by hand with
AP_BUILD_DIR=build python3 tests/integration/test_x.py).
"""

import atexit
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
GEN_CERTS = os.path.join(REPO, "tools", "gen-certs.sh")

# ---- timing used by every test (milliseconds in configs, seconds here) ----

HANDSHAKE_TIMEOUT_MS = 1500
PING_INTERVAL_MS = 300
PING_TIMEOUT_MS = 1500
RECONNECT_INITIAL_MS = 100
RECONNECT_MAX_MS = 1000

HANDSHAKE_TIMEOUT = HANDSHAKE_TIMEOUT_MS / 1000
PING_INTERVAL = PING_INTERVAL_MS / 1000
PING_TIMEOUT = PING_TIMEOUT_MS / 1000
RECONNECT_MAX = RECONNECT_MAX_MS / 1000

FAST_GATEWAY = {
    "handshake_timeout_ms": HANDSHAKE_TIMEOUT_MS,
    "ping_interval_ms": PING_INTERVAL_MS,
    "ping_timeout_ms": PING_TIMEOUT_MS,
}
FAST_CLIENT = {
    "handshake_timeout_ms": HANDSHAKE_TIMEOUT_MS,
    "ping_interval_ms": PING_INTERVAL_MS,
    "ping_timeout_ms": PING_TIMEOUT_MS,
    "reconnect_initial_delay_ms": RECONNECT_INITIAL_MS,
    "reconnect_max_delay_ms": RECONNECT_MAX_MS,
}

# Gateway credentials used by default. Distinctive so that a test can grep
# every log for them: a secret must never be logged.
GW_USER = "itest_gateway_user"
GW_PASS = "itest-Gw-Secret-5b2e91"

# Environment variables that would override the configs we write (SECTION_KEY)
# are removed from the daemons' environment unless a test sets them.
_OVERRIDE_PREFIXES = ("GATEWAY_", "CLIENT_", "PROXY_HTTP_", "PROXY_SOCKS5_", "LOG_",
                      "CONTROL_", "APCTL_")


class TestFailure(AssertionError):
    pass


class Fatal(TestFailure):
    """A failure that no amount of waiting repairs (a daemon exited)."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


# ---- binaries ----------------------------------------------------------------

def _bail(msg):
    print("Bail out! " + msg, flush=True)
    sys.exit(1)


def build_dir():
    d = os.environ.get("AP_BUILD_DIR")
    if not d:
        _bail("AP_BUILD_DIR is not set: point it at a meson build folder, e.g. "
              "AP_BUILD_DIR=build python3 " + " ".join(sys.argv))
    return os.path.abspath(d)


def _binary(rel):
    path = os.path.join(build_dir(), rel)
    if not os.access(path, os.X_OK):
        _bail("%s is missing or not executable: build first (ninja -C %s)" % (path, build_dir()))
    return path


def gateway_bin():
    return _binary("src/gateway/anyproxy-gateway")


def client_bin():
    return _binary("src/client/anyproxy-client")


def apctl_bin():
    return _binary("tools/apctl/apctl")


_sanitized = None


def sanitized_build():
    """True when the daemons carry ASan/UBSan (they run slower: more slack)."""
    global _sanitized
    if _sanitized is None:
        try:
            with open(gateway_bin(), "rb") as f:
                data = f.read()
            _sanitized = b"__asan_init" in data or b"__ubsan_handle" in data
        except OSError:
            _sanitized = False
    return _sanitized


def slack(seconds=1.0):
    """Extra time allowed on top of a deadline the daemons promise."""
    return seconds * (3 if sanitized_build() else 1)


# ---- small utilities -----------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it returns a true value (returned) or fail."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Fatal:
            raise
        except TestFailure as e:  # predicates may use check(): keep polling
            last_exc = e
        if time.monotonic() >= deadline:
            extra = " (last error: %s)" % last_exc if last_exc else ""
            fail("timed out after %.1f s waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


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


_certs_root = None
_certs_cache = {}


def certs(name="main"):
    """A folder with ca.crt, server.crt, server.key from tools/gen-certs.sh.
    Each name is a separate CA (use a second name for a "wrong CA")."""
    global _certs_root
    if name in _certs_cache:
        return _certs_cache[name]
    if _certs_root is None:
        _certs_root = tempfile.mkdtemp(prefix="ap-itest-certs-")
        atexit.register(shutil.rmtree, _certs_root, True)
    d = os.path.join(_certs_root, name)
    r = subprocess.run(["bash", GEN_CERTS, d], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0,
          "tools/gen-certs.sh %s failed (rc %d): %s" % (d, r.returncode, r.stderr))
    for f in ("ca.crt", "server.crt", "server.key"):
        check(os.path.getsize(os.path.join(d, f)) > 0, "gen-certs.sh made no %s" % f)
    _certs_cache[name] = d
    return d


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
            self.time = _timegm(t) + int(m.group("time")[20:23]) / 1000
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


def _timegm(t):
    import calendar
    return calendar.timegm(t)


# ---- processes ----------------------------------------------------------------

_live = []  # every Daemon started and not yet reaped


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
                       "ERROR: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer"):
            if marker in text:
                return marker
        return None


def _reap_all():
    for d in list(_live):
        d.stop(timeout=5)


atexit.register(_reap_all)


def _on_term(signo, frame):
    # meson's timeout (or a user) stops us: leave no daemon behind
    raise SystemExit(128 + signo)


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


# ---- tunnel frames (docs/protocol.md, include/anyproxy/frame.h) -------------------

FRAME_HELLO, FRAME_HELLO_OK, FRAME_ERROR = 0x01, 0x02, 0x03
FRAME_PING, FRAME_PONG, FRAME_GOAWAY = 0x20, 0x21, 0x22
ERR_AUTH, ERR_VERSION, ERR_BAD_HELLO, ERR_REPLACED, ERR_PROTOCOL = 1, 2, 3, 4, 5


def frame(ftype, payload=b"", stream_id=0, flags=0, length=None):
    if length is None:
        length = len(payload)
    return struct.pack(">BBHI", ftype, flags, length, stream_id) + payload


def str8(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def hello(client_id, group_id="", username=GW_USER, password=GW_PASS, version=1,
          replica=0, capabilities=0, instance=0x1234567890ABCDEF):
    payload = struct.pack(">BBHIQ", version, 0, replica, capabilities, instance)
    payload += str8(client_id) + str8(group_id) + str8(username) + str8(password)
    return frame(FRAME_HELLO, payload)


def parse_frames(data):
    """Whole frames in data -> list of (type, stream_id, payload)."""
    out = []
    while len(data) >= 8:
        ftype, _flags, length, sid = struct.unpack(">BBHI", data[:8])
        if len(data) < 8 + length:
            break
        out.append((ftype, sid, data[8:8 + length]))
        data = data[8 + length:]
    return out


def error_code(payload):
    return struct.unpack(">H", payload[:2])[0]


def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def tls_connect(port, ca, server_name="localhost", timeout=5):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return tls_context(ca).wrap_socket(raw, server_hostname=server_name)


def client_hello_bytes(ca, server_name="localhost"):
    """A real TLS 1.3 ClientHello, as bytes (never sent by this function)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(ca).wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def read_until_closed(sock, timeout):
    """Read until the peer closes. Returns (how, seconds, data): how is
    "eof" or "reset". Fails if the peer keeps the connection open."""
    start = time.monotonic()
    data = b""
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            fail("peer kept the connection open for %.1f s (got %d bytes)" % (timeout, len(data)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except ssl.SSLZeroReturnError:
            return "eof", time.monotonic() - start, data
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            return "reset", time.monotonic() - start, data
        except ssl.SSLError as e:
            if "EOF" in str(e) or "reset" in str(e).lower():
                return "reset", time.monotonic() - start, data
            raise
        if not chunk:
            return "eof", time.monotonic() - start, data
        data += chunk


class RawServer:
    """A TCP server on host; each connection is served by handler(conn) on
    its own daemon thread (the connection is closed afterwards)."""

    def __init__(self, handler, host="127.0.0.1", port=0, backlog=512):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.accepted = 0
        self.errors = []
        self.conns = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(120)
            self.handler(c)
        except Exception as e:  # recorded: a test may look at it
            self.errors.append(repr(e))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


class FakeServer(RawServer):
    """A plain TCP server on 127.0.0.1 standing where a gateway should be.
    greeting: bytes sent to each connection after accept (None: stay silent).
    received: the first bytes of each connection. Connections stay open
    until close()."""

    def __init__(self, port=0, greeting=None):
        self.greeting = greeting
        self.received = []
        super().__init__(self._greet, port=port, backlog=64)

    def _greet(self, c):
        c.settimeout(0.5)
        if self.greeting is not None:
            c.sendall(self.greeting)
        try:
            self.received.append(c.recv(4096))
        except (socket.timeout, TimeoutError, OSError):
            self.received.append(b"")
        self._stop.wait()  # hold the connection until close()


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
        gw = {
            "listen_addr": "127.0.0.1:%d" % (port or self.port),
            "tls_cert": os.path.join(self.certs, "server.crt"),
            "tls_key": os.path.join(self.certs, "server.key"),
            "auth_username": GW_USER,
            "auth_password": GW_PASS,
        }
        gw.update({k: v for k, v in FAST_GATEWAY.items()})
        log = {"level": keys.pop("log_level", "debug")}
        gw.update(keys)
        return write_ini(os.path.join(self.dir, name + ".ini"), {
            "gateway": gw,
            "control": {"socket": control or self.control},
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


# ---- runner ------------------------------------------------------------------------

def note(text):
    """A diagnostic line in the test output (TAP comment)."""
    for line in str(text).splitlines():
        print("# " + line, flush=True)


def _comment(text):
    for line in str(text).splitlines():
        print("# " + line)


def run(cases, fixture=None):
    """Run test cases (functions taking a TestEnv) and exit.

    Without fixture every case gets a fresh TestEnv. With fixture, one
    TestEnv is set up by fixture(env) and shared by the cases in order; its
    clean shutdown is reported as an extra case."""
    signal.signal(signal.SIGTERM, _on_term)
    build_dir()
    for b in (gateway_bin, client_bin, apctl_bin):
        b()
    script = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    total = len(cases) + (1 if fixture else 0)
    print("1..%d" % total, flush=True)
    failed = 0
    keep = False
    shared = None
    setup_error = None
    started = time.monotonic()
    if fixture:
        shared = TestEnv(script)
        try:
            fixture(shared)
        except Exception:
            setup_error = traceback.format_exc()
    for case in cases:
        name = case.__name__
        env = shared or TestEnv(name)
        t0 = time.monotonic()
        error = None
        problems = []
        if setup_error:
            error = "fixture failed:\n" + setup_error
        else:
            try:
                case(env)
            except Exception:
                error = traceback.format_exc()
            finally:
                if shared is None:
                    problems = env.cleanup()
        if error or problems:
            failed += 1
            keep = True
            print("not ok - %s" % name, flush=True)
            if error:
                _comment(error)
            for p in problems:
                _comment("clean-up: " + p)
            _comment(env.dump_logs())
            _comment("test folder kept: " + env.dir)
        else:
            print("ok - %s" % name, flush=True)
            _comment("%.2f s" % (time.monotonic() - t0))
    if shared is not None:
        problems = shared.cleanup()
        if problems:
            failed += 1
            keep = True
            print("not ok - clean shutdown of the shared daemons")
            for p in problems:
                _comment(p)
            _comment(shared.dump_logs())
        else:
            print("ok - clean shutdown of the shared daemons")
    _reap_all()
    if not keep and _base_dir and not os.environ.get("AP_KEEP_TMP"):
        shutil.rmtree(_base_dir, ignore_errors=True)
    print("# %s: %d passed, %d failed in %.1f s" % (script, total - failed, failed,
                                                    time.monotonic() - started), flush=True)
    sys.exit(1 if failed else 0)


# ---- proxy tests: a gateway with its proxies, targets, raw proxy clients ----------
#
# Added for the test_proxy_*.py files. Targets listen on 127.0.0.0/8 or ::1
# only; every thread they start is a daemon thread, every socket is closed by
# close() (TestEnv.cleanup() calls it for objects in env.servers).

import base64
import hashlib
import http.server
import random
import urllib.parse

PROXY_USER = "user"          # the spec's examples: user.production:proxy_pass
PROXY_PASS = "proxy_pass"

# Proxy tests move a lot of data: pings must not be what fails them.
PROXY_GATEWAY = {"ping_interval_ms": 1000, "ping_timeout_ms": 10000}
PROXY_CLIENT = {"ping_interval_ms": 1000, "ping_timeout_ms": 10000}


def proxy_gateway(env, name="gateway", http=True, socks5=True, user=PROXY_USER,
                  password=PROXY_PASS, wait=True, gw_env=None, **keys):
    """Start a gateway with [proxy.http] and [proxy.socks5] listeners on free
    127.0.0.1 ports (http / socks5 False: that listener is off; user None: no
    proxy authentication). The Daemon gets .http_port and .socks_port."""
    merged = dict(PROXY_GATEWAY)
    merged.update(keys)
    config = env.gateway_config(name, **merged)
    http_port = free_port() if http else None
    socks_port = free_port() if socks5 else None
    extra = {}
    for section, port in (("proxy.http", http_port), ("proxy.socks5", socks_port)):
        keys_ = {"listen_addr": "127.0.0.1:%d" % port if port else ""}
        if port and user is not None:
            keys_["auth_username"] = user
            keys_["auth_password"] = password
        extra[section] = keys_
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
    if env.gw is None or not env.gw.alive():
        env.gw = gw
    if wait:
        env.wait_gateway_ready(gw)
        for port in (http_port, socks_port):
            if port:
                wait_until(lambda: _port_open("127.0.0.1", port), 5 + slack(),
                           "the proxy listener on 127.0.0.1:%d" % port)
    return gw


def proxy_agent(env, client_id, group_id=None, replicas=None, **keys):
    """env.agent() with the relaxed ping timings of PROXY_CLIENT."""
    merged = dict(PROXY_CLIENT)
    merged.update(keys)
    return env.agent(client_id, group_id=group_id, replicas=replicas, **merged)


def _port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def stream_totals(env):
    """{client_id: streams_total} from apctl."""
    return {cid: c["streams_total"] for cid, c in env.clients().items()}


def stream_delta(before, after):
    """Non-zero differences between two stream_totals() snapshots."""
    out = {}
    for cid in set(before) | set(after):
        d = after.get(cid, 0) - before.get(cid, 0)
        if d:
            out[cid] = d
    return out


def expect_streams(env, before, expected, what, timeout=3.0):
    """Wait until the streams_total deltas since `before` equal `expected`
    ({client_id: count}); fail naming `what` otherwise."""
    last = {}

    def ok():
        last["d"] = stream_delta(before, stream_totals(env))
        return last["d"] == expected
    try:
        wait_until(ok, timeout, "streams_total deltas %r" % (expected,))
    except TestFailure:
        fail("%s: streams_total deltas are %r, expected %r" % (what, last.get("d"), expected))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- deterministic data --

GEN_BLOCK = 65536
_gen_bases = {}
_gen_hashes = {}


def _gen_base(seed):
    b = _gen_bases.get(seed)
    if b is None:
        b = memoryview(random.Random(seed).randbytes(1 << 20))
        _gen_bases[seed] = b
    return b


def gen_chunks(size, seed=1):
    """size bytes of deterministic data in blocks of at most GEN_BLOCK: a
    random 1 MiB pattern per seed, each 64 KiB block stamped with its index
    (so a lost, doubled or reordered block changes the hash)."""
    base = _gen_base(seed)
    k = 0
    off = 0
    while off < size:
        start = (k * GEN_BLOCK) % len(base)
        block = struct.pack(">Q", k) + base[start + 8:start + GEN_BLOCK]
        n = min(GEN_BLOCK, size - off)
        yield block if n == GEN_BLOCK else block[:n]
        off += n
        k += 1


def gen_bytes(size, seed=1):
    return b"".join(gen_chunks(size, seed))


def gen_sha256(size, seed=1):
    key = (size, seed)
    if key not in _gen_hashes:
        h = hashlib.sha256()
        for c in gen_chunks(size, seed):
            h.update(c)
        _gen_hashes[key] = h.hexdigest()
    return _gen_hashes[key]


# -- targets --

def _read_chunked(rfile, sink):
    """Read a chunked body from rfile into sink(bytes); returns True on a
    well-formed body."""
    while True:
        line = rfile.readline(1024)
        if not line:
            return False
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:  # trailers
                t = rfile.readline(8192)
                if t in (b"\r\n", b"\n", b""):
                    return True
        left = size
        while left:
            b = rfile.read(min(left, 1 << 20))
            if not b:
                return False
            sink(b)
            left -= len(b)
        rfile.readline(8)  # CRLF after the chunk


class _TargetHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ap-itest-target"

    def log_message(self, fmt, *args):
        pass

    def _record(self, extra=None):
        rec = {"method": self.command, "path": self.path,
               "host": self.headers.get("Host"),
               "headers": [(k, v) for k, v in self.headers.items()],
               "peer": self.client_address[0]}
        if extra:
            rec.update(extra)
        with self.server.lock:
            self.server.requests.append(rec)
        return rec

    def _json(self, obj, code=200):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _query(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path, dict(urllib.parse.parse_qsl(u.query))

    def do_GET(self):
        path, q = self._query()
        rec = self._record()
        if path == "/gen":
            size, seed = int(q.get("size", "0")), int(q.get("seed", "1"))
            chunked = q.get("chunked") == "1"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("X-Sha256", gen_sha256(size, seed) if size <= (64 << 20) else "-")
            self.send_header("X-Server", self.server.name)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            for c in gen_chunks(size, seed):
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
                else:
                    self.wfile.write(c)
            if chunked:
                self.wfile.write(b"0\r\nX-Trailer: done\r\n\r\n")
            return
        if path == "/status":
            code = int(q.get("code", "200"))
            self.send_response(code)
            self.send_header("X-Server", self.server.name)
            if code not in (204, 304):
                self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("/file/"):
            data = self.server.files.get(path[6:])
            if data is None:
                self._json({"error": "no such file"}, 404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        # /info and anything else: who we are and what we saw
        self._json({"server": self.server.name, "host": rec["host"], "method": self.command,
                    "path": self.path, "headers": rec["headers"]})

    do_HEAD = do_GET
    do_DELETE = do_GET

    def do_POST(self):
        h = hashlib.sha256()
        count = [0]

        def sink(b):
            h.update(b)
            count[0] += len(b)
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        chunked = "chunked" in te
        if chunked:
            ok = _read_chunked(self.rfile, sink)
            if not ok:
                self.close_connection = True
                return
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                b = self.rfile.read(min(left, 1 << 20))
                if not b:
                    self.close_connection = True
                    return
                sink(b)
                left -= len(b)
        rec = self._record({"len": count[0], "sha256": h.hexdigest(), "chunked": chunked})
        self._json({"server": self.server.name, "host": rec["host"], "method": self.command,
                    "path": self.path, "len": count[0], "sha256": h.hexdigest(),
                    "chunked": chunked, "headers": rec["headers"]})

    do_PUT = do_POST
    do_PATCH = do_POST


class _TargetServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # a proxy that cuts a request short is what some tests look for:
        # record it instead of printing a traceback
        self.errors.append(repr(sys.exc_info()[1]))


class _TargetServer6(_TargetServer):
    address_family = socket.AF_INET6


class HttpTarget:
    """A threaded HTTP/1.1 origin on host (127.0.0.x or ::1).
    GET/HEAD /gen?size=N&seed=S[&chunked=1]  deterministic data (gen_chunks)
    GET /file/NAME                          one of `files` (bytes)
    GET /status?code=N                      status N, no body
    POST/PUT any path                       body by Content-Length or chunked;
                                            answers JSON with len and sha256
    anything else (e.g. /info)              JSON: server name, Host seen, headers
    .requests records what it saw (method, path, host, headers)."""

    def __init__(self, host="127.0.0.1", port=0, name="origin", files=None):
        cls = _TargetServer6 if ":" in host else _TargetServer
        self.httpd = cls((host, port), _TargetHandler)
        self.httpd.name = name
        self.httpd.requests = []
        self.httpd.errors = []
        self.httpd.lock = threading.Lock()
        self.httpd.files = dict(files or {})
        self.host = host
        self.port = self.httpd.server_address[1]
        self.name = name
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def requests(self):
        return self.httpd.requests

    def url(self, path="/info", host=None):
        host = host or self.host
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d%s" % (host, self.port, path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class HttpsTarget:
    """openssl s_server -WWW serving `files` (name -> bytes) from a docroot,
    with the test certificate (valid for localhost, 127.0.0.1, ::1)."""

    def __init__(self, env, files, host="127.0.0.1"):
        self.docroot = tempfile.mkdtemp(prefix="https-root-", dir=env.dir)
        for name, data in files.items():
            with open(os.path.join(self.docroot, name), "wb") as f:
                f.write(data)
        self.port = free_port()
        self.log_path = os.path.join(env.dir, "s_server.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-quiet", "-WWW", "-accept", "%s:%d" % (host, self.port),
             "-cert", os.path.join(env.certs, "server.crt"),
             "-key", os.path.join(env.certs, "server.key")],
            cwd=self.docroot, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.ca = os.path.join(env.certs, "ca.crt")
        wait_until(lambda: self.proc.poll() is None and _port_open(host, self.port), 10,
                   "openssl s_server on %s:%d" % (host, self.port))

    def url(self, name, host="localhost"):
        return "https://%s:%d/%s" % (host, self.port, name)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def hash_until_eof(conn):
    """RawServer handler: read to EOF, reply "LEN SHA256\\n", close."""
    h = hashlib.sha256()
    n = 0
    while True:
        b = conn.recv(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    conn.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))


def respond_after_eof(size, seed=1):
    """RawServer handler factory: read the request to EOF, then send
    "LEN SHA256-of-request\\n" followed by `size` bytes of gen_chunks(seed)."""
    def handler(conn):
        hash_until_eof(conn)
        for c in gen_chunks(size, seed):
            conn.sendall(c)
    return handler


def send_stream(size, seed=1):
    """RawServer handler factory: send `size` bytes at once, then close."""
    def handler(conn):
        for c in gen_chunks(size, seed):
            conn.sendall(c)
    return handler


# -- raw proxy clients --

def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        b = sock.recv(n - len(data))
        if not b:
            raise ConnectionError("EOF after %d of %d bytes" % (len(data), n))
        data += b
    return data


def socks5_target_bytes(host, port):
    """ATYP + address + port for a SOCKS5 request."""
    try:
        return b"\x01" + socket.inet_pton(socket.AF_INET, host) + struct.pack(">H", port)
    except OSError:
        pass
    try:
        return b"\x04" + socket.inet_pton(socket.AF_INET6, host) + struct.pack(">H", port)
    except OSError:
        pass
    name = host.encode()
    return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)


class Socks5Result:
    def __init__(self, sock, method=None, auth_status=None, rep=None, bound=None):
        self.sock = sock
        self.method = method
        self.auth_status = auth_status
        self.rep = rep
        self.bound = bound

    def __repr__(self):
        return "Socks5Result(method=%r, auth_status=%r, rep=%r)" % (
            self.method, self.auth_status, self.rep)


def socks5_open(proxy_port, host, port, user=PROXY_USER, password=PROXY_PASS, timeout=10,
                command=1, proxy_host="127.0.0.1"):
    """A raw SOCKS5 CONNECT (RFC 1928/1929). Returns a Socks5Result; .rep is
    the REP byte when the proxy got that far; the socket is left open (the
    caller closes it). user None: offer method 0x00 only."""
    s = socket.create_connection((proxy_host, proxy_port), timeout=timeout)
    r = Socks5Result(s)
    try:
        s.sendall(b"\x05\x01\x00" if user is None else b"\x05\x01\x02")
        ver, r.method = recv_exact(s, 2)
        check(ver == 5, "SOCKS5 method reply version %d" % ver)
        if r.method == 0x02:
            u, p = user.encode(), password.encode()
            s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
            _v, r.auth_status = recv_exact(s, 2)
            if r.auth_status != 0:
                return r
        elif r.method != 0x00:
            return r
        s.sendall(b"\x05" + bytes([command]) + b"\x00" + socks5_target_bytes(host, port))
        head = recv_exact(s, 4)
        r.rep = head[1]
        atyp = head[3]
        alen = {1: 4, 4: 16}.get(atyp)
        if alen is None:
            alen = recv_exact(s, 1)[0]
        r.bound = recv_exact(s, alen + 2)
    except ConnectionError:
        pass
    return r


def basic_auth(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def read_http_head(sock, limit=65536):
    """Read up to the end of an HTTP head. Returns (status, headers dict with
    lower-case names, head text, bytes after the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = sock.recv(4096)
        if not b:
            break
        data += b
        check(len(data) <= limit, "HTTP head longer than %d bytes" % limit)
    head, _, rest = data.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    status = None
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0]) if lines else None
    if m:
        status = int(m.group(1))
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, text, rest


def read_http_body(sock, headers, rest, timeout=30):
    """The body after read_http_head: by Content-Length, else to EOF."""
    sock.settimeout(timeout)
    if "content-length" in headers:
        n = int(headers["content-length"])
        data = rest
        while len(data) < n:
            b = sock.recv(min(1 << 20, n - len(data)))
            if not b:
                break
            data += b
        return data
    data = rest
    while True:
        b = sock.recv(1 << 20)
        if not b:
            return data
        data += b


def http_connect(proxy_port, host, port, user=PROXY_USER, password=PROXY_PASS, timeout=10,
                 proxy_host="127.0.0.1"):
    """A raw CONNECT through the HTTP proxy. Returns (sock, status, headers,
    head text, rest)."""
    s = socket.create_connection((proxy_host, proxy_port), timeout=timeout)
    authority = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    req = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (authority, authority)
    if user is not None:
        req += "Proxy-Authorization: %s\r\n" % basic_auth(user, password)
    s.sendall((req + "\r\n").encode())
    status, headers, text, rest = read_http_head(s)
    return s, status, headers, text, rest


def curl(args, timeout=60, env=None, input=None):
    """Run curl (never reading ~/.curlrc) with the proxy environment cleared
    unless env gives it. Returns CompletedProcess (bytes)."""
    e = {k: v for k, v in os.environ.items()
         if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    e.update(env or {})
    try:
        return subprocess.run(["curl", "-q", "-sS"] + list(args), capture_output=True,
                              timeout=timeout, env=e, input=input)
    except subprocess.TimeoutExpired:
        fail("curl %s did not finish within %d s" % (" ".join(args), timeout))


def curl_sha256(args, timeout=300, env=None):
    """Run curl writing the body to stdout, hashing it as it comes.
    Returns (rc, length, sha256 hex, stderr text)."""
    e = {k: v for k, v in os.environ.items()
         if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    e.update(env or {})
    p = subprocess.Popen(["curl", "-q", "-sS"] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e)
    h = hashlib.sha256()
    n = 0
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        while True:
            b = p.stdout.read1(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        err = p.stderr.read().decode("utf-8", "replace")
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    if time.monotonic() >= deadline:
        fail("curl %s did not finish within %d s (%d bytes)" % (" ".join(args), timeout, n))
    return rc, n, h.hexdigest(), err


# ---- fault, limit, drain and load tests (test_faults/limits/drain/load.py) ----------
#
# Process accounting read from /proc, a peak-RSS sampler, targets that talk
# on their own schedule, a blackhole target, and a hand-driven tunnel peer
# for hostile-agent tests. Same rules: loopback only, bounded waits.

import selectors


def fd_count(pid):
    """Open file descriptors of pid (entries of /proc/PID/fd)."""
    return len(os.listdir("/proc/%d/fd" % pid))


def baseline_fd_count(pid, samples=5, interval=0.05):
    """A daemon's resting descriptor count: the least of a few samples, so
    a short-lived descriptor (an apctl connection, a reload's file) seen
    at one instant does not raise the baseline."""
    least = fd_count(pid)
    for _ in range(samples - 1):
        time.sleep(interval)
        least = min(least, fd_count(pid))
    return least


class PeakWatch:
    """Samples VmRSS (KiB) and the fd count of pids every `interval` s in a
    thread; .rss[pid] and .fds[pid] hold the peaks since start."""

    def __init__(self, pids, interval=0.05):
        self.pids = list(pids)
        self.rss = {p: rss_kib(p) for p in self.pids}
        self.fds = {p: fd_count(p) for p in self.pids}
        self._interval = interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for p in self.pids:
                try:
                    self.rss[p] = max(self.rss[p], rss_kib(p))
                    self.fds[p] = max(self.fds[p], fd_count(p))
                except OSError:
                    pass
            self._stop.wait(self._interval)

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)
        return self


def ticker(period, byte=b"t", limit=None):
    """RawServer handler factory: send `byte` every `period` seconds (at most
    `limit` times; None: until the peer goes away), never read."""
    def handler(conn):
        n = 0
        while limit is None or n < limit:
            conn.sendall(byte)
            n += 1
            time.sleep(period)
    return handler


def echo_handler(conn):
    """RawServer handler: echo until EOF."""
    while True:
        b = conn.recv(65536)
        if not b:
            return
        conn.sendall(b)


def endless_stream(seed=1, pace=None):
    """RawServer handler factory: send gen_chunks(seed) data until the peer
    goes away (pace: seconds to sleep between 64 KiB blocks)."""
    def handler(conn):
        while True:
            for c in gen_chunks(1 << 30, seed):
                conn.sendall(c)
                if pace:
                    time.sleep(pace)
    return handler


class Blackhole:
    """A listener with backlog 0 whose accept queue is full: SYNs to it are
    dropped, so a connect() to it neither succeeds nor fails."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(2):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect((host, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(c)
            time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect((host, self.port))
            fail("the blackhole listener still completes handshakes")
        except (socket.timeout, TimeoutError):
            pass
        finally:
            probe.close()

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


def proxy_stream(gwp, how, host, port, user=PROXY_USER, password=PROXY_PASS, timeout=10,
                 early=None):
    """A relayed byte stream to host:port through SOCKS5 ("socks5") or HTTP
    CONNECT ("connect") of the gateway daemon gwp; fails unless it opened.
    Target bytes that came with the CONNECT answer are appended to early (a
    list); without it there must be none."""
    if how == "socks5":
        r = socks5_open(gwp.socks_port, host, port, user=user, password=password,
                        timeout=timeout)
        if r.rep != 0:
            r.sock.close()
            fail("SOCKS5 CONNECT to %s:%d as %s: %r" % (host, port, user, r))
        return r.sock
    s, status, headers, head, rest = http_connect(gwp.http_port, host, port, user=user,
                                                  password=password, timeout=timeout)
    if status != 200 or (rest and early is None):
        s.close()
        fail("CONNECT to %s:%d as %s: %r %r\n%s" % (host, port, user, status, rest[:80], head))
    if early is not None:
        early.append(rest)
    return s


def closed_state(sock, wait):
    """Wait up to `wait` s for the peer to close sock: "eof", "reset", or
    None when it is still open (data that arrives meanwhile is skipped)."""
    end = time.monotonic() + wait
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return None
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except OSError:
            return "reset"
        if not b:
            return "eof"


class FrameConn:
    """A hand-driven tunnel peer: TLS to the gateway's tunnel port, raw
    frames both ways (docs/protocol.md). For hostile-agent tests."""

    def __init__(self, port, ca, timeout=5):
        self.sock = tls_connect(port, ca, timeout=timeout)
        self.buf = b""
        self.answer_pings = True

    def send(self, data):
        self.sock.sendall(data)

    def recv_frame(self, timeout=5.0, skip=(FRAME_PING, FRAME_PONG)):
        """The next frame (type, stream_id, payload) whose type is not in
        skip (PINGs are answered); None when the peer closed the tunnel;
        fails after timeout."""
        end = time.monotonic() + timeout
        while True:
            while len(self.buf) >= 8:
                ftype, _fl, length, sid = struct.unpack(">BBHI", self.buf[:8])
                if len(self.buf) < 8 + length:
                    break
                payload = self.buf[8:8 + length]
                self.buf = self.buf[8 + length:]
                if ftype == FRAME_PING and self.answer_pings:
                    try:
                        self.send(frame(FRAME_PONG, payload))
                    except OSError:
                        pass
                if ftype not in skip:
                    return ftype, sid, payload
            left = end - time.monotonic()
            if left <= 0:
                fail("no frame from the gateway within %.1f s" % timeout)
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except (ssl.SSLError, OSError):
                return None
            if not b:
                return None
            self.buf += b

    def hello(self, client_id, group_id="", **kw):
        """HELLO with the test credentials; returns the HELLO_OK payload."""
        self.send(hello(client_id, group_id, **kw))
        f = self.recv_frame()
        check(f is not None and f[0] == FRAME_HELLO_OK, "HELLO answered with %r" % (f,))
        return f[2]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- helper processes and sockets of a daemon ------------------------------------------

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


def local_addrs(pid):
    """"127.0.0.1:PORT" of every IPv4 TCP socket the process holds."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[9] in inodes:
                ip_hex, port_hex = parts[1].split(":")
                ip = ".".join(str(int(ip_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
                out.add("%s:%d" % (ip, int(port_hex, 16)))
    return out
