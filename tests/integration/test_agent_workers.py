#!/usr/bin/env python3
"""The agent on several threads ([client] workers, docs/scaling.md "Agent
workers").

One gateway with its HTTP and SOCKS5 proxies and one agent with workers = 2
and replicas = 4: tunnel i runs on worker i % 2, and the gateway (one
worker) picks tunnels round-robin, so a few streams reach both workers.

- streams through both proxies all relay, and the per-worker series
  anyproxy_agent_worker_streams_total shows that both workers carried some;
- a SIGHUP that forbids the echo server's address takes effect on every
  worker: afterwards streams on both workers are denied;
- SIGTERM with a stream open on every tunnel: the agent drains (the open
  streams keep relaying), then exits 0 once they close;
- workers = 1 with replicas = 2 runs one worker, as before.
"""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GROUP = "wg"
AGENT = "w-agent"
USER = "%s.%s" % (h.PROXY_USER, GROUP)
REPLICAS = 4
WORKERS = 2
WORKER_SERIES = "anyproxy_agent_worker_streams_total"


# ---- helpers ---------------------------------------------------------------------------


def per_worker(metrics):
    return [metrics.get((WORKER_SERIES, (("worker", str(i)),)), 0) for i in range(WORKERS)]



def agent_config(env, metrics_port, workers, replicas, forbidden=None):
    keys = dict(h.PROXY_CLIENT)
    if forbidden:
        keys["forbidden_hosts"] = forbidden
    config = env.client_config("agent-" + AGENT, AGENT, GROUP, replicas, workers=workers,
                               **keys)
    h.add_section(config, "metrics", {"listen_addr": "127.0.0.1:%d" % metrics_port})
    return config



def start(env, workers, replicas):
    # one gateway worker: its round-robin over the tunnels then decides
    # alone (with two, a stream prefers a tunnel of the gateway worker that
    # accepted it, and the kernel's SO_REUSEPORT hash could send every
    # connection to the worker whose tunnels all run on one agent worker)
    gw = h.proxy_gateway(env, workers=1)
    echo = h.RawServer(h.echo_handler)
    env.servers.append(echo)
    metrics_port = h.free_port()
    config = agent_config(env, metrics_port, workers, replicas)
    ag = env.agent(AGENT, GROUP, replicas, config=config)
    h.wait_until(lambda: h._port_open("127.0.0.1", metrics_port), 5 + h.slack(),
                 "the agent's metrics")
    return gw, ag, echo, config, metrics_port


def refused(gw, how, host, port):
    """True when the proxy refused the target as the agent's rules say."""
    if how == "socks5":
        r = h.socks5_open(gw.socks_port, host, port, user=USER)
        r.sock.close()
        return r.rep == 0x02
    s, status, _hd, _head, _rest = h.http_connect(gw.http_port, host, port, user=USER)
    s.close()
    return status == 403


# ---- cases -----------------------------------------------------------------------------

