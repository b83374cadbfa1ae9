#!/usr/bin/env python3
"""HTTP forwarding reuses the agent's connection to the origin.

Consecutive absolute-URI requests on one user connection to the same origin
with the same identity go out on one stream, so the agent keeps one TCP
connection to the origin ("Connection: keep-alive" upstream). When the user
connection ends or moves on to another origin, the idle stream is parked in
the gateway's origin pool, and a later user connection of the same identity
to the same origin takes it. Another user, another group, another origin,
or the same user name admitted with other credentials (another listener)
never takes it. A parked connection is closed after [proxy.http]
origin_pool_idle_ms (the pool is off by default; on here); a
kept one when its user connection times out; the origin closing either is
noticed; a request that meets a connection the origin has just closed is
sent again on a new one when it is idempotent and has no body, and answered
502 otherwise; bytes after a response's end are never taken for the next
response.

The origin here counts the TCP connections it accepts and numbers the
requests on each, so every case can tell reuse from new connections.
"""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

KEEPALIVE_MS = 1500  # [proxy.http] keepalive_timeout_ms of this gateway
POOL_IDLE_MS = 4000  # [proxy.http] origin_pool_idle_ms of this gateway (default 0: off)
AGENTS = {"prod": "production", "test": "testing", "def": None}


class CountingOrigin:
    """A keep-alive HTTP/1.1 origin. Every response body is
    "conn=C req=R path=P" (C: the connection's number from 1, R: the request's
    number on it from 1). A request head saying "Connection: close" is
    answered with "Connection: close" and the connection closed. Knobs:
      stale_next   the next request on an already used connection is not
                   answered: the connection is closed instead (an origin
                   that closed an idle connection just as the request came)
      idle_close_s close a connection this long after its last response
      extra        send these bytes right after the next response"""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = 0
        self.seen = []          # (conn, req, method, path, head)
        self.closed = set()     # connection numbers closed (by either side)
        self.stale_next = False
        self.idle_close_s = None
        self.extra = b""
        self.server = h.RawServer(self._serve)

    @property
    def port(self):
        return self.server.port

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _serve(self, c):
        with self.lock:
            self.accepted += 1
            num = self.accepted
        data = b""
        req = 0
        try:
            while True:
                if req and self.idle_close_s is not None:
                    c.settimeout(self.idle_close_s)
                while b"\r\n\r\n" not in data:
                    try:
                        b = c.recv(65536)
                    except (socket.timeout, TimeoutError):
                        return
                    if not b:
                        return
                    data += b
                c.settimeout(120)
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                fields = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.strip()
                length = int(fields.get("content-length", "0"))
                while len(data) < length:
                    b = c.recv(65536)
                    if not b:
                        return
                    data += b
                data = data[length:]
                req += 1
                with self.lock:
                    self.seen.append((num, req, method, path, head))
                    stale = self.stale_next and req > 1
                    if stale:
                        self.stale_next = False
                    extra, self.extra = self.extra, b""
                if stale:
                    return
                close = "close" in fields.get("connection", "").lower()
                body = b"conn=%d req=%d path=%s" % (num, req, path.encode())
                if method == "HEAD":
                    body_out = b""
                else:
                    body_out = body
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: %d\r\n%s\r\n%s%s"
                          % (len(body), b"Connection: close\r\n" if close else b"",
                             body_out, extra))
                if close:
                    return
        finally:
            with self.lock:
                self.closed.add(num)

    def close(self):
        self.server.close()


HTTPS_USER, HTTPS_PASS = "alice", "itest-Https-Alice-5e21c4"


def setup(env):
    # no proxy credentials on the HTTP listener: every user name is admitted
    # to the groups without a section, so users differ by name only; the
    # HTTPS listener admits alice with her password only
    env.gwp = h.proxy_gateway(env, user=None, https=True,
                              listener_auth={"proxy.https": (HTTPS_USER, HTTPS_PASS)},
                              gw_env={"PROXY_HTTP_KEEPALIVE_TIMEOUT_MS": str(KEEPALIVE_MS),
                                      "PROXY_HTTP_ORIGIN_POOL_IDLE_MS": str(POOL_IDLE_MS)})
    for cid, group in AGENTS.items():
        h.proxy_agent(env, cid, group)
    env.origin = CountingOrigin()
    env.servers.append(env.origin)


