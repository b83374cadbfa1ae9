#!/usr/bin/env python3
"""Configuration errors, the command line, the shipped example configs and
environment overrides.

Every bad config must make --check-config exit 2 with one line on stderr,
"PROG: configuration error: FILE:LINE: [section] key: message" (no LINE
when the problem is a key that is absent), and never echo a secret.
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SECRET = "Sup3r-S3cret-Value"


def client_lines(env):
    return [
        "[client]",                                                    # 1
        "gateway_addr = 127.0.0.1:%d" % env.port,                      # 2
        "gateway_tls_cert = %s" % os.path.join(env.certs, "ca.crt"),   # 3
        "client_id = cfg-test",                                        # 4
        "auth_username = someone",                                     # 5
        "auth_password = %s" % SECRET,                                 # 6
        "",                                                            # 7
        "[log]",                                                       # 8
        "level = info",                                                # 9
    ]


def gateway_lines(env):
    return [
        "[gateway]",                                                   # 1
        "listen_addr = 127.0.0.1:%d" % env.port,                       # 2
        "tls_cert = %s" % os.path.join(env.certs, "server.crt"),       # 3
        "tls_key = %s" % os.path.join(env.certs, "server.key"),        # 4
        "auth_username = someone",                                     # 5
        "auth_password = %s" % SECRET,                                 # 6
        "",                                                            # 7
        "[control]",                                                   # 8
        "socket = %s" % os.path.join(env.dir, "gw.sock"),              # 9
    ]


def replace(lines, lineno, text):
    lines = list(lines)
    lines[lineno - 1] = text
    return lines


def insert(lines, lineno, text):
    lines = list(lines)
    lines.insert(lineno - 1, text)
    return lines


def delete(lines, lineno):
    lines = list(lines)
    del lines[lineno - 1]
    return lines


def check_config(env, program, name, lines, extra_env=None):
    path = os.path.join(env.dir, name + ".ini")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    binary = h.gateway_bin() if program == "gateway" else h.client_bin()
    envv = h._daemon_env(extra_env)
    r = subprocess.run([binary, "-c", path, "--check-config"], capture_output=True, text=True,
                       timeout=30, env=envv, cwd=env.dir)
    return path, r


def expect_error(env, program, name, lines, line, *needles, extra_env=None, where=None):
    """--check-config must exit 2 naming the file, `line` (None: no line) and
    every needle (the key, the reason)."""
    path, r = check_config(env, program, name, lines, extra_env)
    prog = "anyproxy-" + program
    h.check(r.returncode == 2, "%s: --check-config exited %d, expected 2\nstderr: %s"
            % (name, r.returncode, r.stderr))
    err = r.stderr.strip()
    h.check(len(err.splitlines()) == 1, "%s: expected one error line, got:\n%s" % (name, err))
    if where is None:
        where = "%s:%d: " % (path, line) if line else "%s: " % path
    prefix = "%s: configuration error: %s" % (prog, where)
    h.check(err.startswith(prefix), "%s: stderr should start with %r:\n%s" % (name, prefix, err))
    for n in needles:
        h.check(n in err, "%s: stderr should mention %r:\n%s" % (name, n, err))
    h.check(SECRET not in err, "%s: the error echoes a secret:\n%s" % (name, err))
    h.check("valid" not in r.stdout, "%s: stdout says valid: %r" % (name, r.stdout))
    return err


# ---- client errors ----

def test_client_unknown_key(env):
    expect_error(env, "client", "unknown-key", insert(client_lines(env), 5, "bogus_key = 1"),
                 5, "[client] bogus_key", "unknown key")


def test_client_unknown_section(env):
    expect_error(env, "client", "unknown-section", insert(client_lines(env), 8, "[bogus]"),
                 8, "[bogus]", "unknown section")
    # a section of the other program is refused too, by name
    expect_error(env, "client", "gateway-section", insert(client_lines(env), 8, "[gateway]"),
                 8, "[gateway]", "anyproxy-gateway")


def test_client_missing_required_key(env):
    expect_error(env, "client", "missing-client-id", delete(client_lines(env), 4),
                 None, "[client] client_id", "required")
    expect_error(env, "client", "missing-gateway-addr", delete(client_lines(env), 2),
                 None, "[client] gateway_addr", "required")
    expect_error(env, "client", "empty-client-id", replace(client_lines(env), 4, "client_id ="),
                 4, "[client] client_id")


def test_client_bad_address(env):
    for i, value in enumerate(["127.0.0.1", "127.0.0.1:70000", "127.0.0.1:http", "300.1.1.1:80",
                               "bad host!:80", ":8443", "::1:8443"]):
        expect_error(env, "client", "bad-addr-%d" % i,
                     replace(client_lines(env), 2, "gateway_addr = " + value),
                     2, "[client] gateway_addr")


def test_client_bad_numbers(env):
    cases = [("replicas = abc", "bad number"), ("replicas = 0", "replicas"),
             ("replicas = 65", "replicas"), ("replicas = -1", "replicas"),
             ("ping_interval_ms = 99999999999", "ping_interval_ms"),
             ("handshake_timeout_ms = 1.5", "handshake_timeout_ms"),
             ("reconnect_max_delay_ms = 10s", "reconnect_max_delay_ms")]
    for i, (text, needle) in enumerate(cases):
        key = text.split()[0]
        expect_error(env, "client", "bad-number-%d" % i, insert(client_lines(env), 7, text),
                     7, "[client] " + key, needle)


def test_client_cross_key_rules(env):
    expect_error(env, "client", "ping-order",
                 client_lines(env)[:6] + ["ping_interval_ms = 2000", "ping_timeout_ms = 1000"],
                 8, "ping_timeout_ms", "ping_interval_ms")
    expect_error(env, "client", "reconnect-order",
                 client_lines(env)[:6] + ["reconnect_initial_delay_ms = 5000",
                                          "reconnect_max_delay_ms = 1000"],
                 8, "reconnect_max_delay_ms")


def test_client_bad_ids(env):
    expect_error(env, "client", "bad-group", insert(client_lines(env), 5, "group_id = bad group!"),
                 5, "[client] group_id")
    expect_error(env, "client", "long-id", replace(client_lines(env), 4, "client_id = " + "a" * 65),
                 4, "[client] client_id")


def test_client_missing_cert_file(env):
    missing = "/nonexistent-anyproxy-dir/ca.crt"  # short: errors cut long values
    expect_error(env, "client", "missing-cert",
                 replace(client_lines(env), 3, "gateway_tls_cert = " + missing),
                 3, "[client] gateway_tls_cert", missing, "No such file")


def test_client_unreadable_cert_file(env):
    # tests may run as root, who reads chmod-000 files: a directory is a
    # path that nobody can read as a certificate
    expect_error(env, "client", "dir-cert",
                 replace(client_lines(env), 3, "gateway_tls_cert = " + env.dir),
                 3, "[client] gateway_tls_cert", "directory")


def test_over_long_line(env):
    long_value = "x" * 1500
    err = expect_error(env, "client", "long-line",
                       replace(client_lines(env), 6, "auth_password = " + long_value),
                       6, "too long")
    h.check(long_value[:40] not in err, "the over-long secret is echoed")
    expect_error(env, "client", "long-comment", insert(client_lines(env), 2, "; " + "c" * 1500),
                 2, "too long")
    # just under the limit is fine: nothing is silently truncated at 200 bytes
    ok_lines = insert(client_lines(env), 7, "allowed_hosts = " + ",".join(
        ["h%03d.example.com" % i for i in range(50)]))
    h.check(len(ok_lines[6]) > 200, "test line too short")
    _, r = check_config(env, "client", "long-but-ok", ok_lines)
    h.check(r.returncode == 0,
            "a %d-byte line should be accepted: %s" % (len(ok_lines[6]), r.stderr))


def test_over_long_line_names_key(env):
    # issue 2: errors name file, line AND key, over-long lines included
    expect_error(env, "client", "long-line-key",
                 replace(client_lines(env), 6, "auth_password = " + "x" * 1500),
                 6, "too long", "auth_password")
    expect_error(env, "client", "long-line-key2",
                 insert(client_lines(env), 7, "forbidden_hosts = " + "a.example," * 150),
                 7, "too long", "forbidden_hosts")


def test_secret_too_long_not_echoed(env):
    value = SECRET * 20  # 360 bytes: over the 255-byte limit, under the line limit
    err = expect_error(env, "client", "long-secret",
                       replace(client_lines(env), 6, "auth_password = " + value),
                       6, "[client] auth_password")
    h.check("Sup3r" not in err, "secret echoed: %s" % err)


def test_syntax_errors(env):
    expect_error(env, "client", "not-ini", insert(client_lines(env), 5, "this is not ini"), 5)
    expect_error(env, "client", "duplicate", insert(client_lines(env), 5, "client_id = other"),
                 5, "[client] client_id", "duplicate")
    expect_error(env, "client", "outside", ["client_id = x"] + client_lines(env), 1)


def test_env_override_error(env):
    expect_error(env, "client", "env-bad", client_lines(env), None,
                 "bad number", "many", extra_env={"CLIENT_REPLICAS": "many"},
                 where="environment CLIENT_REPLICAS: ")


def test_missing_config_file(env):
    path = os.path.join(env.dir, "nope.ini")
    r = subprocess.run([h.client_bin(), "-c", path, "--check-config"], capture_output=True,
                       text=True, timeout=30)
    h.check(r.returncode == 2 and path in r.stderr,
            "a missing config file: rc %d, %r" % (r.returncode, r.stderr))


# ---- gateway errors ----

def test_gateway_errors(env):
    g = gateway_lines(env)
    expect_error(env, "gateway", "gw-missing-key", delete(g, 4), None, "[gateway] tls_key",
                 "required")
    expect_error(env, "gateway", "gw-unknown-key", insert(g, 3, "listen_port = 1"), 3,
                 "listen_port", "unknown key")
    expect_error(env, "gateway", "gw-client-section", insert(g, 8, "[client]"), 8, "[client]")
    expect_error(env, "gateway", "gw-unknown-section", insert(g, 8, "[proxy.ftp]"), 8,
                 "[proxy.ftp]", "unknown section")
    expect_error(env, "gateway", "gw-bad-listen", replace(g, 2, "listen_addr = 127.0.0.1"), 2,
                 "[gateway] listen_addr")
    expect_error(env, "gateway", "gw-key-missing-file",
                 replace(g, 4, "tls_key = /nonexistent/server.key"), 4, "[gateway] tls_key",
                 "/nonexistent/server.key")
    expect_error(env, "gateway", "gw-key-is-dir", replace(g, 4, "tls_key = " + env.dir), 4,
                 "[gateway] tls_key")
    expect_error(env, "gateway", "gw-bad-timeout", insert(g, 7, "ping_timeout_ms = soon"), 7,
                 "[gateway] ping_timeout_ms")
    expect_error(env, "gateway", "gw-log-level", g + ["[log]", "level = loud"], 11,
                 "[log] level")
    expect_error(env, "gateway", "gw-socket-too-long", replace(g, 9, "socket = /" + "s" * 200),
                 9, "[control] socket")
    expect_error(env, "gateway", "gw-port-clash",
                 g + ["[proxy.http]", "listen_addr = 127.0.0.1:%d" % env.port], 11,
                 "listen_addr", "same port")
    expect_error(env, "gateway", "gw-proxy-user-dot",
                 g + ["[proxy.socks5]", "listen_addr = 127.0.0.1:1", "auth_username = a.b",
                      "auth_password = c"], 12, "[proxy.socks5] auth_username")


# ---- what works ----

def test_valid_configs_pass(env):
    _, r = check_config(env, "client", "good-client", client_lines(env))
    h.check(r.returncode == 0 and "valid" in r.stdout,
            "a valid client config: rc %d %r %r" % (r.returncode, r.stdout, r.stderr))
    _, r = check_config(env, "gateway", "good-gateway", gateway_lines(env))
    h.check(r.returncode == 0 and "valid" in r.stdout,
            "a valid gateway config: rc %d %r %r" % (r.returncode, r.stdout, r.stderr))


def test_shipped_example_configs_are_valid(env):
    # run where the examples expect their files: certs/ beside them
    shutil.copytree(env.certs, os.path.join(env.dir, "certs"))
    # the hand-written examples (configs/*.reference.ini are generated from
    # the key table and point at /etc/anyproxy: not checked here)
    files = [os.path.join("configs", f) for f in (
        "gateway.ini", "client-production.ini", "client-testing.ini",
        "client-development.ini", "client-default.ini")]
    files += [os.path.join("configs", "demo", f) for f in (
        "gateway.ini", "prod-1.ini", "prod-2.ini", "default-1.ini")]
    for rel in files:
        path = os.path.join(h.REPO, rel)
        text = open(path).read()
        program = "gateway" if re.search(r"^\[gateway\]", text, re.M) else "client"
        binary = h.gateway_bin() if program == "gateway" else h.client_bin()
        r = subprocess.run([binary, "-c", path, "--check-config"], capture_output=True, text=True,
                           timeout=30, cwd=env.dir, env=h._daemon_env(None))
        h.check(r.returncode == 0, "%s is not valid for anyproxy-%s (rc %d): %s"
                % (rel, program, r.returncode, r.stderr))
        # every key line is explained by a comment line above it
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^\s*[A-Za-z0-9_]+\s*=", line):
                h.check(i > 0 and lines[i - 1].lstrip().startswith((";", "#")),
                        "%s:%d: %r has no comment above it" % (rel, i + 1, line))


def test_version_and_help(env):
    for prog, binary in (("anyproxy-gateway", h.gateway_bin()),
                         ("anyproxy-client", h.client_bin())):
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        h.check(r.returncode == 0, "%s --version exited %d" % (prog, r.returncode))
        h.check(re.search(prog + r" \d+\.\d+\.\d+", r.stdout),
                "%s --version: %r" % (prog, r.stdout))
        h.check(re.search(r"wolfSSL \d+\.\d+\.\d+", r.stdout) and "AES-NI" in r.stdout,
                "%s --version should name wolfSSL and AES-NI: %r" % (prog, r.stdout))
        if "no AES-NI" in r.stdout:
            h.note("%s is linked with a wolfSSL without AES-NI" % prog)
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        h.check(r.returncode == 0, "%s --help exited %d" % (prog, r.returncode))
        h.check("--check-config" in r.stdout and "-c" in r.stdout,
                "%s --help: %r" % (prog, r.stdout))
        r = subprocess.run([binary, "--no-such-option"], capture_output=True, text=True, timeout=30)
        h.check(r.returncode == 2,
                "%s with a bad option exited %d, expected 2" % (prog, r.returncode))
    r = subprocess.run([h.apctl_bin(), "--help"], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0 and all(c in r.stdout for c in ("clients", "groups", "client ID")),
            "apctl --help: rc %d %r" % (r.returncode, r.stdout))
    r = subprocess.run([h.apctl_bin(), "--version"], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0 and "apctl" in r.stdout, "apctl --version: %r" % r.stdout)


def test_env_overrides_change_what_runs(env):
    # the gateway listens where GATEWAY_LISTEN_ADDR says, not where its file says
    file_port = h.free_port()
    cfg = env.gateway_config("gateway", port=file_port)
    gw = env.start("gateway", "gateway", cfg, {"GATEWAY_LISTEN_ADDR": "127.0.0.1:%d" % env.port})
    env.gw = gw
    env.wait_gateway_ready(gw)
    # the group comes from CLIENT_GROUP_ID, not from the file
    c1 = env.client_config("env-group", "env-group", group_id="from-file")
    env.agent("env-group", config=c1, env={"CLIENT_GROUP_ID": "from-env"})
    # an empty override means the default group
    c2 = env.client_config("env-default", "env-default", group_id="from-file")
    env.agent("env-default", config=c2, env={"CLIENT_GROUP_ID": ""})
    clients = env.clients()
    h.check(clients["env-group"]["group_id"] == "from-env",
            "CLIENT_GROUP_ID=from-env ignored: %r" % clients["env-group"])
    h.check(clients["env-default"]["group_id"] == "",
            "CLIENT_GROUP_ID= (empty) should mean the default group: %r" % clients["env-default"])
    h.check("from-file" not in env.groups(), "group from the file exists: %r" % env.groups())
    line = [l for l in gw.find("Client connected") if l.get("client_id") == "env-group"]
    h.check(line and line[0].get("group_id") == "from-env", "gateway log: %r" % line)


def test_log_json_to_file(env):
    # [log] format = json, output = a file: one JSON object per line
    gw_log = os.path.join(env.dir, "logs", "gateway.json")
    os.makedirs(os.path.dirname(gw_log))
    cfg = env.gateway_config("gateway")
    with open(cfg, "a") as f:
        f.write("format = json\noutput = %s\n" % gw_log)
    gw = env.start("gateway", "gateway", cfg)
    env.gw = gw
    h.wait_until(lambda: os.path.exists(gw_log) and "Gateway started" in open(gw_log).read(),
                 5 + h.slack(), "the gateway to log into %s" % gw_log)
    h.wait_until(lambda: env.apctl("groups")[0] == 0, 5 + h.slack(), "apctl to answer")
    env.agent("json-agent", group_id="jg")
    mode = os.stat(gw_log).st_mode & 0o777
    h.check(mode & 0o077 in (0, 0o040), "log file mode %o lets others read it" % mode)
    objs = []
    for line in open(gw_log).read().splitlines():
        try:
            objs.append(json.loads(line))
        except ValueError:
            h.fail("not a JSON log line: %r" % line)
    h.check(all({"time", "level", "msg"} <= set(o) for o in objs),
            "JSON lines lack keys: %r" % objs[:2])
    conn = [o for o in objs if o["msg"] == "Client connected"]
    h.check(conn and conn[0].get("client_id") == "json-agent" and conn[0].get("group_id") == "jg",
            "JSON 'Client connected': %r" % conn)
    h.check(all(o["level"] in ("debug", "info", "warn", "error") for o in objs),
            "levels: %r" % {o["level"] for o in objs})
    h.check(h.GW_PASS not in open(gw_log).read(), "the password is in the JSON log")
    h.check(gw.log().strip() == "",
            "with output = file nothing goes to stderr: %r" % gw.log()[:200])


if __name__ == "__main__":
    h.run([
        test_client_unknown_key,
        test_client_unknown_section,
        test_client_missing_required_key,
        test_client_bad_address,
        test_client_bad_numbers,
        test_client_cross_key_rules,
        test_client_bad_ids,
        test_client_missing_cert_file,
        test_client_unreadable_cert_file,
        test_over_long_line,
        test_over_long_line_names_key,
        test_secret_too_long_not_echoed,
        test_syntax_errors,
        test_env_override_error,
        test_missing_config_file,
        test_gateway_errors,
        test_valid_configs_pass,
        test_shipped_example_configs_are_valid,
        test_version_and_help,
        test_env_overrides_change_what_runs,
        test_log_json_to_file,
    ])
