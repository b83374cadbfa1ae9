#!/usr/bin/env python3
"""Named host sets @loopback, @private and @local through the real proxies
(issue 8 item 8, docs/acl.md "Named host sets").

The whole file runs in a network namespace of its own: at start it calls
unshare(CLONE_NEWNET) (we run as root), brings lo up and adds an interface
ap0 without ports (a dummy, or a bridge where the kernel has no dummy
driver) that carries the addresses the cases need: the agent's "own" LAN
address 10.200.0.1 and one address in each private range, each with a
listener that counts its accepts. So "denied" is shown to mean "never
dialled", and no packet can leave the machine: the namespace has no route
to anywhere else. Without namespaces the file is skipped (exit 77) with
the reason.

The proxy helpers (SOCKS5 0x02 / HTTP 403 plus one "Target denied by host
rules" line naming the rule) are test_acl.py's.
"""
import ctypes
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_acl as acl  # noqa: E402

CLONE_NEWNET = 0x40000000  # <sched.h>
IFACE = "ap0"
OWN = "10.200.0.1"         # the agent host's LAN address (in @private and @local)
PRODUCTION = "@loopback, @private, @local"   # what docs/acl.md recommends
# One listening address in each @private range, first and last where it fits.
PRIVATE_ADDRS = ["10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1",
                 "169.254.169.254", "100.64.0.1", "100.127.255.254", "fd00::1",
                 "fdff::2"]
LOOPBACK_ADDRS = ["127.0.0.1", "127.0.0.2", "::1"]


# ---- the namespace ---------------------------------------------------------------------

def ip(*args):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=10)
    h.check(r.returncode == 0, "ip %s: %s" % (" ".join(args), r.stderr.strip()))


def enter_namespace():
    """Move this process into a new network namespace with lo up and IFACE
    up. Returns None, or why that is not possible."""
    if os.geteuid() != 0:
        return "not root: cannot create a network namespace"
    if not shutil.which("ip"):
        return "no 'ip' command (iproute2)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return "unshare(CLONE_NEWNET): %s" % os.strerror(ctypes.get_errno())
    for kind in ("dummy", "bridge"):
        if subprocess.run(["ip", "link", "add", IFACE, "type", kind],
                          capture_output=True).returncode == 0:
            break
    else:
        return "cannot create a dummy or bridge interface in the namespace"
    for dev in ("lo", IFACE):
        r = subprocess.run(["ip", "link", "set", dev, "up"], capture_output=True, text=True)
        if r.returncode != 0:
            return "ip link set %s up: %s" % (dev, r.stderr.strip())
    return None


def add_addr(addr):
    if ":" in addr:
        ip("addr", "add", addr + "/128", "dev", IFACE, "nodad")
    else:
        ip("addr", "add", addr + "/32", "dev", IFACE)


def del_addr(addr):
    ip("addr", "del", addr + ("/128" if ":" in addr else "/32"), "dev", IFACE)


def setup_addresses():
    ip("addr", "add", OWN + "/24", "dev", IFACE)
    for a in PRIVATE_ADDRS:
        add_addr(a)


# ---- helpers ---------------------------------------------------------------------------

def counting_listeners(env, addrs):
    """A RawServer on every address, all on one port. Returns (port, {addr: server})."""
    port = h.free_port()
    servers = {}
    for a in addrs:
        s = h.RawServer(lambda c: c.sendall(b"HTTP/1.0 200 OK\r\n\r\nREACHED"), host=a, port=port)
        env.servers.append(s)
        servers[a] = s
    return port, servers


def bracketed(host):
    return "[%s]" % host if ":" in host and not host.startswith("[") else host


def deny(gw, ag, cid, user, host, port, rule, atyp=None, verdict="forbidden"):
    """SOCKS5, HTTP GET and CONNECT to host:port are refused, each with one
    log line naming the rule."""
    http_host = bracketed(host)
    acl.expect_denied(gw, ag, cid, user, host, port, rule, verdict=verdict, atyp=atyp,
                      http_host=http_host, targets={"%s:%d" % (bracketed(host), port)})


def reload_agent(ag):
    mark = ag.mark()
    ag.send_signal(1)  # SIGHUP
    line = ag.wait_for_log("Configuration reloaded", 5 + h.slack(), since=mark)
    h.check(ag.alive(), "the agent died on SIGHUP")
    return mark, line


def local_count(ag, since):
    """The interface address count the agent logged since the mark."""
    lines = ag.find("Interface addresses read for @local", since)
    h.check(lines, "the agent did not log its interface addresses:\n%s" % ag.tail(10))
    return int(lines[-1].get("count"))


# ---- cases -----------------------------------------------------------------------------

