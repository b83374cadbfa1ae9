#!/usr/bin/env python3
"""The HTTP proxy, as the spec's "Usage Examples" use it, with real clients.

One gateway ([proxy.http] and [proxy.socks5] with the spec's credentials
user / proxy_pass) and three agents: prod (group production), test (group
testing) and def (default group). Targets: HTTP origins on 127.0.0.1,
127.0.0.2 and ::1, and an HTTPS origin (openssl s_server -WWW, certificate
from tools/gen-certs.sh). Every request proves which agent carried it with
apctl's per-client streams_total.
"""
import http.client
import json
import os
import re
import socket
import ssl
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

AGENTS = {"prod": "production", "test": "testing", "def": None}
# proxy user name -> (group, the agent that must carry the stream)
ROUTES = [("user.production", "production", "prod"),
          ("user.testing", "testing", "test"),
          ("user", "", "def")]
HELLO = b"hello through anyproxy\n"
FILES = {"hello.txt": HELLO, "blob.bin": h.gen_bytes(1 << 20, seed=7)}


def setup(env):
    env.gwp = h.proxy_gateway(env)
    for cid, group in AGENTS.items():
        h.proxy_agent(env, cid, group)
    env.a = h.HttpTarget("127.0.0.1", name="A", files=FILES)
    env.b = h.HttpTarget("127.0.0.2", name="B", files=FILES)
    env.v6 = h.HttpTarget("::1", name="V6", files=FILES)
    env.servers += [env.a, env.b, env.v6]
    env.tls = h.HttpsTarget(env, FILES)
    env.servers.append(env.tls)


def proxy_url(env, user, password=h.PROXY_PASS):
    return "http://%s:%s@127.0.0.1:%d" % (user, password, env.gwp.http_port)


def check_routed(env, since, user, group, client_id, target=None):
    """The gateway's log lines for one request routed to client_id."""
    gw = env.gwp
    got = [l for l in gw.find("Gateway received request", since)
           if l.get("user") == user and l.get("proxy") == "http"]
    h.check(got, "no 'Gateway received request user=%s' line:\n%s" % (user, gw.tail()))
    h.check(got[-1].get("group") == group,
            "Gateway received request: group %r, expected %r: %r" % (got[-1].get("group"),
                                                                      group, got[-1]))
    if target:
        h.check(got[-1].get("target") == target,
                "Gateway received request: target %r, expected %r" % (got[-1].get("target"),
                                                                       target))
    sel = [l for l in gw.find("Selected client from group", since)
           if l.get("client_id") == client_id and l.get("group") == group]
    h.check(sel, "no 'Selected client from group group=%s client_id=%s' line:\n%s"
            % (group, client_id, gw.tail()))


def run_routed(env, user, group, client_id, args, expect_body, target=None, curl_env=None,
               n_streams=1):
    before = h.stream_totals(env)
    mark = env.gwp.mark()
    r = h.curl(args, env=curl_env)
    h.check(r.returncode == 0, "curl %s failed (rc %d): %s" % (" ".join(args), r.returncode,
                                                                 r.stderr.decode()))
    h.check(r.stdout == expect_body, "curl %s: body %r, expected %r"
            % (" ".join(args), r.stdout[:200], expect_body[:200]))
    h.expect_streams(env, before, {client_id: n_streams}, "curl " + " ".join(args))
    check_routed(env, mark, user, group, client_id, target)
    return r


# ---- the spec's examples -----------------------------------------------------------

def test_spec_http_proxy_groups_http_target(env):
    """curl -x http://user.GROUP:proxy_pass@gateway:8080 http://... per group."""
    for user, group, cid in ROUTES:
        run_routed(env, user, group, cid,
                   ["-x", proxy_url(env, user), env.a.url("/file/hello.txt")], HELLO,
                   target="127.0.0.1:%d" % env.a.port)
        # a domain target travels as a name (the agent resolves it)
        run_routed(env, user, group, cid,
                   ["-x", proxy_url(env, user), env.a.url("/file/hello.txt", "localhost")],
                   HELLO, target="localhost:%d" % env.a.port)


