#!/usr/bin/env python3
"""Every malformed SOCKS5 message after a SOCKS5 greeting is answered before
the close, in the terms of the message refused (RFC 1928, RFC 1929):

- a greeting that offers no method:       05 FF
- a malformed username/password message:  01 01 (failure)
- a malformed request:                    REP 0x01 (general failure),
                                          0x08 for an unknown address type,
                                          0x04 (host unreachable) for a target
                                          name no host can have (empty, NUL,
                                          control bytes, space, '%', '/', ...):
                                          what the agent answers for a name
                                          that does not canonicalise
                                          (docs/acl.md).

Each case sends raw bytes, expects the exact reply and then EOF; afterwards
the gateway still serves a good request.
"""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

USER = h.PROXY_USER.encode()
PASS = h.PROXY_PASS.encode()
NO_ADDRESS = b"\x00\x01\x00\x00\x00\x00\x00\x00"   # RSV, ATYP 1, 0.0.0.0, port 0


def setup(env):
    env.gwp = h.proxy_gateway(env)
    h.proxy_agent(env, "def")
    env.target = h.HttpTarget("127.0.0.1", name="target")
    env.servers.append(env.target)


def rep(code):
    return b"\x05" + bytes([code]) + NO_ADDRESS


def connect(env):
    s = socket.create_connection(("127.0.0.1", env.gwp.socks_port), timeout=10)
    return s


def authenticated(env):
    """A connection past the greeting and the RFC 1929 exchange."""
    s = connect(env)
    s.sendall(b"\x05\x01\x02")
    h.check(h.recv_exact(s, 2) == b"\x05\x02", "method reply")
    s.sendall(b"\x01" + bytes([len(USER)]) + USER + bytes([len(PASS)]) + PASS)
    h.check(h.recv_exact(s, 2) == b"\x01\x00", "auth status")
    return s


def expect_reply_then_eof(s, want, what):
    how, _secs, data = h.read_until_closed(s, 10)
    s.close()
    h.check(data == want, "%s: got %r then %s, expected %r then EOF" % (what, data, how, want))
    h.check(how == "eof", "%s: the connection ended with a %s, expected a clean close"
            % (what, how))


def still_serving(env):
    r = h.socks5_open(env.gwp.socks_port, "127.0.0.1", env.target.port)
    try:
        h.check(r.rep == 0, "a good request after the malformed ones: %r" % r)
        r.sock.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, text, rest = h.read_http_head(r.sock)
        h.check(status == 200, "GET through the good request: %r\n%s" % (status, text))
    finally:
        r.sock.close()
    h.check(env.gwp.alive(), "the gateway died:\n%s" % env.gwp.tail())


def test_greeting_without_methods(env):
    s = connect(env)
    s.sendall(b"\x05\x00")
    expect_reply_then_eof(s, b"\x05\xff", "greeting with NMETHODS 0")
    still_serving(env)


AUTH_CASES = [
    ("auth version 5", b"\x05\x01u\x01p"),
    ("auth ULEN 0", b"\x01\x00\x01p"),
    ("NUL inside the username", b"\x01\x03a\x00b\x01p"),
    ("NUL inside the password", b"\x01\x04user\x03p\x00w"),
]


def test_malformed_auth(env):
    for what, msg in AUTH_CASES:
        s = connect(env)
        s.sendall(b"\x05\x01\x02")
        h.check(h.recv_exact(s, 2) == b"\x05\x02", "%s: method reply" % what)
        s.sendall(msg)
        expect_reply_then_eof(s, b"\x01\x01", what)
    still_serving(env)


def domain(name, port=80):
    return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)