class UserConn:
    """One keep-alive connection to the gateway's HTTP proxy (https: its
    HTTPS proxy, TLS to the gateway)."""

    def __init__(self, env, https=False):
        port = env.gwp.https_port if https else env.gwp.http_port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if https:
            self.sock = h.tls_context(os.path.join(env.certs, "ca.crt")).wrap_socket(
                self.sock, server_hostname="localhost")
        self.buf = b""

    def request(self, url, user=None, method="GET", body=None, close=False,
                password="any-password"):
        host = url.split("/")[2]
        head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, url, host)
        if user:
            head += "Proxy-Authorization: %s\r\n" % h.basic_auth(user, password)
        if body is not None:
            head += "Content-Length: %d\r\n" % len(body)
        if close:
            head += "Connection: close\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + (body or b""))
        return self.response(method)

    def response(self, method="GET"):
        while b"\r\n\r\n" not in self.buf:
            b = self.sock.recv(65536)
            h.check(b, "the gateway closed before a response head (got %r)" % self.buf)
            self.buf += b
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        length = 0 if method == "HEAD" else int(fields.get("content-length", "0"))
        while len(self.buf) < length:
            b = self.sock.recv(65536)
            h.check(b, "the gateway closed in the middle of a body")
            self.buf += b
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, fields, body

    def closed_by_peer(self, timeout):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(10)

    def close(self):
        self.sock.close()


def accepted(env):
    with env.origin.lock:
        return env.origin.accepted


def ok_body(status, body, path):
    h.check(status == 200 and (b"path=%s" % path.encode()) in body,
            "expected 200 for %s, got %d %r" % (path, status, body))
    return int(body.split(b" ")[0].split(b"=")[1])  # the origin's connection number


def test_sequential_requests_one_origin_connection(env):
    """20 GETs (and a HEAD) on one user connection: one stream, one agent
    connection to the origin, and the origin is asked to keep it."""
    before = h.stream_totals(env)
    opens0 = env.apctl_json("stats")["opens_ok"]
    mark = env.gwp.mark()
    a0 = accepted(env)
    u = UserConn(env)
    try:
        conns = set()
        for i in range(20):
            st, f, body = u.request(env.origin.url("/seq/%d" % i), "alice")
            conns.add(ok_body(st, body, "/seq/%d" % i))
            h.check(f.get("connection") == "keep-alive", "request %d: %r" % (i, f))
        st, f, body = u.request(env.origin.url("/seq/head"), "alice", method="HEAD")
        h.check(st == 200 and body == b"", "HEAD: %d %r" % (st, body))
        st, f, body = u.request(env.origin.url("/seq/after-head"), "alice")
        conns.add(ok_body(st, body, "/seq/after-head"))
    finally:
        u.close()
    h.check(len(conns) == 1 and accepted(env) - a0 == 1,
            "22 requests used origin connections %r (%d accepted)" % (conns, accepted(env) - a0))
    h.expect_streams(env, before, {"def": 1}, "22 requests on one user connection")
    opens = env.apctl_json("stats")["opens_ok"] - opens0
    h.check(opens == 22, "requests answered (opens_ok): %d, expected 22" % opens)

    def reused_lines():
        return [l for l in env.gwp.find("Gateway received request", mark)
                if l.get("user") == "alice" and l.get("origin_connection") == "kept"]
    h.wait_until(lambda: len(reused_lines()) == 21, 3,
                 "21 'Gateway received request origin_connection=kept' lines")
    heads = [s[4] for s in env.origin.seen if s[3].startswith("/seq/")]
    h.check(all(b"\r\nConnection: keep-alive" in x for x in heads),
            "the origin was not asked to keep the connection: %r" % heads[:1])


def test_different_users_never_share(env):
    """amy, bob, amy, amy, anonymous on one user connection: a user's
    connection is never another's; amy gets hers back (parked while bob's
    request went out)."""
    a0 = accepted(env)
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/u/1"), "amy")[::2], "/u/1")
        c2 = ok_body(*u.request(env.origin.url("/u/2"), "bob")[::2], "/u/2")
        c3 = ok_body(*u.request(env.origin.url("/u/3"), "amy")[::2], "/u/3")
        c4 = ok_body(*u.request(env.origin.url("/u/4"), "amy")[::2], "/u/4")
        c5 = ok_body(*u.request(env.origin.url("/u/5"))[::2], "/u/5")  # anonymous
        c6 = ok_body(*u.request(env.origin.url("/u/6"), "bob")[::2], "/u/6")
    finally:
        u.close()
    h.check(len({c1, c2, c5}) == 3 and c3 == c1 and c4 == c1 and c6 == c2,
            "origin connections by request: %r" % ([c1, c2, c3, c4, c5, c6],))
    h.check(accepted(env) - a0 == 3, "%d origin connections, expected 3"
            % (accepted(env) - a0))


