#!/usr/bin/env python3
"""The origin pool never costs a request: parked streams count on their
tunnel for [gateway] max_streams_per_tunnel, so when every tunnel of the
group is full of them the pool is emptied and the request is served."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_proxy_http_reuse import CountingOrigin, UserConn, ok_body  # noqa: E402


def test_parked_streams_yield_to_a_request(env):
    env.gwp = h.proxy_gateway(env, user=None, max_streams_per_tunnel=2,
                              gw_env={"PROXY_HTTP_ORIGIN_POOL_IDLE_MS": "30000"})
    h.proxy_agent(env, "def")
    origin = CountingOrigin()
    env.servers.append(origin)
    # two users park one stream each: the tunnel's two streams are idle
    for user in ("ann", "ben"):
        u = UserConn(env)
        ok_body(*u.request(origin.url("/l/" + user), user)[::2], "/l/" + user)
        u.close()
    time.sleep(0.3)
    h.check(len(origin.closed) == 0, "parked connections closed early: %r" % origin.closed)
    # a third user needs a new stream: the pool gives way
    u = UserConn(env)
    try:
        st, f, body = u.request(origin.url("/l/cat"), "cat")
        h.check(st == 200, "the request was refused while streams were only parked: %d %r"
                % (st, body))
    finally:
        u.close()
    h.wait_until(lambda: len(origin.closed) >= 2, 5, "the parked connections to close")


if __name__ == "__main__":
    h.run([test_parked_streams_yield_to_a_request])
