#!/usr/bin/env python3
"""HTTP forwarding never reads request body bytes as a request.

An origin that answers at once (413, without reading the body) ends the
response before the gateway has forwarded the request body. The rest of that
body is the user's data, not the user's next request: if the gateway went back
to parsing requests, a body holding a valid-looking proxy request would be
sent on to another target (request smuggling past whatever the origin meant
to refuse). The gateway must finish the response, say "Connection: close",
drop the rest of the body and close.

Each case sends a request whose body is made of complete proxy requests for a
second target (which records every hit), by Content-Length and chunked,
small and beyond the stream window (256 KiB), with the rest of the body sent
after the 413 arrived (a slow upload) or all at once.

Also: an interim (1xx) head the gateway cannot queue for the user ends the
connection instead of silently vanishing from the response.
"""
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WINDOW = 256 * 1024
BIG = WINDOW + 64 * 1024          # the rest of a body, beyond one stream window
AT_ONCE = 16 * 1024 * 1024        # more than loopback buffers take before the 413
REFUSAL = b"request entity too large\n"


def setup(env):
    env.gwp = h.proxy_gateway(env)
    h.proxy_agent(env, "def")
    env.victim = h.HttpTarget("127.0.0.1", name="victim")
    env.servers.append(env.victim)


class RefusingOrigin:
    """Answers 413 as soon as a request head has arrived, never reading the
    body; then half-closes (connection "close") or just stays (keep-alive)
    until close(). A small receive buffer, so that the body backs up."""

    def __init__(self, connection):
        self.connection = connection
        self.heads = []
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                b = c.recv(4096)
                if not b:
                    return
                data += b
            self.heads.append(data.partition(b"\r\n\r\n")[0])
            c.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: %d\r\nConnection: %s\r\n\r\n%s"
                      % (len(REFUSAL), self.connection.encode(), REFUSAL))
            if self.connection == "close":
                c.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self._stop.wait()  # never read the body

    def close(self):
        self._stop.set()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


def smuggled_request(env):
    port = env.victim.port
    return ("GET http://127.0.0.1:%d/smuggled HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Proxy-Authorization: %s\r\n\r\n"
            % (port, port, h.basic_auth(h.PROXY_USER, h.PROXY_PASS))).encode()


def repeated(unit, size):
    """Whole copies of unit, at least size bytes."""
    return unit * (size // len(unit) + 1)


def chunked(payload, unit):
    """payload as chunks of len(unit) bytes each, and the last chunk."""
    out = []
    for i in range(0, len(payload), len(unit)):
        part = payload[i:i + len(unit)]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
    return b"".join(out) + b"0\r\n\r\n"


def request_head(origin, framing, length=None):
    head = ("POST http://127.0.0.1:%d/upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Proxy-Authorization: %s\r\n"
            % (origin.port, origin.port, h.basic_auth(h.PROXY_USER, h.PROXY_PASS)))
    if framing == "length":
        head += "Content-Length: %d\r\n" % length
    else:
        head += "Transfer-Encoding: chunked\r\n"
    return (head + "\r\n").encode()


class Sender:
    """Sends bytes on a thread (the gateway may stop reading while the
    response is on its way); a failure after the gateway closed is fine."""

    def __init__(self, sock, data):
        self.error = None
        self._t = threading.Thread(target=self._run, args=(sock, data), daemon=True)
        self._t.start()

    def _run(self, sock, data):
        try:
            sock.sendall(data)
        except OSError as e:
            self.error = e

    def join(self):
        self._t.join(60)
        h.check(not self._t.is_alive(), "the body sender is still blocked after 60 s")


def read_refusal(s, what):
    """The origin's 413; returns its head text."""
    s.settimeout(30)
    status, headers, text, rest = h.read_http_head(s)
    h.check(status == 413, "%s: status %r, expected the origin's 413:\n%s" % (what, status, text))
    body = h.read_http_body(s, headers, rest)
    h.check(body == REFUSAL, "%s: 413 body %r" % (what, body[:200]))
    return text


def expect_close(s, what):
    """Nothing after the 413, then the close."""
    how, _secs, after = h.read_until_closed(s, 15)
    h.check(not after, "%s: %d bytes after the 413 (the body read as a request?): %r"
            % (what, len(after), after[:200]))
    return how


def expect_victim_untouched(env, what):
    """A request of our own to the victim, on a fresh connection, after the
    attack: it must be the only one the victim ever saw from this case."""
    before = len(env.victim.requests)
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=10)
    try:
        port = env.victim.port
        s.sendall(("GET http://127.0.0.1:%d/probe HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Proxy-Authorization: %s\r\nConnection: close\r\n\r\n"
                   % (port, port, h.basic_auth(h.PROXY_USER, h.PROXY_PASS))).encode())
        status, headers, text, rest = h.read_http_head(s)
        h.check(status == 200, "probe through the gateway: %r\n%s" % (status, text))
        h.read_http_body(s, headers, rest)
    finally:
        s.close()
    paths = [r["path"] for r in env.victim.requests[before:]]
    smuggled = [r for r in env.victim.requests if r["path"] == "/smuggled"]
    h.check(not smuggled, "%s: the victim received %d smuggled request(s)" % (what, len(smuggled)))
    h.check(paths == ["/probe"], "%s: the victim saw %r, expected only the probe" % (what, paths))


