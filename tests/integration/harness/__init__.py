"""harness — shared helpers for anyproxy's integration tests.

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

This file only gathers the names a test uses (h.Daemon, h.check, ...); the
code lives in the modules, each importing only from the ones above it:

    base          paths, timings, credentials, check/fail, wait_until,
                  free ports, the build's binaries
    certificates  CAs and server certificates from tools/gen-certs.sh
    data          deterministic payloads (gen_chunks) and their hashes
    clients       tunnel frames, FrameConn, TLS, raw SOCKS5/HTTP clients, curl
    servers       RawServer and handlers, UdpServer, FakeServer, HTTP(S) targets, Blackhole
    processes     Daemon and its log, TestEnv, proxy_gateway, apctl, ChildScript
    measurements  RSS, fd counts, PeakWatch, sockets, stream counters
    runner        run(): the cases, TAP output, the summary line

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

from .base import (CONFIGS, FAST_CLIENT, FAST_GATEWAY, GW_PASS, GW_USER, HANDSHAKE_TIMEOUT,
                   HANDSHAKE_TIMEOUT_MS, PING_INTERVAL, PING_INTERVAL_MS, PING_TIMEOUT,
                   PING_TIMEOUT_MS, PROXY_CLIENT, PROXY_GATEWAY, PROXY_PASS, PROXY_USER,
                   RECONNECT_INITIAL_MS, RECONNECT_MAX, RECONNECT_MAX_MS, REPO, Fatal,
                   TestFailure, apctl_bin, build_dir, check, client_bin, fail, free_port,
                   gateway_bin, sanitized_build, slack, wait_until)
from .certificates import GEN_CERTS, certs
from .data import GEN_BLOCK, gen_bytes, gen_chunks, gen_sha256
from .clients import (ERR_AUTH, ERR_BAD_HELLO, ERR_PROTOCOL, ERR_REPLACED, ERR_VERSION,
                      FRAME_ERROR, FRAME_GOAWAY, FRAME_HELLO, FRAME_HELLO_OK, FRAME_PING,
                      FRAME_PONG, FrameConn, Socks5Result, basic_auth, client_hello_bytes,
                      closed_state, curl, curl_sha256, echo_roundtrip, error_code, frame, hello,
                      http_connect,
                      parse_frames, proxy_stream, read_http_body, read_http_head,
                      read_until_closed, recv_exact, scrape_metrics, socks5_open,
                      socks5_target_bytes, str8,
                      tls_connect, tls_context)
from .servers import (Blackhole, FakeServer, HttpTarget, HttpsTarget, RawServer, UdpServer,
                      echo_handler,
                      endless_stream, hash_until_eof, respond_after_eof, send_stream,
                      sha256_to_eof, ticker)
from .processes import (ChildScript, Daemon, LogLine, TestEnv, add_section, apctl, end_child,
                        parse_kv,
                        parse_table, proxy_agent, proxy_gateway, write_ini)
from .measurements import (PeakWatch, baseline_fd_count, expect_streams, fd_count, local_addrs,
                           rss_kib, stream_delta, stream_totals)
from .runner import note, run

# Internal helpers some test files reach for (a Daemon subclass with its own
# start(), config checks run by hand): kept under their names so those files
# and branches that add to them keep working.
from .base import _port_open
from .processes import _daemon_env, _live

# What `import harness as h` offers; pyflakes checks it against the imports.
__all__ = [
    # base
    "CONFIGS", "FAST_CLIENT", "FAST_GATEWAY", "GW_PASS", "GW_USER", "HANDSHAKE_TIMEOUT",
    "HANDSHAKE_TIMEOUT_MS", "PING_INTERVAL", "PING_INTERVAL_MS", "PING_TIMEOUT", "PING_TIMEOUT_MS",
    "PROXY_CLIENT", "PROXY_GATEWAY", "PROXY_PASS", "PROXY_USER", "RECONNECT_INITIAL_MS",
    "RECONNECT_MAX", "RECONNECT_MAX_MS", "REPO", "Fatal", "TestFailure", "apctl_bin", "build_dir",
    "check", "client_bin", "fail", "free_port", "gateway_bin", "sanitized_build", "slack",
    "wait_until",
    # certificates
    "GEN_CERTS", "certs",
    # data
    "GEN_BLOCK", "gen_bytes", "gen_chunks", "gen_sha256",
    # clients
    "ERR_AUTH", "ERR_BAD_HELLO", "ERR_PROTOCOL", "ERR_REPLACED", "ERR_VERSION", "FRAME_ERROR",
    "FRAME_GOAWAY", "FRAME_HELLO", "FRAME_HELLO_OK", "FRAME_PING", "FRAME_PONG", "FrameConn",
    "Socks5Result", "basic_auth", "client_hello_bytes", "closed_state", "curl", "curl_sha256",
    "echo_roundtrip", "error_code", "frame", "hello", "http_connect", "parse_frames",
    "proxy_stream",
    "read_http_body", "read_http_head", "read_until_closed", "recv_exact", "scrape_metrics",
    "socks5_open", "socks5_target_bytes", "str8", "tls_connect", "tls_context",
    # servers
    "Blackhole", "FakeServer", "HttpTarget", "HttpsTarget", "RawServer", "UdpServer",
    "echo_handler",
    "endless_stream", "hash_until_eof", "respond_after_eof", "send_stream", "sha256_to_eof",
    "ticker",
    # processes
    "ChildScript", "Daemon", "LogLine", "TestEnv", "add_section", "apctl", "end_child", "parse_kv",
    "parse_table", "proxy_agent", "proxy_gateway", "write_ini",
    # measurements
    "PeakWatch", "baseline_fd_count", "expect_streams", "fd_count", "local_addrs", "rss_kib",
    "stream_delta", "stream_totals",
    # runner
    "note", "run",
    # internal names some test files use
    "_port_open", "_daemon_env", "_live",
]
