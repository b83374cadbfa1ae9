"""Servers a test stands up on loopback: RawServer (one thread per
connection running a handler) with its handlers (echo, hash, timed and
endless senders), FakeServer where a gateway should be, the HTTP and HTTPS
origins (HttpTarget, HttpsTarget) and a Blackhole that never completes a
handshake. Every thread is a daemon thread; close() closes every socket
(TestEnv.cleanup() calls it for objects in env.servers).
"""

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from .base import _port_open, fail, free_port, wait_until
from .data import gen_chunks, gen_sha256


# ---- raw servers ---------------------------------------------------------------

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


class UdpServer:
    """A UDP server on host (IPv4 or IPv6) answering each datagram with
    answer(data); seen lists (data, peer) of every datagram received."""

    def __init__(self, host="127.0.0.1", answer=lambda d: d):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self.seen.append((data, peer))
            self.sock.sendto(self.answer(data), peer)

    def received(self):
        """The payloads received, in order."""
        return [d for d, _ in self.seen]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
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


# ---- HTTP(S) targets ----------------------------------------------------------

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


# ---- RawServer handlers -------------------------------------------------------

def sha256_to_eof(conn):
    """Read conn to EOF; (length, hex SHA-256) of what came."""
    h = hashlib.sha256()
    n = 0
    while True:
        b = conn.recv(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    return n, h.hexdigest()


def hash_until_eof(conn):
    """RawServer handler: read to EOF, reply "LEN SHA256\\n", close."""
    n, digest = sha256_to_eof(conn)
    conn.sendall(b"%d %s\n" % (n, digest.encode()))


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


# ---- a target that never answers ----------------------------------------------

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