def test_different_groups_never_share(env):
    """user.production then user.testing then user.production: each group's
    own agent, never a stream of the other group."""
    before = h.stream_totals(env)
    a0 = accepted(env)
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/g/1"), "user.production")[::2], "/g/1")
        c2 = ok_body(*u.request(env.origin.url("/g/2"), "user.production")[::2], "/g/2")
        c3 = ok_body(*u.request(env.origin.url("/g/3"), "user.testing")[::2], "/g/3")
        c4 = ok_body(*u.request(env.origin.url("/g/4"), "user.production")[::2], "/g/4")
        c5 = ok_body(*u.request(env.origin.url("/g/5"), "user.testing")[::2], "/g/5")
    finally:
        u.close()
    h.check(c1 == c2 == c4 and c3 == c5 and c3 != c1,
            "origin connections: %r" % ([c1, c2, c3, c4, c5],))
    h.expect_streams(env, before, {"prod": 1, "test": 1}, "requests of two groups")
    h.check(accepted(env) - a0 == 2, "%d origin connections" % (accepted(env) - a0))


def test_other_origin_parks_the_kept_stream(env):
    """A request to another origin (here: another port) takes a new stream;
    the kept one goes to the pool, where another user connection of the
    same user finds it."""
    other = CountingOrigin()
    env.servers.append(other)
    u = UserConn(env)
    v = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/o/1"), "carol")[::2], "/o/1")
        st, _, body = u.request(other.url("/o/2"), "carol")
        h.check(st == 200 and body.startswith(b"conn=1 "), "other origin: %d %r" % (st, body))
        c3 = ok_body(*v.request(env.origin.url("/o/3"), "carol")[::2], "/o/3")
        h.check(c3 == c1 and c1 not in env.origin.closed,
                "the parked connection %d was not taken (got %d)" % (c1, c3))
    finally:
        u.close()
        v.close()


def test_parked_connection_lifetime(env):
    """The user closes: the origin connection is parked, not closed; a new
    user connection of the same user takes it, one of another user does
    not; unused, it is closed after origin_pool_idle_ms."""
    a0 = accepted(env)
    u = UserConn(env)
    c1 = ok_body(*u.request(env.origin.url("/e/1"), "dave")[::2], "/e/1")
    u.close()
    time.sleep(0.3)
    h.check(c1 not in env.origin.closed, "the origin connection closed with the user's")
    other = UserConn(env)
    same = UserConn(env)
    try:
        c2 = ok_body(*other.request(env.origin.url("/e/2"), "eve")[::2], "/e/2")
        c3 = ok_body(*same.request(env.origin.url("/e/3"), "dave")[::2], "/e/3")
    finally:
        other.close()
        same.close()
    h.check(c2 != c1 and c3 == c1, "connections: dave %d, eve %d, dave again %d" % (c1, c2, c3))
    h.check(accepted(env) - a0 == 2, "%d origin connections, expected 2" % (accepted(env) - a0))
    t0 = time.monotonic()
    h.wait_until(lambda: c1 in env.origin.closed and c2 in env.origin.closed,
                 POOL_IDLE_MS / 1000.0 + 5, "the parked connections to close")
    h.check(time.monotonic() - t0 >= POOL_IDLE_MS / 1000.0 * 0.5,
            "parked connections closed long before the pool's idle time")


def test_user_connection_timeout_closes_the_origin_connection(env):
    """A kept connection is not parked when the keep-alive wait of its user
    connection ([proxy.http] keepalive_timeout_ms) ends: both close."""
    u = UserConn(env)
    try:
        c2 = ok_body(*u.request(env.origin.url("/e/4"), "fred")[::2], "/e/4")
        t0 = time.monotonic()
        h.check(u.closed_by_peer(KEEPALIVE_MS / 1000.0 + 5),
                "the gateway kept the idle user connection")
        h.wait_until(lambda: c2 in env.origin.closed, 5,
                     "the origin connection to close with the idle user connection")
        h.check(time.monotonic() - t0 >= KEEPALIVE_MS / 1000.0 * 0.8,
                "closed before the keep-alive timeout")
    finally:
        u.close()