def test_spec_http_proxy_groups_https_target(env):
    """curl -x http://user.GROUP:proxy_pass@gateway:8080 https://... (CONNECT):
    curl verifies the origin's certificate, so TLS went end to end."""
    for user, group, cid in ROUTES:
        run_routed(env, user, group, cid,
                   ["--cacert", env.tls.ca, "-x", proxy_url(env, user),
                    env.tls.url("hello.txt")], HELLO, target="localhost:%d" % env.tls.port)
    run_routed(env, "user.production", "production", "prod",
                   ["--cacert", env.tls.ca, "-x", proxy_url(env, "user.production"),
                    env.tls.url("blob.bin", host="127.0.0.1")], FILES["blob.bin"],
                   target="127.0.0.1:%d" % env.tls.port)


def test_spec_environment_variables(env):
    """export http_proxy=... https_proxy=...; curl URL (NO_PROXY emptied:
    curl skips the proxy for localhost otherwise)."""
    for user, group, cid in ROUTES:
        pe = {"http_proxy": proxy_url(env, user), "https_proxy": proxy_url(env, user),
              "NO_PROXY": "", "no_proxy": ""}
        run_routed(env, user, group, cid, [env.a.url("/file/hello.txt")], HELLO, curl_env=pe)
        run_routed(env, user, group, cid, ["--cacert", env.tls.ca, env.tls.url("hello.txt")],
                   HELLO, curl_env=pe, target="localhost:%d" % env.tls.port)


def test_connect_with_curl_p(env):
    """curl -p -x: CONNECT even for an http:// target."""
    for user, group, cid in ROUTES:
        mark = env.gwp.mark()
        run_routed(env, user, group, cid,
                   ["-p", "-x", proxy_url(env, user), env.b.url("/file/hello.txt")], HELLO,
                   target="127.0.0.2:%d" % env.b.port)
        # it was a tunnel: the origin saw curl's own request, Host and all
        rec = env.b.requests[-1]
        h.check(rec["path"] == "/file/hello.txt" and rec["host"] == "127.0.0.2:%d" % env.b.port,
                "origin B saw %r" % rec)
        h.check(not env.gwp.find("HTTP state from=wait-open to=forward", mark),
                "curl -p must use CONNECT, not forwarding")


def test_ipv6_target(env):
    for args in (["-g", "-x", proxy_url(env, "user.testing"), env.v6.url("/info")],
                 ["-g", "-p", "-x", proxy_url(env, "user.testing"), env.v6.url("/info")]):
        before = h.stream_totals(env)
        mark = env.gwp.mark()
        r = h.curl(args)
        h.check(r.returncode == 0, "curl %s: rc %d %s" % (args, r.returncode, r.stderr))
        info = json.loads(r.stdout)
        h.check(info["server"] == "V6" and info["host"] == "[::1]:%d" % env.v6.port,
                "the IPv6 origin should answer: %r" % info)
        h.expect_streams(env, before, {"test": 1}, "IPv6 target")
        check_routed(env, mark, "user.testing", "testing", "test", "[::1]:%d" % env.v6.port)


# ---- HTTP forwarding: methods, bodies, framing ---------------------------------------

UPLOAD_SIZE = 3 * 1024 * 1024 + 17  # over the 256 KiB stream window


def upload_file(env):
    path = os.path.join(env.dir, "upload.bin")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            for c in h.gen_chunks(UPLOAD_SIZE, 11):
                f.write(c)
    return path, h.gen_sha256(UPLOAD_SIZE, 11)


def curl_json(env, args, what, timeout=15):
    r = h.curl(["-x", proxy_url(env, "user.production")] + args, timeout=timeout)
    h.check(r.returncode == 0, "%s: curl rc %d %s" % (what, r.returncode, r.stderr.decode()))
    try:
        return json.loads(r.stdout)
    except ValueError:
        h.fail("%s: not the origin's JSON: %r" % (what, r.stdout[:300]))


def test_post_content_length_body(env):
    up, want = upload_file(env)
    before = h.stream_totals(env)
    for expect in ("Expect:", "Expect: 100-continue"):
        j = curl_json(env, ["--data-binary", "@" + up, "-H", expect,
                            "-H", "Content-Type: application/octet-stream", env.a.url("/upload")],
                      "POST %d bytes with Content-Length (%s)" % (UPLOAD_SIZE, expect))
        h.check(j["method"] == "POST" and j["len"] == UPLOAD_SIZE and j["sha256"] == want
                and not j["chunked"], "POST with Content-Length arrived as %r" % j)
    h.expect_streams(env, before, {"prod": 2}, "POST with Content-Length")


