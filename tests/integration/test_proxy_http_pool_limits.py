#!/usr/bin/env python3
"""The origin pool never costs a request: parked streams count on their
tunnel for [gateway] max_streams_per_tunnel, so when every tunnel of the
group is full of them the group's parked streams give way and the request
is served. Other groups' parked streams stay: their tunnels are not the
full ones."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_proxy_http_reuse import CountingOrigin, UserConn, ok_body  # noqa: E402


def one_request(env, url, user):
    """(status, body) of one request on a user connection of its own."""
    u = UserConn(env)
    try:
        st, _, body = u.request(url, user)
        return st, body
    finally:
        u.close()


def park_one_each(origin, env, prefix, users):
    """Each user's request on a user connection that then closes, which
    parks its stream: {user: the origin connection it used}, all still
    open."""
    conns = {u: ok_body(*one_request(env, origin.url(prefix + u), u), prefix + u) for u in users}
    time.sleep(0.3)
    h.check(len(origin.closed) == 0, "parked connections closed early: %r" % origin.closed)
    return conns


def test_parked_streams_yield_to_a_request(env):
    env.gwp = h.proxy_gateway(env, user=None, max_streams_per_tunnel=2,
                              gw_env={"PROXY_HTTP_ORIGIN_POOL_IDLE_MS": "30000"})
    h.proxy_agent(env, "def")
    origin = CountingOrigin()
    env.servers.append(origin)
    # two users park one stream each: the tunnel's two streams are idle
    park_one_each(origin, env, "/l/", ("ann", "ben"))
    # a third user needs a new stream: the pool gives way
    st, body = one_request(env, origin.url("/l/cat"), "cat")
    h.check(st == 200, "the request was refused while streams were only parked: %d %r"
            % (st, body))
    h.wait_until(lambda: len(origin.closed) >= 2, 5, "the parked connections to close")


def test_other_groups_parked_streams_stay(env):
    """One worker, so every parked stream is where the request is: ann and
    ben fill the default group's tunnel with parked streams, pat of group
    production parks one on its agent's tunnel. cat's request (default
    group) empties the default group's part of the pool only: pat's
    origin connection stays open and serves pat's next user connection."""
    env.gwp = h.proxy_gateway(env, user=None, max_streams_per_tunnel=2, workers=1,
                              gw_env={"PROXY_HTTP_ORIGIN_POOL_IDLE_MS": "30000"})
    h.proxy_agent(env, "def")
    h.proxy_agent(env, "prod", "production")
    origin = CountingOrigin()
    env.servers.append(origin)
    conns = park_one_each(origin, env, "/o/", ("ann", "ben", "pat.production"))
    st, body = one_request(env, origin.url("/o/cat"), "cat")
    h.check(st == 200, "cat's request was refused: %d %r" % (st, body))
    h.wait_until(lambda: {conns["ann"], conns["ben"]} <= origin.closed, 5,
                 "the default group's parked connections to close")
    h.check(conns["pat.production"] not in origin.closed,
            "group production's parked connection was closed for the default group's "
            "request: %r" % origin.closed)
    again = ok_body(*one_request(env, origin.url("/o/pat2"), "pat.production"), "/o/pat2")
    h.check(again == conns["pat.production"], "pat's next request used connection %d, not "
            "its parked %d" % (again, conns["pat.production"]))


if __name__ == "__main__":
    h.run([test_parked_streams_yield_to_a_request, test_other_groups_parked_streams_stay])
