"""Shared ground of every other module: the repository's paths, the timings
and credentials the tests configure, failures (check, fail), bounded waits
(wait_until), free ports, and the build's binaries ($AP_BUILD_DIR).
"""

import os
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


def _port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