def test_origin_closing_the_idle_connection(env):
    """The origin closes its idle connection (its own idle timeout): the
    next request goes out on a new one and succeeds."""
    env.origin.idle_close_s = 0.2
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/i/1"), "erin")[::2], "/i/1")
        h.wait_until(lambda: c1 in env.origin.closed, 5, "the origin's idle close")
        time.sleep(0.2)  # the FIN travels through agent and tunnel
        c2 = ok_body(*u.request(env.origin.url("/i/2"), "erin")[::2], "/i/2")
        h.check(c2 != c1, "a closed origin connection was used again")
    finally:
        env.origin.idle_close_s = None
        u.close()


def test_stale_connection_retried_for_idempotent_request(env):
    """The origin closes the kept connection when the next request arrives
    (it had just timed it out): the GET is sent again on a new connection,
    the user sees one 200 and nothing of the failed attempt."""
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/s/1"), "frank")[::2], "/s/1")
        env.origin.stale_next = True
        n0 = len(env.origin.seen)
        st, f, body = u.request(env.origin.url("/s/2"), "frank")
        c2 = ok_body(st, body, "/s/2")
        h.check(c2 != c1, "answered on the stale connection?")
        tries = [s for s in env.origin.seen[n0:] if s[3] == "/s/2"]
        h.check(len(tries) == 2 and tries[0][0] == c1 and tries[1][0] == c2,
                "the origin saw /s/2 as %r" % ([(s[0], s[1]) for s in tries],))
        # and the new connection is kept in turn
        c3 = ok_body(*u.request(env.origin.url("/s/3"), "frank")[::2], "/s/3")
        h.check(c3 == c2, "the retried request's connection was not kept")
    finally:
        u.close()


def test_stale_connection_not_retried_with_body(env):
    """The same for a POST with a body: never sent twice; the user gets the
    502 (and "Connection: close", as for every error the gateway answers)."""
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/p/1"), "grace")[::2], "/p/1")
        env.origin.stale_next = True
        n0 = len(env.origin.seen)
        st, f, body = u.request(env.origin.url("/p/2"), "grace", method="POST",
                                body=b"x" * 100)
        h.check(st == 502, "POST on a stale connection: %d %r" % (st, body))
        tries = [s for s in env.origin.seen[n0:] if s[3] == "/p/2"]
        h.check(len(tries) == 1 and tries[0][0] == c1, "the origin saw the POST %d times"
                % len(tries))
    finally:
        env.origin.stale_next = False
        u.close()


