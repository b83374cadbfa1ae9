#!/usr/bin/env python3
"""TLS to the proxy: [proxy.https] (issue 13 item 2), with real clients.

The HTTPS proxy is the HTTP proxy front end behind TLS: the same requests,
authentication, group rules and log lines (proxy=https); only the transport
differs. One gateway with [proxy.https] (the test CA's server certificate),
a [group.tenant] section with its own password, and two agents: def
(default group) and ten (group tenant). Clients: curl --proxy https://, Node
(tls.connect to the proxy, then http/https on it) and Python's ssl module.
"""
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TENANT_PASS = "tenant_pass"
HELLO = b"hello over an HTTPS proxy\n"
BIG = 8 << 20


def setup(env):
    env.gwp = h.proxy_gateway(env, https=True)
    with open(env.gwp.config, "a") as f:
        f.write("\n[group.tenant]\nauth_password = %s\n" % TENANT_PASS)
    hup(env)  # the group section applies
    h.proxy_agent(env, "def", None)
    h.proxy_agent(env, "ten", "tenant")
    env.a = h.HttpTarget("127.0.0.1", name="A", files={"hello.txt": HELLO})
    env.servers.append(env.a)
    env.tls = h.HttpsTarget(env, {"hello.txt": HELLO})
    env.servers.append(env.tls)
    env.ca = os.path.join(env.certs, "ca.crt")


def hup(env):
    """SIGHUP the gateway and wait until it reloaded."""
    mark = env.gwp.mark()
    env.gwp.send_signal(1)
    env.gwp.wait_for_log("Configuration reloaded", 5 + h.slack(), since=mark)


def curl_args(env, user="user", password=h.PROXY_PASS):
    return ["--proxy", "https://127.0.0.1:%d" % env.gwp.https_port, "--proxy-cacert", env.ca,
            "--proxy-user", "%s:%s" % (user, password)]