def test_post_chunked_body(env):
    up, want = upload_file(env)
    j = curl_json(env, ["--data-binary", "@" + up, "-H", "Transfer-Encoding: chunked",
                        "-H", "Expect:", env.a.url("/upload-chunked")],
                  "POST %d bytes chunked" % UPLOAD_SIZE)
    h.check(j["len"] == UPLOAD_SIZE and j["sha256"] == want and j["chunked"],
            "chunked POST arrived as %r" % j)


def test_small_bodies(env):
    """Bodies that fit in one stream window, by Content-Length and chunked."""
    for size in (0, 1, 1000, 200000):
        data = h.gen_bytes(size, seed=size)
        for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
            r = h.curl(["-x", proxy_url(env, "user.production"), "--data-binary", "@-",
                        "-H", "Expect:"] + extra + [env.a.url("/small")], input=data, timeout=20)
            h.check(r.returncode == 0, "POST %d bytes %s: rc %d %s"
                    % (size, extra, r.returncode, r.stderr.decode()))
            j = json.loads(r.stdout)
            h.check(j["len"] == size and j["sha256"] == h.gen_sha256(size, size),
                    "POST %d bytes %s arrived as %r" % (size, extra, j))


def test_put_body(env):
    up, want = upload_file(env)
    j = curl_json(env, ["-T", up, "-H", "Expect:", env.a.url("/put-here")],
                  "PUT %d bytes" % UPLOAD_SIZE)
    h.check(j["method"] == "PUT" and j["len"] == UPLOAD_SIZE and j["sha256"] == want,
            "PUT arrived as %r" % j)


def test_head_and_delete(env):
    px = ["-x", proxy_url(env, "user.production")]
    r = h.curl(px + ["-I", env.a.url("/gen?size=12345&seed=3")], timeout=20)
    h.check(r.returncode == 0, "HEAD: rc %d %s" % (r.returncode, r.stderr))
    head = r.stdout.decode()
    h.check(re.search(r"^HTTP/1\.1 200", head) and
            re.search(r"^Content-Length: 12345\r?$", head, re.M | re.I),
            "HEAD should keep Content-Length 12345:\n%s" % head)
    h.check(env.a.requests[-1]["method"] == "HEAD", "origin saw %r" % env.a.requests[-1])
    j = curl_json(env, ["-X", "DELETE", env.a.url("/thing")], "DELETE")
    h.check(j["method"] == "DELETE", "DELETE arrived as %r" % j)


def test_bodyless_responses_keep_the_connection(env):
    """A HEAD answer (with Content-Length), a 204 and a 304 have no body: the
    response is complete after its head, and the next request on the same
    connection is served (RFC 9112 6.3)."""
    auth = h.basic_auth("user.production", h.PROXY_PASS)
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=5)
    try:
        for method, path, status in (("HEAD", "/gen?size=5000&seed=3", 200),
                                     ("GET", "/status?code=204", 204),
                                     ("GET", "/status?code=304", 304)):
            s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                       % (method, env.a.url(path), auth)).encode())
            got, headers, text, rest = h.read_http_head(s)
            h.check(got == status, "%s %s: status %r:\n%s" % (method, path, got, text))
            h.check(rest == b"", "%s %s: bytes after a body-less response: %r"
                    % (method, path, rest[:100]))
            # the same connection serves the next request at once
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                       % (env.a.url("/info?after=" + method), auth)).encode())
            try:
                got2, headers2, text2, rest2 = h.read_http_head(s)
            except OSError as e:
                got2, text2 = None, repr(e)
            h.check(got2 == 200, "the request after %s %s (status %d) on the same connection: "
                    "%r\n%s\ngateway log:\n%s" % (method, path, status, got2, text2,
                                                  env.gwp.tail(8)))
            body = h.read_http_body(s, headers2, rest2)
            h.check(json.loads(body)["path"].endswith("after=" + method), "wrong answer %r" % body)
    finally:
        s.close()


def test_responses_streamed(env):
    """Chunked and Content-Length responses larger than any buffer, intact."""
    px = ["-x", proxy_url(env, "user.production")]
    for q in ("chunked=1", "chunked=0"):
        size = 24 * 1024 * 1024 + 3
        rc, n, sha, err = h.curl_sha256(px + [env.a.url("/gen?size=%d&seed=5&%s" % (size, q))],
                                        timeout=60)
        h.check(rc == 0 and n == size and sha == h.gen_sha256(size, 5),
                "GET %s: rc %d, %d bytes (want %d), sha ok %s: %s"
                % (q, rc, n, size, sha == h.gen_sha256(size, 5), err))