def attack(env, framing, connection, rest_size, at_once):
    """One request: head (and for chunked, one complete chunk) first; the
    rest of the body, complete proxy requests for the victim, either sent
    along at once or only after the 413 has arrived."""
    what = "%s body, origin '%s', %s bytes %s" % (framing, connection, rest_size,
                                                   "at once" if at_once else "after the 413")
    unit = smuggled_request(env)
    origin = RefusingOrigin(connection)
    env.servers.append(origin)
    mark = env.gwp.mark()
    payload = repeated(unit, rest_size)
    if framing == "length":
        first = b""
        rest = payload
        head = request_head(origin, "length", len(payload))
    else:
        # a complete first chunk: the next byte of a chunked body is a size
        # line, which the attacker fills with a request instead
        first = b"5\r\nhello\r\n"
        rest = chunked(payload, unit) if at_once else payload
        head = request_head(origin, "chunked")
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=30)
    try:
        if at_once:
            sender = Sender(s, head + first + rest)
            text = read_refusal(s, what)
        else:
            s.sendall(head + first)
            text = read_refusal(s, what)
            sender = Sender(s, rest)
        how = expect_close(s, what)
        sender.join()
    finally:
        s.close()
    h.note("%s: closed (%s)" % (what, how))
    h.check(len(origin.heads) == 1, "%s: the origin saw %d request heads"
            % (what, len(origin.heads)))
    expect_victim_untouched(env, what)
    h.check(env.gwp.alive(), "the gateway died:\n%s" % env.gwp.tail())
    h.check(not env.gwp.find("Bad request from user", mark),
            "%s: the gateway parsed body bytes as a request:\n%s" % (what, env.gwp.tail()))
    h.check("\r\nconnection: close" in text.lower(),
            "%s: the 413 came before the body was forwarded, so the connection cannot be "
            "reused and the response must say 'Connection: close':\n%s" % (what, text))


def test_length_body_after_413_keep_alive(env):
    attack(env, "length", "keep-alive", len(smuggled_request(env)), at_once=False)


def test_length_body_after_413_close(env):
    attack(env, "length", "close", len(smuggled_request(env)), at_once=False)


def test_length_body_after_413_beyond_window(env):
    attack(env, "length", "keep-alive", BIG, at_once=False)


def test_chunked_body_after_413_keep_alive(env):
    attack(env, "chunked", "keep-alive", len(smuggled_request(env)), at_once=False)


def test_chunked_body_after_413_close(env):
    attack(env, "chunked", "close", len(smuggled_request(env)), at_once=False)