def test_bytes_after_a_response_are_not_the_next_response(env):
    """The origin sends a whole second response after the first one: the
    gateway drops it with the connection; the next request gets its own
    answer from a new origin connection."""
    u = UserConn(env)
    try:
        env.origin.extra = (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED")
        c1 = ok_body(*u.request(env.origin.url("/x/1"), "heidi")[::2], "/x/1")
        time.sleep(0.2)
        st, f, body = u.request(env.origin.url("/x/2"), "heidi")
        c2 = ok_body(st, body, "/x/2")
        h.check(b"INJECTED" not in body and c2 != c1,
                "the injected response was used: conn %d %r" % (c2, body))
        h.wait_until(lambda: c1 in env.origin.closed, 5, "the tainted connection to close")
    finally:
        env.origin.extra = b""
        u.close()


def test_connection_close_requests_share_the_origin_connection(env):
    """Users that send one request per connection ("Connection: close"):
    each user connection is closed after its response, but the origin is
    asked to keep its connection, which goes to the pool and serves the
    next user connection."""
    a0 = accepted(env)
    conns = []
    for i in range(5):
        u = UserConn(env)
        try:
            n0 = len(env.origin.seen)
            st, f, body = u.request(env.origin.url("/c/%d" % i), "ivan", close=True)
            conns.append(ok_body(st, body, "/c/%d" % i))
            h.check(f.get("connection") == "close", "response: %r" % f)
            h.check(b"\r\nConnection: keep-alive" in env.origin.seen[n0][4],
                    "the origin saw %r" % env.origin.seen[n0][4])
            h.check(u.closed_by_peer(2), "the gateway kept the user connection")
        finally:
            u.close()
    h.check(len(set(conns)) == 1 and accepted(env) - a0 == 1,
            "5 one-request user connections used origin connections %r" % conns)


def test_other_credentials_never_share(env):
    """alice with her password on the HTTPS proxy, then a user of the HTTP
    proxy (no credentials there) who calls itself alice: one request per
    user connection, so each origin connection goes to the pool. The
    HTTP "alice" never gets the connection the real alice parked, nor she
    the other's; each gets its own back."""
    a0 = accepted(env)
    conns = []
    for i, https in enumerate((True, False, True, False)):
        u = UserConn(env, https=https)
        try:
            st, _, body = u.request(env.origin.url("/cred/%d" % i), HTTPS_USER, close=True,
                                    password=HTTPS_PASS if https else "guessed")
            conns.append(ok_body(st, body, "/cred/%d" % i))
            h.check(u.closed_by_peer(2), "the gateway kept the user connection")
        finally:
            u.close()
    h.check(conns[0] != conns[1] and conns[2] == conns[0] and conns[3] == conns[1],
            "origin connections by request (https, http, https, http): %r" % conns)
    h.check(accepted(env) - a0 == 2, "%d origin connections" % (accepted(env) - a0))


def test_drained_agent_is_not_held(env):
    """apctl drain of the agent ends the kept stream at once (the origin
    sees its connection close); after undrain the next request on the same
    user connection takes a new stream."""
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/d/1"), "judy")[::2], "/d/1")
        rc, out, err = env.apctl("drain", "def")
        h.check(rc == 0, "apctl drain: rc %d %s" % (rc, err))
        try:
            h.wait_until(lambda: c1 in env.origin.closed, 3 + h.slack(),
                         "the kept origin connection to close on drain")
        finally:
            rc, out, err = env.apctl("undrain", "def")
            h.check(rc == 0, "apctl undrain: rc %d %s" % (rc, err))
        c2 = ok_body(*u.request(env.origin.url("/d/2"), "judy")[::2], "/d/2")
        h.check(c2 != c1, "a released stream was used again")
    finally:
        u.close()


def test_agent_going_away_is_not_held(env):
    """An agent stopping (GOAWAY) with only kept streams open is not held
    until the users' keep-alive ends: the gateway releases them and the
    agent exits at once."""
    spare = h.proxy_agent(env, "spare", "spare")
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/a/1"), "kim.spare")[::2], "/a/1")
        t0 = time.monotonic()
        spare.send_signal(signal.SIGTERM)
        rc = spare.wait_exit(10)
        secs = time.monotonic() - t0
        h.check(rc == 0 and secs < 3 + h.slack(),
                "the agent took %.1f s (rc %s) to stop with a kept stream" % (secs, rc))
        h.wait_until(lambda: c1 in env.origin.closed, 5, "the origin connection to close")
    finally:
        u.close()


def test_gateway_shutdown_is_not_held(env):
    """SIGTERM to the gateway closes an idle user connection at once even
    when it keeps a stream (last: the shared gateway stops here)."""
    u = UserConn(env)
    try:
        c1 = ok_body(*u.request(env.origin.url("/t/1"), "leo")[::2], "/t/1")
        t0 = time.monotonic()
        env.gwp.send_signal(signal.SIGTERM)
        rc = env.gwp.wait_exit(10)
        secs = time.monotonic() - t0
        h.check(rc == 0 and secs < 2 + h.slack(),
                "the gateway took %.1f s (rc %s) to stop" % (secs, rc))
        h.check(u.closed_by_peer(2), "the user connection is still open")
        h.wait_until(lambda: c1 in env.origin.closed, 5, "the origin connection to close")
    finally:
        u.close()


if __name__ == "__main__":
    h.run([
        test_sequential_requests_one_origin_connection,
        test_different_users_never_share,
        test_different_groups_never_share,
        test_other_origin_parks_the_kept_stream,
        test_parked_connection_lifetime,
        test_user_connection_timeout_closes_the_origin_connection,
        test_origin_closing_the_idle_connection,
        test_stale_connection_retried_for_idempotent_request,
        test_stale_connection_not_retried_with_body,
        test_bytes_after_a_response_are_not_the_next_response,
        test_connection_close_requests_share_the_origin_connection,
        test_other_credentials_never_share,
        test_drained_agent_is_not_held,
        test_agent_going_away_is_not_held,
        test_gateway_shutdown_is_not_held,
    ], fixture=setup)