def test_raw_chunked_response_keeps_framing(env):
    """A chunked response reaches the user still chunked (or re-framed) and
    complete, trailer included or dropped, but never cut."""
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=10)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n"
                   "Connection: close\r\n\r\n" % (env.a.url("/gen?size=200000&seed=9&chunked=1"),
                                                  h.basic_auth("user", h.PROXY_PASS))).encode())
        status, headers, text, rest = h.read_http_head(s)
        h.check(status == 200, "status %r:\n%s" % (status, text))
        raw = h.read_http_body(s, {}, rest)
    finally:
        s.close()
    if "chunked" in headers.get("transfer-encoding", ""):
        body, i = b"", 0
        while True:
            j = raw.index(b"\r\n", i)
            size = int(raw[i:j].split(b";")[0], 16)
            if size == 0:
                break
            body += raw[j + 2:j + 2 + size]
            h.check(raw[j + 2 + size:j + 4 + size] == b"\r\n", "chunk not followed by CRLF")
            i = j + 4 + size
    else:
        body = raw
    h.check(len(body) == 200000 and body == h.gen_bytes(200000, 9),
            "chunked response body: %d bytes, correct %s" % (len(body),
                                                            body == h.gen_bytes(200000, 9)))


def test_hop_by_hop_and_host(env):
    """Proxy-Authorization, Proxy-Connection, Keep-Alive, Connection and the
    fields it names never reach the origin; end-to-end fields do; Host is the
    absolute URI's authority (RFC 9112 3.2.2)."""
    s = socket.create_connection(("127.0.0.1", env.gwp.http_port), timeout=10)
    auth = h.basic_auth("user.testing", h.PROXY_PASS)
    try:
        s.sendall(("GET %s HTTP/1.1\r\n"
                   "Host: wrong.example:1\r\n"
                   "Proxy-Authorization: %s\r\n"
                   "Proxy-Connection: keep-alive\r\n"
                   "Connection: keep-alive, X-Hop-Secret\r\n"
                   "X-Hop-Secret: must-not-pass\r\n"
                   "Keep-Alive: timeout=5\r\n"
                   "X-End-To-End: kept\r\n"
                   "\r\n" % (env.b.url("/info?hop=1"), auth)).encode())
        status, headers, text, rest = h.read_http_head(s)
        body = h.read_http_body(s, headers, rest)
    finally:
        s.close()
    h.check(status == 200, "status %r:\n%s" % (status, text))
    info = json.loads(body)
    seen = {k.lower(): v for k, v in info["headers"]}
    h.check(info["server"] == "B", "wrong origin: %r" % info)
    h.check(info["host"] == "127.0.0.2:%d" % env.b.port,
            "origin saw Host %r, expected the URI's authority" % info["host"])
    for hop in ("proxy-authorization", "proxy-connection", "keep-alive", "x-hop-secret"):
        h.check(hop not in seen, "hop-by-hop field %s reached the origin: %r" % (hop, seen))
    h.check("connection" not in seen or "x-hop-secret" not in seen["connection"].lower(),
            "Connection went through unchanged: %r" % seen)
    h.check(seen.get("x-end-to-end") == "kept", "X-End-To-End was dropped: %r" % seen)
    h.check(auth.split()[1] not in body.decode(), "the credentials reached the origin")


# ---- keep-alive ------------------------------------------------------------------------