def test_chunked_body_after_413_beyond_window(env):
    attack(env, "chunked", "keep-alive", BIG, at_once=False)


def test_length_body_at_once_beyond_window(env):
    attack(env, "length", "keep-alive", AT_ONCE, at_once=True)


def test_chunked_body_at_once_beyond_window(env):
    attack(env, "chunked", "close", AT_ONCE, at_once=True)


def test_linger_ends_for_a_user_that_never_stops(env):
    """After the cut-short response the gateway drops what the user sends,
    but not forever: a user that keeps sending (and never closes) is cut
    off after the lingering time (2 s), and its bytes never reach anyone."""
    unit = smuggled_request(env)
    origin = RefusingOrigin("keep-alive")
    env.servers.append(origin)
    mark = env.gwp.mark()
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=30)
    try:
        s.sendall(request_head(origin, "length", 1 << 30))
        read_refusal(s, "endless upload")
        h.check(s.recv(1) == b"", "the gateway did not half-close after the response")
        sent = 0
        error = None
        for _ in range(150):  # 30 s at most
            try:
                s.sendall(unit)
                sent += len(unit)
            except OSError as e:
                error = e
                break
            time.sleep(0.2)
        h.check(error is not None, "the gateway still took bytes after 30 s (%d sent)" % sent)
    finally:
        s.close()
    h.note("cut off after %d bytes: %r" % (sent, error))
    line = env.gwp.wait_for_log("User connection timed out", 10, since=mark)
    h.check(line.get("phase") == "lingering close",
            "the linger deadline should be logged as such: %r" % line)
    env.gwp.wait_for_log("User connection closed", 10, since=mark)
    expect_victim_untouched(env, "endless upload")


def test_error_reply_during_upload_is_delivered(env):
    """Our own error reply (here 502: the target refuses the connection)
    while the user is still uploading the body ends with the same lingering
    close: the rest of the body is read and dropped, so the user finishes
    sending, reads the 502, and the connection ends with a FIN. A plain
    close with the body unread would reset the connection under a user that
    is still sending."""
    port = h.free_port()  # nothing listens there: the agent's dial is refused
    auth = h.basic_auth(h.PROXY_USER, h.PROXY_PASS)
    size = AT_ONCE * 4
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=30)
    sent_error = []

    def upload():
        try:
            chunk = b"x" * 65536
            for _ in range(size // len(chunk)):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            sent_error.append(e)

    try:
        s.sendall(("POST http://127.0.0.1:%d/upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Proxy-Authorization: %s\r\nContent-Length: %d\r\n\r\n"
                   % (port, port, auth, size)).encode())
        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        status, headers, text, rest = h.read_http_head(s)
        h.check(status == 502, "the refused dial should be a 502:\n%s" % text)
        h.check(headers.get("connection", "").lower() == "close",
                "the error reply should say Connection: close:\n%s" % text)
        sender.join(30)
        h.check(not sender.is_alive(), "the upload did not finish within 30 s")
        h.check(not sent_error, "the upload was cut off after the 502: %r" % sent_error)
        state = h.closed_state(s, 5)
        h.check(state == "eof", "the connection should end with a FIN, not %r" % state)
    finally:
        s.close()


def test_complete_body_keeps_the_connection(env):
    """The other side of the rule: a body forwarded in full before the
    response keeps the connection, and the next request on it works."""
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=30)
    try:
        port = env.victim.port
        auth = h.basic_auth(h.PROXY_USER, h.PROXY_PASS)
        body = b"0123456789" * 100
        s.sendall(("POST http://127.0.0.1:%d/upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Proxy-Authorization: %s\r\nContent-Length: %d\r\n\r\n"
                   % (port, port, auth, len(body))).encode() + body)
        status, headers, text, rest = h.read_http_head(s)
        h.check(status == 200, "POST: %r\n%s" % (status, text))
        h.check(headers.get("connection", "").lower() == "keep-alive",
                "POST with its whole body: the connection should stay:\n%s" % text)
        h.read_http_body(s, headers, rest)
        s.sendall(("GET http://127.0.0.1:%d/after HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Proxy-Authorization: %s\r\n\r\n" % (port, port, auth)).encode())
        status, headers, text, rest = h.read_http_head(s)
        h.check(status == 200, "second request on the connection: %r\n%s" % (status, text))
        h.read_http_body(s, headers, rest)
    finally:
        s.close()