def test_production_list_refuses_private_targets(env):
    """forbidden_hosts = @loopback, @private, @local refuses loopback, every
    private range, cloud metadata, the agent's own address and their mapped
    and NAT64 spellings, given as IP literals and as hosts-file names
    (SOCKS5 0x02, HTTP 403, a log line naming the set), and connects to
    none of them although each has a listener; an agent without these sets
    reaches the same listeners."""
    port, servers = counting_listeners(env, LOOPBACK_ADDRS + [OWN] + PRIVATE_ADDRS)
    hosts = acl.write_hosts(env, "hosts", [
        "127.0.0.1 loop.test",
        "127.0.0.2 loop2.test",
        "::1 loop6.test",
        "10.1.2.3 ten.test",
        "172.31.255.254 corp.test",
        "192.168.1.1 lan.test",
        "169.254.169.254 metadata.test",
        "100.64.0.1 cgnat.test",
        "fd00::1 ula.test",
        "::ffff:192.168.1.1 mapped.test",
        "64:ff9b::a9fe:a9fe nat64-metadata.test",
        "64:ff9b::7f00:1 nat64-loop.test",
        "%s own.test" % OWN,
    ])
    gw = acl.gateway(env)
    ag = acl.agent(env, "prod-1", "prod", forbidden_hosts=PRODUCTION, hosts_file=hosts)
    user = "user.prod"
    cases = [
        # (target, SOCKS5 ATYP: None = 1 or 4 for an address, 3 = as a name; rule)
        ("127.0.0.1", None, "@loopback"),
        ("127.0.0.2", None, "@loopback"),
        ("::1", None, "@loopback"),
        ("0.0.0.0", None, "@loopback"),
        ("127.1", 3, "@loopback"),
        ("64:ff9b::7f00:1", None, "@loopback"),
        ("10.1.2.3", None, "@private"),
        ("172.16.0.1", None, "@private"),
        ("172.31.255.254", None, "@private"),
        ("192.168.1.1", None, "@private"),
        ("169.254.169.254", None, "@private"),
        ("100.64.0.1", None, "@private"),
        ("100.127.255.254", None, "@private"),
        ("fd00::1", None, "@private"),
        ("fdff::2", None, "@private"),
        ("::ffff:10.1.2.3", None, "@private"),
        ("64:ff9b::a9fe:a9fe", None, "@private"),
        ("[64:ff9b::c0a8:101]", 3, "@private"),
        (OWN, None, "@private"),        # @private comes first in the list
        ("loop.test", 3, "@loopback"),
        ("loop2.test", 3, "@loopback"),
        ("loop6.test", 3, "@loopback"),
        ("nat64-loop.test", 3, "@loopback"),
        ("ten.test", 3, "@private"),
        ("corp.test", 3, "@private"),
        ("lan.test", 3, "@private"),
        ("metadata.test", 3, "@private"),
        ("cgnat.test", 3, "@private"),
        ("ula.test", 3, "@private"),
        ("mapped.test", 3, "@private"),
        ("nat64-metadata.test", 3, "@private"),
        ("own.test", 3, "@private"),
    ]
    for host, atyp, rule in cases:
        deny(gw, ag, "prod-1", user, host, port, rule, atyp=atyp)
    reached = {a: s.accepted for a, s in servers.items() if s.accepted}
    h.check(not reached, "denied targets were dialled: %r" % reached)
    h.check(not ag.find("Target connection failed"), "a denied target was dialled or looked "
            "up: %r" % ag.find("Target connection failed"))

    # The listeners are real: an agent without the sets reaches them.
    open_ag = acl.agent(env, "open-1", "open", forbidden_hosts="example.invalid")
    for a in ("10.1.2.3", "169.254.169.254", "fd00::1", OWN):
        s, rep = acl.socks5(gw, "user.open", h.socks5_target_bytes(a, port))
        try:
            h.check(rep == 0, "agent without sets to %s: REP 0x%02x\n%s"
                    % (a, rep, open_ag.tail(5)))
            got = h.recv_exact(s, len(b"HTTP/1.0 200 OK\r\n\r\nREACHED"))
        finally:
            s.close()
        h.check(got.endswith(b"REACHED"), "%s answered %r" % (a, got))
        h.wait_until(lambda: servers[a].accepted == 1, 5, "the listener on %s to count it" % a)
    acl.no_secrets(env)


def test_local_refuses_own_address(env):
    """With @private absent, @local alone refuses the agent's own address
    10.200.0.1 (as a literal, a mapped or NAT64 address, or a hosts-file
    name) while an agent without @local connects to it; in allowed_hosts,
    @local admits exactly the host's own addresses."""
    target = h.HttpTarget(OWN, name="own")
    env.servers.append(target)
    port = target.port
    hosts = acl.write_hosts(env, "hosts", ["%s own.test" % OWN, "::ffff:%s own6.test" % OWN])
    gw = acl.gateway(env)
    local = acl.agent(env, "local-1", "local", forbidden_hosts="@loopback, @local",
                      hosts_file=hosts)
    acl.agent(env, "plain-1", "plain", forbidden_hosts="@loopback", hosts_file=hosts)
    only = acl.agent(env, "only-1", "only", allowed_hosts="@local", forbidden_hosts="@loopback",
                     hosts_file=hosts)
    for host, atyp in ((OWN, None), ("own.test", 3), ("own6.test", 3),
                       ("::ffff:" + OWN, None), ("64:ff9b::ac8:1", None)):
        deny(gw, local, "local-1", "user.local", host, port, "@local", atyp=atyp)
    h.check(not target.requests, "a target denied by @local was reached: %r" % target.requests)
    acl.expect_allowed(gw, "user.plain", OWN, port, "own")
    acl.expect_allowed(gw, "user.plain", "own.test", port, "own")
    acl.expect_allowed(gw, "user.only", OWN, port, "own")
    acl.expect_allowed(gw, "user.only", "own.test", port, "own")
    # not one of the host's addresses (and unroutable here): not allowed, never dialled
    deny(gw, only, "only-1", "user.only", "10.200.0.2", port, None, verdict="not allowed")
    deny(gw, only, "only-1", "user.only", "127.0.0.1", port, "@loopback")
    acl.no_secrets(env)