def proxy_tls(env, alpn=None, max_version=None, verify=True, timeout=10):
    """A TLS connection to the HTTPS proxy (Python's ssl), verified against
    the test CA unless verify is False."""
    ctx = ssl.create_default_context(cafile=env.ca) if verify else ssl._create_unverified_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version:
        ctx.maximum_version = max_version
    raw = socket.create_connection(("127.0.0.1", env.gwp.https_port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def get_request(env, path="/info", user="user", password=h.PROXY_PASS):
    return ("GET http://127.0.0.1:%d%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Proxy-Authorization: %s\r\n\r\n"
            % (env.a.port, path, env.a.port, h.basic_auth(user, password))).encode()


def get_over(env, s, **kw):
    """One request on an open connection to the proxy: (status, headers, body)."""
    s.sendall(get_request(env, **kw))
    status, headers, _, rest = h.read_http_head(s)
    body = h.read_http_body(s, headers, rest) if status else b""
    return status, headers, body


def routed(env, since, user, group, client_id):
    got = [l for l in env.gwp.find("Gateway received request", since)
           if l.get("user") == user and l.get("proxy") == "https"]
    h.check(got, "no 'Gateway received request proxy=https user=%s':\n%s"
            % (user, env.gwp.tail()))
    h.check(got[-1].get("group") == group, "routed to group %r, expected %r"
            % (got[-1].get("group"), group))
    h.check(env.gwp.find("Selected client", since) and any(
        l.get("client_id") == client_id for l in env.gwp.find("Selected client", since)),
        "not routed to %s:\n%s" % (client_id, env.gwp.tail()))


def cert_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# ---- curl ----------------------------------------------------------------------

def test_curl_http_origin(env):
    """curl --proxy https:// to an HTTP origin: the request is routed like an
    HTTP proxy request and logged with proxy=https."""
    mark = env.gwp.mark()
    r = h.curl(curl_args(env) + ["http://127.0.0.1:%d/file/hello.txt" % env.a.port])
    h.check(r.returncode == 0, "curl failed (rc %d): %s" % (r.returncode, r.stderr.decode()))
    h.check(r.stdout == HELLO, "body %r" % r.stdout[:200])
    routed(env, mark, "user", "", "def")


def test_curl_connect_https_target(env):
    """CONNECT over the proxy's TLS to an openssl s_server: TLS inside TLS."""
    r = h.curl(curl_args(env) + ["--cacert", env.ca, env.tls.url("hello.txt")])
    h.check(r.returncode == 0, "curl failed (rc %d): %s" % (r.returncode, r.stderr.decode()))
    h.check(r.stdout == HELLO, "body %r" % r.stdout[:200])


def test_curl_bulk_both_ways(env):
    """8 MiB down and 8 MiB up through the TLS relay: windows and credit stay
    right whichever side is faster (the sums prove every byte)."""
    rc, n, digest, err = h.curl_sha256(
        curl_args(env) + ["http://127.0.0.1:%d/gen?size=%d&seed=5" % (env.a.port, BIG)])
    h.check(rc == 0 and n == BIG, "download: rc %d, %d bytes: %s" % (rc, n, err))
    h.check(digest == h.gen_sha256(BIG, seed=5), "download: wrong sha256")
    data = h.gen_bytes(BIG, seed=6)
    r = h.curl(curl_args(env) + ["--data-binary", "@-", "-H", "Content-Type: x/y",
                                 "http://127.0.0.1:%d/upload" % env.a.port], input=data)
    h.check(r.returncode == 0, "upload failed (rc %d): %s" % (r.returncode, r.stderr.decode()))
    got = json.loads(r.stdout)
    h.check(got.get("len") == BIG and got.get("sha256") == h.gen_sha256(BIG, seed=6),
            "upload: origin saw %r" % got)


def test_wrong_password_407(env):
    """Wrong credentials: 407 over TLS, and the WARN names proxy=https."""
    mark = env.gwp.mark()
    r = h.curl(curl_args(env, password="wrong") + ["-o", "/dev/null", "-w", "%{http_code}",
                                                   "http://127.0.0.1:%d/info" % env.a.port])
    h.check(r.stdout == b"407", "curl: status %r, expected 407: %s" % (r.stdout, r.stderr))
    with proxy_tls(env) as s:
        status, headers, _ = get_over(env, s, password="wrong")
    h.check(status == 407, "python: status %r, expected 407" % status)
    h.check("proxy-authenticate" in headers, "407 without Proxy-Authenticate: %r" % headers)
    lines = [l for l in env.gwp.find("Proxy authentication failed", mark)
             if l.get("proxy") == "https"]
    h.check(lines, "no 'Proxy authentication failed proxy=https':\n%s" % env.gwp.tail())


def test_group_section_applies(env):
    """[group.tenant] has its own password: over HTTPS as over HTTP, only it
    admits user.tenant, and the request goes to the tenant's agent."""
    mark = env.gwp.mark()
    r = h.curl(curl_args(env, "user.tenant", TENANT_PASS)
               + ["http://127.0.0.1:%d/file/hello.txt" % env.a.port])
    h.check(r.returncode == 0 and r.stdout == HELLO,
            "tenant password: rc %d %r %s" % (r.returncode, r.stdout[:100], r.stderr))
    routed(env, mark, "user.tenant", "tenant", "ten")
    r = h.curl(curl_args(env, "user.tenant", h.PROXY_PASS)
               + ["-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/" % env.a.port])
    h.check(r.stdout == b"407", "listener password for user.tenant: %r, expected 407" % r.stdout)


def connect_over(env, s, host, port):
    """CONNECT on an open TLS connection to the proxy; returns the bytes
    that came after the 200's head."""
    s.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n\r\n"
               % (host, port, host, port, h.basic_auth("user", h.PROXY_PASS))).encode())
    status, _, text, rest = h.read_http_head(s)
    h.check(status == 200, "CONNECT %s:%d: %r" % (host, port, text))
    return rest


def test_half_close_both_ways(env):
    """TCP half-close through the TLS relay. The user ends its side (a FIN
    after its last record) and still reads the target's answer; the target
    ends its side first (the user gets close_notify and EOF) and still
    receives what the user sends afterwards."""
    data = h.gen_bytes(1 << 20, seed=9)
    hasher = h.RawServer(h.hash_until_eof)
    env.servers.append(hasher)
    with proxy_tls(env) as s:
        rest = connect_over(env, s, "127.0.0.1", hasher.port)
        s.sendall(data)
        socket.socket.shutdown(s, socket.SHUT_WR)  # TCP only: the TLS layer stays
        answer = h.read_http_body(s, {}, rest)
    want = b"%d %s\n" % (len(data), h.gen_sha256(1 << 20, seed=9).encode())
    h.check(answer == want, "user half-close: target answered %r, expected %r" % (answer, want))

    seen = []

    def greet_then_hash(conn):
        conn.sendall(b"greeting\n")
        conn.shutdown(socket.SHUT_WR)
        n, digest = 0, hashlib.sha256()
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            n += len(b)
            digest.update(b)
        seen.append((n, digest.hexdigest()))
    greeter = h.RawServer(greet_then_hash)
    env.servers.append(greeter)
    with proxy_tls(env) as s:
        rest = connect_over(env, s, "127.0.0.1", greeter.port)
        got = h.read_http_body(s, {}, rest)  # to the target's end
        h.check(got == b"greeting\n", "target half-close: got %r" % got)
        s.sendall(data)  # TLS 1.3 allows writing after the peer's close_notify
        socket.socket.shutdown(s, socket.SHUT_WR)
        h.wait_until(lambda: seen, 10 + h.slack(), "the target to see the user's end")
    h.check(seen[0] == (len(data), h.gen_sha256(1 << 20, seed=9)),
            "target half-close: the target received %r" % (seen[0],))