# Numbered interim heads; the gateway rewrites each almost twice as long
# (it adds "Connection: keep-alive" and the space before the empty reason).
INTERIM = b"HTTP/1.1 103\r\nX-N: %06d\r\n\r\n"
INTERIM_COUNT = 300000                  # 8.7 MB: beyond loopback buffers
FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class InterimFlood:
    """An origin that answers with INTERIM_COUNT interim (1xx) heads, then
    FINAL; .done is set once it has sent everything or failed to."""

    def __init__(self):
        self.done = threading.Event()
        self.error = None
        self.server = h.RawServer(self._serve)

    def _serve(self, c):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                b = c.recv(4096)
                if not b:
                    return
                data += b
            for start in range(0, INTERIM_COUNT, 1000):
                c.sendall(b"".join(INTERIM % i for i in range(start, start + 1000)))
            c.sendall(FINAL)
            c.shutdown(socket.SHUT_WR)
            c.settimeout(30)
            while c.recv(4096):
                pass
        except OSError as e:
            self.error = e
        finally:
            self.done.set()

    def close(self):
        self.server.close()


def test_interim_heads_lost_close_the_connection(env):
    """Interim (1xx) heads the gateway cannot queue for a user that does not
    read (its send queue is full) must end the connection, not vanish from
    the response while the rest goes on. The gateway's queue fills because
    the rewritten heads are longer than the origin's."""
    origin = InterimFlood()
    env.servers.append(origin)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(("127.0.0.1", env.gwp.http_port))
    try:
        port = origin.server.port
        s.sendall(("GET http://127.0.0.1:%d/flood HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Proxy-Authorization: %s\r\n\r\n"
                   % (port, port, h.basic_auth(h.PROXY_USER, h.PROXY_PASS))).encode())
        # Not reading until the origin is through (or stuck: then the wait
        # ends after 20 s and the reading below shows what the user gets).
        origin.done.wait(20)
        how, _secs, data = h.read_until_closed(s, 60)
    finally:
        s.close()
    numbers = [int(n) for n in re.findall(rb"\r\nX-N: (\d{6})\r\n", data)]
    final = data.find(b"HTTP/1.1 200 OK\r\n")
    h.note("%d of %d interim heads, final response %s, then %s"
           % (len(numbers), INTERIM_COUNT, "seen" if final >= 0 else "not seen", how))
    gaps = [(a, b) for a, b in zip([-1] + numbers, numbers) if b != a + 1]
    h.check(not gaps, "interim heads vanished from the middle of the response while later "
            "ones were delivered (first gap: after %d comes %d); a head that cannot be "
            "queued must end the connection" % gaps[0] if gaps else "")
    if final >= 0:
        h.check(len(numbers) == INTERIM_COUNT, "the final response came after %d of %d "
                "interim heads" % (len(numbers), INTERIM_COUNT))
    h.check(env.gwp.alive(), "the gateway died:\n%s" % env.gwp.tail())


if __name__ == "__main__":
    h.run([
        test_length_body_after_413_keep_alive,
        test_length_body_after_413_close,
        test_length_body_after_413_beyond_window,
        test_chunked_body_after_413_keep_alive,
        test_chunked_body_after_413_close,
        test_chunked_body_after_413_beyond_window,
        test_length_body_at_once_beyond_window,
        test_chunked_body_at_once_beyond_window,
        test_linger_ends_for_a_user_that_never_stops,
        test_error_reply_during_upload_is_delivered,
        test_complete_body_keeps_the_connection,
        test_interim_heads_lost_close_the_connection,
    ], fixture=setup)
