"""Clients a test drives by hand: tunnel frames and a hand-driven tunnel peer
(FrameConn, docs/protocol.md), TLS to the tunnel port, raw SOCKS5 and HTTP
CONNECT clients of the proxies, curl wrappers, and readers that tell how a
peer closed.
"""

import base64
import hashlib
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

from .base import GW_PASS, GW_USER, PROXY_PASS, PROXY_USER, check, fail, slack
from .data import gen_bytes


# ---- tunnel frames (docs/protocol.md, include/tunnel/anyproxy/frame.h) -------------------

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


# ---- TLS to the tunnel port ---------------------------------------------------

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


# ---- raw proxy clients ---------------------------------------------------------

def scrape_metrics(port):
    """A daemon's metrics endpoint on 127.0.0.1:port as {(name, labels):
    value}, labels a sorted tuple of (label, value)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        _how, _, data = read_until_closed(s, 10 + slack())
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    check(b" 200 " in head.split(b"\r\n")[0], "metrics answer: %r" % head[:80])
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$', line)
        check(m is not None, "metrics line not understood: %r" % line)
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


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


def echo_roundtrip(sock, what, size=4096, seed=None):
    """Send size generated bytes through sock to an echo server and read
    them back; fail naming `what`."""
    payload = gen_bytes(size, seed if seed is not None else size % 97 + 1)
    sock.settimeout(10)
    try:
        sock.sendall(payload)
        got = recv_exact(sock, len(payload))
    except (OSError, ConnectionError) as e:
        fail("%s: echo round trip of %d bytes failed: %r" % (what, size, e))
    check(got == payload, "%s: echo returned different bytes" % what)


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


# ---- a hand-driven tunnel peer ------------------------------------------------

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
