#!/usr/bin/env python3
"""Logging never blocks the loop (issue 9, item 5; docs/operations.md "Logs").

  - a log output nobody reads (a FIFO whose reader sleeps) does not stall
    the gateway: users are still answered and apctl still answers while the
    FIFO is full; what the FIFO and the bounded queue cannot hold is dropped
    and counted, and once the reader drains the FIFO a WARN line "Log lines
    dropped lines=N" marks the gap; every line read is whole;
  - nothing queued is lost at shut-down: "Gateway stopped" is the last line.

Before batching, each line was one blocking write(2) on the loop thread:
with the FIFO full the gateway stopped answering anyone.
"""
import os
import re
import select
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LINE = re.compile(r"^" + TIMESTAMP + r" (DEBUG|INFO|WARN|ERROR) \S")
# SOCKS5 users offering only a method the gateway does not take: each one
# is refused at once and costs the gateway several DEBUG and INFO lines
# (about 300 bytes): enough to fill the FIFO (64 KiB) and the batch of each
# of the gateway's WORKERS threads (256 KiB each).
USERS = 4000
WORKERS = 2
CHECK_EVERY = 250


def log_to_fifo(env):
    """A gateway whose log output is a FIFO; returns (gateway, reader fd)."""
    fifo = os.path.join(env.dir, "gateway-log.fifo")
    os.mkfifo(fifo, 0o600)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    # Its log is not in gateway.log (wait=False: do not wait for it there).
    gw = h.proxy_gateway(env, http=False, wait=False, gw_env={"LOG_OUTPUT": fifo},
                           workers=WORKERS)
    h.wait_until(lambda: h.apctl(env.control, "groups")[0] == 0, 5 + h.slack(),
                 "apctl to answer")
    return gw, rfd


def refused_user(port):
    """One SOCKS5 user offering only method 9: the gateway answers 05 FF."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 + h.slack()) as s:
        s.sendall(b"\x05\x01\x09")
        reply = b""
        while len(reply) < 2:
            chunk = s.recv(2 - len(reply))
            h.check(chunk, "the gateway closed without refusing the method")
            reply += chunk
        h.check(reply == b"\x05\xff", "refusal %r" % reply)


def read_fifo(rfd, chunks, stop):
    """Drain the FIFO into chunks until stop is set and it is empty."""
    while True:
        r, _, _ = select.select([rfd], [], [], 0.05)
        if r:
            try:
                data = os.read(rfd, 65536)
            except BlockingIOError:
                continue
            if data:
                chunks.append(data)
                continue
            if stop.is_set():
                return  # writer closed
        elif stop.is_set():
            return


def test_full_log_output_does_not_stall_the_gateway(env):
    gw, rfd = log_to_fifo(env)
    try:
        # Nobody reads the FIFO while the users come.
        for i in range(USERS):
            try:
                refused_user(gw.socks_port)
            except OSError as e:
                h.fail("user %d got no answer while the log output was full: %s" % (i, e))
            if i % CHECK_EVERY == CHECK_EVERY - 1:
                rc, _, err = h.apctl(env.control, "groups", timeout=5 + h.slack())
                h.check(rc == 0, "apctl got no answer while the log output was full "
                        "(after %d users): %s" % (i + 1, err))
        # Now read: the gateway hands over what it kept, then the note.
        chunks, stop = [], threading.Event()
        reader = threading.Thread(target=read_fifo, args=(rfd, chunks, stop), daemon=True)
        reader.start()
        h.wait_until(lambda: b"Log lines dropped" in b"".join(chunks), 5 + h.slack(),
                     "the dropped-lines note")
        rc = gw.stop()
        stop.set()
        reader.join(10)
        h.check(rc == 0, "gateway exited %s" % rc)
    finally:
        os.close(rfd)
    data = b"".join(chunks)
    text = data.decode("utf-8", "replace")
    h.check(text.endswith("\n"), "the log ends in a partial line: %r" % text[-200:])
    lines = text.splitlines()
    bad = [l for l in lines if not LINE.match(l)]
    h.check(not bad, "%d lines are not whole log lines, e.g. %r" % (len(bad), bad[:3]))
    notes = [l for l in lines if " WARN Log lines dropped " in l]
    h.check(notes, "no dropped-lines note")
    total = 0
    for n in notes:
        m = re.search(r" lines=(\d+) ", n)
        h.check(m and int(m.group(1)) > 0, "note without a count: %r" % n)
        total += int(m.group(1))
    refusals = sum(1 for l in lines if "offers no acceptable method" in l)
    h.note("%d bytes read, %d refusals logged, %d lines dropped in %d notes"
           % (len(data), refusals, total, len(notes)))
    h.check(refusals + total >= USERS, "%d refusals logged and %d dropped for %d users"
            % (refusals, total, USERS))
    # Nothing queued was lost at exit.
    h.check("Gateway stopped" in lines[-1], "last line: %r" % lines[-1])


if __name__ == "__main__":
    h.run([
        test_full_log_output_does_not_stall_the_gateway,
    ])