REQUEST_CASES = [
    # (what, request bytes, REP)
    ("request version 4", b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 0x01),
    ("request version 0", b"\x00\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 0x01),
    ("address type 2", b"\x05\x01\x00\x02", 0x08),
    ("address type 0xff", b"\x05\x01\x00\xff\x00\x00", 0x08),
    ("zero-length domain", b"\x05\x01\x00" + b"\x03\x00\x00\x50", 0x04),
    ("NUL inside the domain", b"\x05\x01\x00" + domain(b"evil\x00example.com"), 0x04),
    ("domain only NUL", b"\x05\x01\x00" + domain(b"\x00"), 0x04),
    ("control byte in the domain", b"\x05\x01\x00" + domain(b"a\x01b"), 0x04),
    ("line feed in the domain", b"\x05\x01\x00" + domain(b"evil\r\nWARN x"), 0x04),
    ("space in the domain", b"\x05\x01\x00" + domain(b"a b.example"), 0x04),
    ("zone id", b"\x05\x01\x00" + domain(b"fe80::1%lo"), 0x04),
    ("slash in the domain", b"\x05\x01\x00" + domain(b"example.com/x"), 0x04),
    ("non-ASCII domain", b"\x05\x01\x00" + domain("caf\u00e9.example".encode()), 0x04),
]


def test_malformed_request(env):
    for what, msg, code in REQUEST_CASES:
        s = authenticated(env)
        s.sendall(msg)
        expect_reply_then_eof(s, rep(code), what)
    still_serving(env)


def test_malformed_request_without_auth(env):
    """The same through the no-authentication method (a listener without
    credentials), and with the greeting and request in one write."""
    port = h.free_port()
    control = os.path.join(env.dir, "open.sock")
    gw = h.proxy_gateway(env, name="open", http=False, user=None, port=port, control=control)
    h.proxy_agent(env, "open-def", port=port, wait=False)
    env.wait_listed("open-def", socket_path=control)
    for what, msg, code in REQUEST_CASES[:1] + REQUEST_CASES[2:3] + REQUEST_CASES[5:6]:
        s = socket.create_connection(("127.0.0.1", gw.socks_port), timeout=10)
        s.sendall(b"\x05\x01\x00" + msg)
        expect_reply_then_eof(s, b"\x05\x00" + rep(code), what + " (no auth, one write)")
    r = h.socks5_open(gw.socks_port, "127.0.0.1", env.target.port, user=None)
    r.sock.close()
    h.check(r.rep == 0, "a good request on the open listener: %r" % r)


def test_early_data_beyond_the_buffer(env):
    """A request followed at once by more early data than the handshake
    buffer keeps: either it is all relayed, or the request is refused
    with a reply; never a silent close."""
    echo = h.RawServer(h.echo_handler)
    env.servers.append(echo)
    early = h.gen_bytes(4096, seed=3)
    s = authenticated(env)
    s.sendall(b"\x05\x01\x00" + h.socks5_target_bytes("127.0.0.1", echo.port) + early)
    s.settimeout(10)
    try:
        head = h.recv_exact(s, 10)
    except (ConnectionError, OSError) as e:
        s.close()
        h.fail("request with 4 KiB early data: closed without a reply (%s)" % e)
    if head == rep(0):
        got = h.recv_exact(s, len(early))
        s.close()
        h.check(got == early, "early data came back changed")
    else:
        expect_reply_then_eof(s, rep(1)[len(head):], "request with 4 KiB early data")
        h.check(head == rep(1), "request with 4 KiB early data: reply %r" % head)
    h.note("4 KiB early data: %s" % ("relayed" if head == rep(0) else "refused with 0x01"))
    still_serving(env)


def test_not_socks5_closed_without_reply(env):
    """A greeting that is not SOCKS5 (here SOCKS4 and HTTP) gets no reply
    it could misread: the connection is just closed."""
    for what, msg in (("SOCKS4", b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00"),
                      ("HTTP", b"GET / HTTP/1.1\r\n\r\n")):
        s = connect(env)
        s.sendall(msg)
        expect_reply_then_eof(s, b"", what)
    still_serving(env)


if __name__ == "__main__":
    h.run([
        test_greeting_without_methods,
        test_malformed_auth,
        test_malformed_request,
        test_malformed_request_without_auth,
        test_early_data_beyond_the_buffer,
        test_not_socks5_closed_without_reply,
    ], fixture=setup)
