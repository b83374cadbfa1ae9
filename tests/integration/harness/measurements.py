"""What a test measures of running daemons: resident memory and descriptor
counts from /proc (with PeakWatch sampling their peaks), the TCP sockets a
process holds, and the per-agent stream counters apctl reports.
"""

import os
import threading
import time

from .base import TestFailure, fail, wait_until


# ---- apctl's stream counters --------------------------------------------------

def stream_totals(env):
    """{client_id: streams_total} from apctl."""
    return {cid: c["streams_total"] for cid, c in env.clients().items()}


def stream_delta(before, after):
    """Non-zero differences between two stream_totals() snapshots."""
    out = {}
    for cid in set(before) | set(after):
        d = after.get(cid, 0) - before.get(cid, 0)
        if d:
            out[cid] = d
    return out


def expect_streams(env, before, expected, what, timeout=3.0):
    """Wait until the streams_total deltas since `before` equal `expected`
    ({client_id: count}); fail naming `what` otherwise."""
    last = {}

    def ok():
        last["d"] = stream_delta(before, stream_totals(env))
        return last["d"] == expected
    try:
        wait_until(ok, timeout, "streams_total deltas %r" % (expected,))
    except TestFailure:
        fail("%s: streams_total deltas are %r, expected %r" % (what, last.get("d"), expected))


# ---- /proc ---------------------------------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    """Open file descriptors of pid (entries of /proc/PID/fd)."""
    return len(os.listdir("/proc/%d/fd" % pid))


def baseline_fd_count(pid, samples=5, interval=0.05):
    """A daemon's resting descriptor count: the least of a few samples, so
    a short-lived descriptor (an apctl connection, a reload's file) seen
    at one instant does not raise the baseline."""
    least = fd_count(pid)
    for _ in range(samples - 1):
        time.sleep(interval)
        least = min(least, fd_count(pid))
    return least


class PeakWatch:
    """Samples VmRSS (KiB) and the fd count of pids every `interval` s in a
    thread; .rss[pid] and .fds[pid] hold the peaks since start."""

    def __init__(self, pids, interval=0.05):
        self.pids = list(pids)
        self.rss = {p: rss_kib(p) for p in self.pids}
        self.fds = {p: fd_count(p) for p in self.pids}
        self._interval = interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for p in self.pids:
                try:
                    self.rss[p] = max(self.rss[p], rss_kib(p))
                    self.fds[p] = max(self.fds[p], fd_count(p))
                except OSError:
                    pass
            self._stop.wait(self._interval)

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)
        return self


def local_addrs(pid):
    """"127.0.0.1:PORT" of every IPv4 TCP socket the process holds."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[9] in inodes:
                ip_hex, port_hex = parts[1].split(":")
                ip = ".".join(str(int(ip_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
                out.add("%s:%d" % (ip, int(port_hex, 16)))
    return out