def test_slow_reader_long_download(env):
    """A long download to a user slower than the agent: every byte arrives
    while the relay's queue is kept full by a window whose credit comes
    back as ciphertext leaves it (relay.c return_credit)."""
    size = 48 << 20
    sender = h.RawServer(h.send_stream(size, seed=11))
    env.servers.append(sender)
    digest = hashlib.sha256()
    n = 0
    with proxy_tls(env, timeout=60) as s:
        rest = connect_over(env, s, "127.0.0.1", sender.port)
        digest.update(rest)
        n += len(rest)
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            digest.update(b)
            n += len(b)
            time.sleep(0.001)  # slower than the agent: the queue stays full
    h.check(n == size, "slow reader: %d bytes of %d:\n%s" % (n, size, env.gwp.tail(10)))
    h.check(digest.hexdigest() == h.gen_sha256(size, seed=11), "slow reader: wrong sha256")


# ---- a second real client: Node ---------------------------------------------------

def node(env, *args):
    r = subprocess.run(["node", os.path.join(HERE, "https_proxy_client.js"),
                        str(env.gwp.https_port), env.ca] + list(args),
                       capture_output=True, timeout=60)
    h.check(r.returncode == 0, "node %s failed (rc %d): %s %s"
            % (" ".join(args), r.returncode, r.stdout[:300], r.stderr[:600]))
    head, _, body = r.stdout.partition(b"\n")
    return head.decode(), body


def test_node_client(env):
    """Node's http/https over tls.connect to the proxy: a GET in absolute
    form, and CONNECT with TLS to the target inside."""
    if subprocess.run(["sh", "-c", "command -v node"], capture_output=True).returncode:
        h.note("node is not installed: skipped")
        return
    mark = env.gwp.mark()
    head, body = node(env, "user", h.PROXY_PASS, "get",
                      "http://127.0.0.1:%d/file/hello.txt" % env.a.port)
    h.check(head == "STATUS 200" and body == HELLO, "node get: %s %r" % (head, body[:200]))
    routed(env, mark, "user", "", "def")  # through the proxy, not around it
    head, body = node(env, "user", h.PROXY_PASS, "connect", "localhost", str(env.tls.port),
                      env.ca, "/hello.txt")
    h.check(head == "STATUS 200" and body == HELLO, "node connect: %s %r" % (head, body[:200]))
    head, _ = node(env, "user", "wrong", "get", "http://127.0.0.1:%d/" % env.a.port)
    h.check(head == "STATUS 407", "node, wrong password: %s" % head)


# ---- TLS versions, ALPN ---------------------------------------------------------------

def test_tls12_and_alpn(env):
    """TLS 1.2 clients are served; ALPN: http/1.1 is agreed when offered, and
    a client offering only h2 gets no ALPN rather than a failed handshake."""
    with proxy_tls(env, max_version=ssl.TLSVersion.TLSv1_2) as s:
        h.check(s.version() == "TLSv1.2", "negotiated %s, expected TLSv1.2" % s.version())
        status, _, body = get_over(env, s, path="/file/hello.txt")
        h.check(status == 200 and body == HELLO, "TLS 1.2: %r %r" % (status, body[:100]))
    with proxy_tls(env) as s:
        h.check(s.version() == "TLSv1.3", "negotiated %s, expected TLSv1.3" % s.version())
    with proxy_tls(env, alpn=["h2", "http/1.1"]) as s:
        h.check(s.selected_alpn_protocol() == "http/1.1",
                "ALPN h2,http/1.1: selected %r" % s.selected_alpn_protocol())
        status, _, _ = get_over(env, s)
        h.check(status == 200, "after ALPN http/1.1: status %r" % status)
    with proxy_tls(env, alpn=["h2"]) as s:
        h.check(s.selected_alpn_protocol() is None,
                "ALPN h2 only: selected %r" % s.selected_alpn_protocol())
        status, _, _ = get_over(env, s)
        h.check(status == 200, "after no ALPN: status %r" % status)


# ---- what is not TLS, or never finishes --------------------------------------------