def test_two_workers_carry_reload_and_drain(env):
    gw, ag, echo, config, metrics_port = start(env, WORKERS, REPLICAS)
    line = ag.find("Agent workers")
    h.check(line and line[0].get("workers") == str(WORKERS),
            "'Agent workers workers=%d' not logged: %r" % (WORKERS, line))
    workers_of = {l.get("replica"): l.get("worker") for l in ag.find("Connected to gateway")}
    h.check(sorted(workers_of.items()) == [(str(i), str(i % WORKERS)) for i in range(REPLICAS)],
            "tunnel i should run on worker i %% %d: %r" % (WORKERS, workers_of))

    # streams through both proxies, to an address and to a name (the
    # resolver pool of each worker)
    before = per_worker(h.scrape_metrics(metrics_port))
    n = 0
    for how in ("socks5", "connect"):
        for host in ("127.0.0.1", "127.0.0.1", "localhost", "127.0.0.1"):
            s = h.proxy_stream(gw, how, host, echo.port, user=USER)
            try:
                h.echo_roundtrip(s, "%s %s #%d" % (how, host, n), size=65536, seed=n + 1)
            finally:
                s.close()
            n += 1
    after = per_worker(h.scrape_metrics(metrics_port))
    moved = [a - b for a, b in zip(after, before)]
    h.check(sum(moved) == n, "workers took %r streams, want %d in all" % (moved, n))
    h.check(all(m > 0 for m in moved), "a worker carried no stream: %r" % moved)
    m = h.scrape_metrics(metrics_port)
    h.check(m.get(("anyproxy_agent_streams_total", ())) == n,
            "anyproxy_agent_streams_total %r, want %d" % (m.get(("anyproxy_agent_streams_total",
                                                                  ())), n))

    # scrapes (worker 0 reads every worker's counters) and reloads (worker 0
    # pauses the other) while both workers relay: the sums stay consistent,
    # no stream notices the reloads (and a TSan build sees the reads)
    errors = []
    hup_mark = ag.mark()
    hups = 0

    def streams(k):
        try:
            for j in range(6):
                s = h.proxy_stream(gw, ("socks5", "connect")[(k + j) % 2], "127.0.0.1", echo.port,
                                   user=USER)
                try:
                    h.echo_roundtrip(s, "concurrent %d.%d" % (k, j), size=16384, seed=k * 8 + j + 1)
                finally:
                    s.close()
        except Exception as e:  # reported by the main thread
            errors.append("%d: %r" % (k, e))
    threads = [threading.Thread(target=streams, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    last = 0
    while any(t.is_alive() for t in threads):
        total = sum(per_worker(h.scrape_metrics(metrics_port)))
        h.check(total >= last, "per-worker streams went back: %r after %r" % (total, last))
        last = total
        if hups < 3:
            ag.send_signal(signal.SIGHUP)
            hups += 1
        time.sleep(0.02)
    for t in threads:
        t.join()
    h.check(not errors, "concurrent streams failed: %r" % errors)
    ag.wait_for_log("Configuration reloaded", 5 + h.slack(), since=hup_mark, count=hups)
    n += 4 * 6
    m = h.scrape_metrics(metrics_port)
    h.check(sum(per_worker(m)) == n and m.get(("anyproxy_agent_streams_total", ())) == n,
            "after the concurrent streams: per worker %r, total %r, want %d"
            % (per_worker(m), m.get(("anyproxy_agent_streams_total", ())), n))

    # SIGHUP: the echo server's address is forbidden now, on every worker
    agent_config(env, metrics_port, WORKERS, REPLICAS, forbidden="127.0.0.1")
    mark = ag.mark()
    ag.send_signal(signal.SIGHUP)
    ag.wait_for_log("Configuration reloaded", 5 + h.slack(), since=mark)
    h.check(not ag.find("Some changes need a restart", since=mark),
            "the reload reported a restart-only change:\n%s" % ag.tail(5))
    before = per_worker(h.scrape_metrics(metrics_port))
    for i in range(2 * REPLICAS):
        how = ("socks5", "connect")[i % 2]
        h.check(refused(gw, how, "127.0.0.1", echo.port),
                "%s #%d to a forbidden target was not refused\n%s" % (how, i, ag.tail(4)))
    after = per_worker(h.scrape_metrics(metrics_port))
    moved = [a - b for a, b in zip(after, before)]
    h.check(sum(moved) == 2 * REPLICAS and all(m > 0 for m in moved),
            "denied streams per worker %r: both workers must have refused some" % moved)
    denials = [l for l in ag.find("Target denied by host rules", since=mark)]
    h.check(len(denials) == 2 * REPLICAS, "%d denial lines, want %d"
            % (len(denials), 2 * REPLICAS))

    # and back: allowed again after another SIGHUP
    agent_config(env, metrics_port, WORKERS, REPLICAS)
    mark = ag.mark()
    ag.send_signal(signal.SIGHUP)
    ag.wait_for_log("Configuration reloaded", 5 + h.slack(), since=mark)

    # SIGTERM with a stream on every tunnel: they keep relaying while the
    # agent drains, and it exits 0 once they are closed
    socks = [h.proxy_stream(gw, ("socks5", "connect")[i % 2], "127.0.0.1", echo.port, user=USER)
             for i in range(REPLICAS)]
    h.check(per_worker(h.scrape_metrics(metrics_port)) != [0] * WORKERS, "no streams counted")
    mark = ag.mark()
    ag.send_signal(signal.SIGTERM)
    ag.wait_for_log("Agent stopping", 5 + h.slack(), since=mark)
    time.sleep(0.2)
    for i, s in enumerate(socks):
        h.echo_roundtrip(s, "stream %d while the agent drains" % i, size=4096, seed=i + 7)
        s.close()
    rc = ag.wait_exit(10 + h.slack(2))
    h.check(rc == 0, "agent exited %r after SIGTERM\n%s" % (rc, ag.tail(10)))
    h.check(ag.find("Agent stopped", since=mark), "no 'Agent stopped' line")


def test_one_worker(env):
    gw, ag, echo, _config, metrics_port = start(env, 1, 2)
    line = ag.find("Agent workers")
    h.check(line and line[0].get("workers") == "1", "'Agent workers workers=1': %r" % line)
    h.check({l.get("worker") for l in ag.find("Connected to gateway")} == {"0"},
            "every tunnel on worker 0")
    for i, how in enumerate(("socks5", "connect", "socks5", "connect")):
        s = h.proxy_stream(gw, how, "127.0.0.1", echo.port, user=USER)
        try:
            h.echo_roundtrip(s, "%s #%d" % (how, i), size=65536, seed=i + 1)
        finally:
            s.close()
    m = h.scrape_metrics(metrics_port)
    h.check(per_worker(m) == [4, 0], "per-worker streams %r, want [4, 0]" % per_worker(m))
    h.check((WORKER_SERIES, (("worker", "1"),)) not in m, "a series for a worker that is not")


def test_default_is_bounded_by_tunnels(env):
    # workers = 0 (one per CPU) and a single tunnel: one worker
    gw, ag, echo, _config, _port = start(env, 0, 1)
    line = ag.find("Agent workers")
    h.check(line and line[0].get("workers") == "1" and line[0].get("configured") == "0",
            "one tunnel runs one worker: %r" % line)


h.run([
    test_two_workers_carry_reload_and_drain,
    test_one_worker,
    test_default_is_bounded_by_tunnels,
])
