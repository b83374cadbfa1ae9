#!/usr/bin/env python3
"""The agent's side of TLS: it trusts only gateway_tls_cert and the name
gateway_server_name, refuses anything else with a clear error, and keeps
retrying; a gateway port that does not speak TLS is refused too."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def failures(agent, since=0):
    return agent.find("Gateway connection failed", since)


def never_listed(env, client_id, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        h.check(client_id not in env.clients(), "apctl lists %s" % client_id)
        time.sleep(0.1)


def test_wrong_ca(env):
    env.gateway()
    other = h.certs("other-ca")
    a = env.agent("wrong-ca", wait=False, gateway_tls_cert=os.path.join(other, "ca.crt"))
    line = a.wait_for_log("Gateway connection failed", 3 + h.slack())
    reason = line.get("reason", "")
    h.check(line.level == "ERROR", "should be an ERROR: %r" % line)
    h.check("TLS" in reason and "certificate" in reason,
            "the reason should be a TLS certificate error: %r" % reason)
    h.check("gateway_tls_cert" in reason or "not signed" in reason or "signer" in reason.lower(),
            "the reason should point at the trust anchor: %r" % reason)
    a.wait_for_log("Reconnecting to gateway", 3 + h.slack(), count=2)
    never_listed(env, "wrong-ca", 1.0)
    h.check(not a.find("Connected to gateway"), "the agent claims it connected")


def test_wrong_server_name(env):
    env.gateway()
    a = env.agent("wrong-name", wait=False, gateway_server_name="wrong.example")
    line = a.wait_for_log("Gateway connection failed", 3 + h.slack())
    reason = line.get("reason", "")
    h.check(re.search(r"mismatch|does not name|gateway_server_name", reason, re.I),
            "the reason should name the host name mismatch: %r" % reason)
    h.check("certificate" in reason or "name" in reason, "reason: %r" % reason)
    a.wait_for_log("Reconnecting to gateway", 3 + h.slack(), count=2)
    never_listed(env, "wrong-name", 0.5)


def test_server_name_defaults_to_gateway_host(env):
    # no gateway_server_name: the host of gateway_addr is checked; the test
    # certificate carries IP:127.0.0.1 and DNS:localhost
    env.gateway()
    env.agent("by-ip", gateway_server_name=None)
    # "localhost" is resolved off the event loop; every address is tried
    # (::1 is refused: the gateway listens on 127.0.0.1 only)
    env.agent("by-name", gateway_server_name=None, gateway_addr="localhost:%d" % env.port)
    c = env.clients()
    h.check(set(c) == {"by-ip", "by-name"}, "clients: %r" % c)


def test_self_signed_gateway_certificate(env):
    # gateway_tls_cert may be the gateway's self-signed certificate itself
    crt, key = os.path.join(env.dir, "self.crt"), os.path.join(env.dir, "self.key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", crt], capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, "openssl failed: %s" % r.stderr)
    env.gateway(tls_cert=crt, tls_key=key)
    a = env.agent("self-signed", gateway_tls_cert=crt)
    line = a.wait_for_log("TLS established", 2)
    h.check(line.get("version") == "TLSv1.3", "agent TLS version: %r" % line)


def test_plain_http_server_on_gateway_port(env):
    srv = env.fake_server(greeting=b"HTTP/1.0 200 OK\r\n\r\nhello")
    a = env.agent("to-http", wait=False, gateway_addr="127.0.0.1:%d" % srv.port)
    line = a.wait_for_log("Gateway connection failed", h.HANDSHAKE_TIMEOUT + h.slack())
    reason = line.get("reason", "")
    h.check("TLS" in reason, "the reason should be a TLS error: %r" % reason)
    h.wait_until(lambda: srv.accepted >= 3, 3 * h.HANDSHAKE_TIMEOUT + h.RECONNECT_MAX + h.slack(2),
                 "the agent to keep retrying (3 connections)")
    h.check(srv.received and srv.received[0][:1] == b"\x16",
            "the agent should have sent a TLS handshake record first: %r" % srv.received[:1])
    h.check(not a.find("Connected to gateway"), "the agent claims it connected")
    h.check(a.alive(), "the agent must keep running")


def test_silent_server_on_gateway_port(env):
    srv = env.fake_server(greeting=None)
    a = env.agent("to-silence", wait=False, gateway_addr="127.0.0.1:%d" % srv.port)
    t0 = time.monotonic()
    line = a.wait_for_log("Gateway connection failed", h.HANDSHAKE_TIMEOUT + h.slack())
    elapsed = time.monotonic() - t0
    reason = line.get("reason", "")
    h.check(re.search(r"handshake|deadline|timed? ?out", reason, re.I),
            "the reason should be the handshake deadline: %r" % reason)
    h.check(elapsed >= h.HANDSHAKE_TIMEOUT - 0.2,
            "gave up after %.2f s, before handshake_timeout_ms" % elapsed)
    h.wait_until(lambda: srv.accepted >= 2, h.HANDSHAKE_TIMEOUT + h.RECONNECT_MAX + h.slack(2),
                 "the agent to retry")
    h.check(a.alive(), "the agent must keep running")


def test_missing_gateway_cert_file(env):
    cfg = env.client_config("missing-cert", "missing-cert",
                            gateway_tls_cert=os.path.join(env.dir, "nope", "ca.crt"))
    r = subprocess.run([h.client_bin(), "-c", cfg, "--check-config"], capture_output=True,
                       text=True, timeout=30)
    h.check(r.returncode == 2, "--check-config should exit 2, got %d" % r.returncode)
    h.check("gateway_tls_cert" in r.stderr and "nope/ca.crt" in r.stderr,
            "the error should name the key and the file: %r" % r.stderr)
    # starting for real fails the same way, before connecting anywhere
    r = subprocess.run([h.client_bin(), "-c", cfg], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 2, "starting with a missing cert should exit 2, got %d: %s"
            % (r.returncode, r.stderr))


def test_gateway_cert_file_not_a_certificate(env):
    junk = os.path.join(env.dir, "junk.crt")
    with open(junk, "w") as f:
        f.write("this is not a certificate\n")
    cfg = env.client_config("junk-cert", "junk-cert", gateway_tls_cert=junk)
    r = subprocess.run([h.client_bin(), "-c", cfg], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 1, "a readable but invalid certificate is a run-time failure "
            "(exit 1), got %d: %s" % (r.returncode, r.stderr))
    h.check("junk.crt" in r.stderr and "TLS" in r.stderr,
            "the error should name the file and TLS: %r" % r.stderr)


if __name__ == "__main__":
    h.run([
        test_wrong_ca,
        test_wrong_server_name,
        test_server_name_defaults_to_gateway_host,
        test_self_signed_gateway_certificate,
        test_plain_http_server_on_gateway_port,
        test_silent_server_on_gateway_port,
        test_missing_gateway_cert_file,
        test_gateway_cert_file_not_a_certificate,
    ])