def test_plain_http_to_tls_port(env):
    """Plain HTTP to the TLS port: a clean close (FIN), no reply, no session."""
    mark = env.gwp.mark()
    s = socket.create_connection(("127.0.0.1", env.gwp.https_port), timeout=5)
    s.sendall(get_request(env))
    s.settimeout(5)
    got = s.recv(4096)
    h.check(got == b"", "plain HTTP to the TLS port got %r, expected a clean close" % got[:80])
    s.close()
    env.gwp.wait_for_log("not TLS", 5, since=mark)


def test_stalled_tls_handshake(env):
    """A client that stops in the TLS handshake (nothing, or half a
    ClientHello) is closed at handshake_timeout_ms, not before."""
    hello = h.client_hello_bytes(env.ca)
    socks = []
    for first in (b"", hello[:20]):
        s = socket.create_connection(("127.0.0.1", env.gwp.https_port), timeout=5)
        if first:
            s.sendall(first)
        socks.append(s)
    start = time.monotonic()
    timeout_s = h.HANDSHAKE_TIMEOUT_MS / 1000.0
    for s in socks:
        state = h.closed_state(s, timeout_s + 3 + h.slack())
        waited = time.monotonic() - start
        h.check(state in ("eof", "reset"), "stalled handshake: still open after %.1f s"
                % waited)
        h.check(waited >= timeout_s * 0.8, "closed after %.2f s, before the deadline" % waited)
        s.close()


def test_tls_handshakes_count(env):
    """A TLS handshake is a proxy handshake for [gateway] max_handshakes:
    with two clients stalled in it the listener stops accepting, and a
    third one is served only once the deadline closed one of them."""
    gw2 = h.proxy_gateway(env, name="gw-budget", http=False, socks5=False, https=True,
                          port=h.free_port(), control=os.path.join(env.dir, "budget.sock"),
                          max_handshakes=2)
    mark = gw2.mark()
    stalled = [socket.create_connection(("127.0.0.1", gw2.https_port), timeout=5)
               for _ in range(2)]
    gw2.wait_for_log("Handshake limit reached", 5 + h.slack(), since=mark)
    start = time.monotonic()
    ctx = ssl.create_default_context(cafile=env.ca)
    raw = socket.create_connection(("127.0.0.1", gw2.https_port), timeout=10 + h.slack())
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        waited = time.monotonic() - start
        h.check(s.version() in ("TLSv1.3", "TLSv1.2"), "no TLS session")
    timeout_s = h.HANDSHAKE_TIMEOUT_MS / 1000.0
    h.check(waited >= timeout_s * 0.5,
            "third handshake done after %.2f s, while two others held the budget" % waited)
    for s in stalled:
        s.close()
    gw2.stop()


# ---- certificate reload -------------------------------------------------------------

def test_sighup_new_certificate(env):
    """SIGHUP with a new certificate: new connections get it, a connection
    opened before keeps working with the one it has."""
    first = os.path.join(env.certs, "server.crt")
    second_dir = h.certs("second")
    old = proxy_tls(env, verify=False)
    status, _, _ = get_over(env, old)
    h.check(status == 200, "before the reload: %r" % status)
    h.check(old.getpeercert(binary_form=True) == cert_der(first), "not the first certificate")
    with open(env.gwp.config) as f:
        text = f.read()
    key_first = os.path.join(env.certs, "server.key")
    swapped = text.replace(first, os.path.join(second_dir, "server.crt")).replace(
        key_first, os.path.join(second_dir, "server.key"))
    h.check(swapped != text, "certificate paths not in %s" % env.gwp.config)
    # the tunnel's certificate changes too: restore it all afterwards
    try:
        with open(env.gwp.config, "w") as f:
            f.write(swapped)
        hup(env)
        with proxy_tls(env, verify=False) as s:
            h.check(s.getpeercert(binary_form=True) == cert_der(
                os.path.join(second_dir, "server.crt")), "new connection: not the new certificate")
            status, _, _ = get_over(env, s)
            h.check(status == 200, "new connection: status %r" % status)
        status, _, body = get_over(env, old, path="/file/hello.txt")
        h.check(status == 200 and body == HELLO, "old connection after the reload: %r" % status)
        old.close()
    finally:
        with open(env.gwp.config, "w") as f:
            f.write(text)
        hup(env)
    with proxy_tls(env) as s:
        h.check(s.getpeercert(binary_form=True) == cert_der(first), "not restored")


if __name__ == "__main__":
    h.run([test_curl_http_origin, test_curl_connect_https_target, test_curl_bulk_both_ways,
           test_wrong_password_407, test_group_section_applies, test_half_close_both_ways,
           test_slow_reader_long_download,
           test_node_client,
           test_tls12_and_alpn, test_plain_http_to_tls_port, test_stalled_tls_handshake,
           test_tls_handshakes_count,
           test_sighup_new_certificate], fixture=setup)
