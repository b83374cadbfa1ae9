"""Shared ground of every other module: the repository's paths, the timings
and credentials the tests configure, failures (check, fail), bounded waits
(wait_until), free ports, and the build's binaries ($AP_BUILD_DIR).
"""

import os
import random
import socket
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CONFIGS = os.path.join(REPO, "configs")


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

PROXY_USER = "user"          # the spec's examples: user.production:proxy_pass
PROXY_PASS = "proxy_pass"

# Proxy tests move a lot of data: pings must not be what fails them.
PROXY_GATEWAY = {"ping_interval_ms": 1000, "ping_timeout_ms": 10000}
PROXY_CLIENT = {"ping_interval_ms": 1000, "ping_timeout_ms": 10000}


# ---- failures ----------------------------------------------------------------

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
    """True when the daemons carry ASan/UBSan or TSan (they run slower: more
    slack)."""
    global _sanitized
    if _sanitized is None:
        try:
            with open(gateway_bin(), "rb") as f:
                data = f.read()
            _sanitized = any(m in data for m in (b"__asan_init", b"__ubsan_handle",
                                                 b"__tsan_init"))
        except OSError:
            _sanitized = False
    return _sanitized


def slack(seconds=1.0):
    """Extra time allowed on top of a deadline the daemons promise."""
    return seconds * (3 if sanitized_build() else 1)


# ---- small utilities -----------------------------------------------------------

# Ports for daemons are drawn below the kernel's ephemeral range, so that no
# outgoing connection (a curl, HAProxy's health checks, an agent's dial) can
# take one as its local port while a test restarts a daemon on the same
# ports; a port the kernel hands out for port 0 could be taken that way.
PORT_POOL_LOW = 10000


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


_handed_out = set()  # free_port's answers in this process


def free_port():
    """A port on 127.0.0.1, free for TCP and UDP a moment ago, outside the
    ephemeral range when the range leaves room below it, and never one this
    process was given before: two calls before either port is bound (a
    gateway's tunnel and proxy ports) must not get the same one."""
    high = _ephemeral_low()
    if high - PORT_POOL_LOW >= 1000:
        for _ in range(200):
            port = random.randrange(PORT_POOL_LOW, high)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


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


def _port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