def test_keep_alive_100_requests_two_hosts_two_groups(env):
    """100 absolute-URI requests on one connection (http.client), alternating
    between 127.0.0.1 and 127.0.0.2 and between user.production and
    user.testing, with POST bodies and chunked responses mixed in."""
    conn = http.client.HTTPConnection("127.0.0.1", env.gwp.http_port, timeout=15)
    conn.connect()
    sock0 = conn.sock
    local0 = sock0.getsockname()
    before = h.stream_totals(env)
    n_a, n_b = len(env.a.requests), len(env.b.requests)
    want = {"prod": 0, "test": 0}
    try:
        for i in range(100):
            target = (env.a, env.b)[i % 2]
            user, cid = (("user.production", "prod"), ("user.testing", "test"))[(i // 2) % 2]
            want[cid] += 1
            hdrs = {"Proxy-Authorization": h.basic_auth(user, h.PROXY_PASS)}
            if i % 10 == 3:
                body = h.gen_bytes(10000 + i, seed=i)
                conn.request("POST", target.url("/post?i=%d" % i), body=body, headers=hdrs)
            elif i % 10 == 7:
                conn.request("GET", target.url("/gen?size=%d&seed=%d&chunked=1" % (70000 + i, i)),
                             headers=hdrs)
            else:
                conn.request("GET", target.url("/info?i=%d" % i), headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            h.check(resp.status == 200, "request %d: status %d %r" % (i, resp.status, data[:200]))
            h.check(not resp.will_close, "request %d: the proxy wants to close (%r)"
                    % (i, resp.getheader("Connection")))
            if i % 10 == 7:
                h.check(resp.getheader("X-Server") == target.name and
                        data == h.gen_bytes(70000 + i, i),
                        "request %d: chunked body from %s wrong (%d bytes)"
                        % (i, resp.getheader("X-Server"), len(data)))
            else:
                j = json.loads(data)
                h.check(j["server"] == target.name and j["host"] == "%s:%d" % (target.host,
                                                                              target.port),
                        "request %d went to %r (Host %r), expected %s"
                        % (i, j["server"], j["host"], target.name))
                h.check(("i=%d" % i) in j["path"], "request %d got the answer for %r"
                        % (i, j["path"]))
                if i % 10 == 3:
                    h.check(j["len"] == 10000 + i and j["sha256"] == h.gen_sha256(10000 + i, i),
                            "request %d: POST body arrived as %r" % (i, j))
            h.check(conn.sock is sock0 and conn.sock.getsockname() == local0,
                    "request %d: http.client reconnected (one connection expected)" % i)
    finally:
        conn.close()
    h.expect_streams(env, before, want, "100 keep-alive requests")
    hosts_a = {r["host"] for r in env.a.requests[n_a:]}
    hosts_b = {r["host"] for r in env.b.requests[n_b:]}
    h.check(hosts_a == {"127.0.0.1:%d" % env.a.port} and len(env.a.requests) - n_a == 50,
            "origin A saw %d requests with Host %r" % (len(env.a.requests) - n_a, hosts_a))
    h.check(hosts_b == {"127.0.0.2:%d" % env.b.port} and len(env.b.requests) - n_b == 50,
            "origin B saw %d requests with Host %r" % (len(env.b.requests) - n_b, hosts_b))


# ---- Python's standard library ---------------------------------------------------------

def test_urllib_proxy_handler(env):
    saved = {k: os.environ.pop(k) for k in list(os.environ)
             if k.lower() in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")}
    try:
        purl = proxy_url(env, "user.testing")
        ctx = ssl.create_default_context(cafile=env.tls.ca)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": purl, "https": purl}),
            urllib.request.HTTPSHandler(context=ctx))
        before = h.stream_totals(env)
        with opener.open(env.a.url("/file/blob.bin"), timeout=15) as r:
            h.check(r.status == 200, "urllib status %d" % r.status)
            data = r.read()
        h.check(data == FILES["blob.bin"], "urllib got %d bytes, wrong content" % len(data))
        with opener.open(env.a.url("/upload"), data=b"x" * 5000, timeout=15) as r:
            j = json.loads(r.read())
        h.check(j["len"] == 5000 and j["method"] == "POST", "urllib POST arrived as %r" % j)
        with opener.open(env.tls.url("hello.txt"), timeout=15) as r:
            data = r.read()
        h.check(data == HELLO, "urllib https through CONNECT got %r" % data[:100])
        h.expect_streams(env, before, {"test": 3}, "urllib requests")
    finally:
        os.environ.update(saved)


if __name__ == "__main__":
    h.run([
        test_spec_http_proxy_groups_http_target,
        test_spec_http_proxy_groups_https_target,
        test_spec_environment_variables,
        test_connect_with_curl_p,
        test_ipv6_target,
        test_post_content_length_body,
        test_post_chunked_body,
        test_small_bodies,
        test_put_body,
        test_head_and_delete,
        test_bodyless_responses_keep_the_connection,
        test_responses_streamed,
        test_raw_chunked_response_keeps_framing,
        test_hop_by_hop_and_host,
        test_keep_alive_100_requests_two_hosts_two_groups,
        test_urllib_proxy_handler,
    ], fixture=setup)