def test_local_refreshed_on_sighup(env):
    """@local is the interface addresses read at start and at each SIGHUP:
    an address added afterwards is reachable until the reload, refused by
    @local after it, and reachable (as far as the rules go) again once it is
    removed and the agent reloaded."""
    new = "10.201.0.1"
    gw = acl.gateway(env)
    ag = acl.agent(env, "hup-1", "hup", forbidden_hosts="@loopback, @local")
    before = local_count(ag, 0)
    add_addr(new)
    try:
        target = h.HttpTarget(new, name="new")
        env.servers.append(target)
        port = target.port
        acl.expect_allowed(gw, "user.hup", new, port, "new")   # the agent's old snapshot
        h.check(not ag.find(acl.DENIED), "denied before the reload: %r" % ag.find(acl.DENIED))
        mark, _ = reload_agent(ag)
        h.check(local_count(ag, mark) == before + 1, "after adding %s the agent read %d "
                "interface addresses, expected %d" % (new, local_count(ag, mark), before + 1))
        seen = len(target.requests)
        deny(gw, ag, "hup-1", "user.hup", new, port, "@local")
        h.check(len(target.requests) == seen, "%s was reached after the reload" % new)
    finally:
        del_addr(new)
    mark, _ = reload_agent(ag)
    h.check(local_count(ag, mark) == before, "after removing %s the agent read %d interface "
            "addresses, expected %d" % (new, local_count(ag, mark), before))
    # The address is gone and unroutable: the dial fails (0x03), it is not denied.
    s, rep = acl.socks5(gw, "user.hup", h.socks5_target_bytes(new, port))
    s.close()
    h.check(rep not in (0x00, 0x02), "to the removed %s: REP 0x%02x, expected a network "
            "error\n%s" % (new, rep, ag.tail(5)))
    h.check(not ag.find(acl.DENIED, mark), "denied after the address was removed: %r"
            % ag.find(acl.DENIED, mark))


def test_sets_in_configuration(env):
    """The sets are valid in both lists, with or without a port; an unknown
    set is an error naming file:line, the key and the pattern."""
    base = [
        "[client]",
        "gateway_addr = 127.0.0.1:%d" % env.port,
        "gateway_tls_cert = %s" % os.path.join(env.certs, "ca.crt"),
        "client_id = sets-check",
        "auth_username = %s" % h.GW_USER,
        "auth_password = %s" % h.GW_PASS,
    ]

    def check_config(name, lines):
        path = os.path.join(env.dir, name)
        with open(path, "w") as f:
            f.write("\n".join(base + lines) + "\n")
        r = subprocess.run([h.client_bin(), "-c", path, "--check-config"], capture_output=True,
                           text=True, timeout=30, env=h._daemon_env(None), cwd=env.dir)
        return path, r.returncode, r.stderr.strip()

    _, rc, err = check_config("good.ini", ["forbidden_hosts = @loopback, @private, @local",
                                           "allowed_hosts = @private:443, @local:*, @loopback:22"])
    h.check(rc == 0, "a configuration with the sets is refused: rc %d %r" % (rc, err))
    problems = []
    for i, (key, pattern, why) in enumerate([
            ("forbidden_hosts", "@lan", "unknown host set"),
            ("forbidden_hosts", "@Private", "unknown host set"),
            ("allowed_hosts", "@", "unknown host set"),
            ("allowed_hosts", "@local:0", "bad port"),
            ("forbidden_hosts", "[@private]", "bad IPv6 address")]):
        path, rc, err = check_config("bad-%d.ini" % i, ["%s = good.example.test" % key,
                                                        "%s = @loopback, %s" % (key, pattern)])
        want = "%s:8: [client] %s: '%s': %s" % (path, key, pattern, why)
        if rc != 2 or want not in err or len(err.splitlines()) != 1:
            problems.append("%s = %s: rc %d, stderr %r, expected one line with %r"
                            % (key, pattern, rc, err, want))
    h.check(not problems, "unknown or bad sets not reported as expected:\n" + "\n".join(problems))


if __name__ == "__main__":
    why = enter_namespace()
    if why:
        print("1..0 # SKIP network namespace unavailable: %s" % why, flush=True)
        sys.exit(77)
    setup_addresses()
    h.run([
        test_production_list_refuses_private_targets,
        test_local_refuses_own_address,
        test_local_refreshed_on_sighup,
        test_sets_in_configuration,
    ])
