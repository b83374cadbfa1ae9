#!/usr/bin/env python3
"""Secrets in the configuration (issue 8, item 7).

- An empty value for a secret key (every *password key: [gateway],
  [proxy.http], [proxy.socks5], [client] and [group.NAME] auth_password) is
  refused with exit 2 and one line naming FILE:LINE: [section] key, in
  --check-config and at a real start alike; so is an environment override
  that sets a secret to empty. Before, `[group.X] auth_password =` was
  accepted and an empty password then admitted users of group X, and an
  empty listener password without a username silently meant "no auth".
- At start, the configuration file and every private key file (tls_key)
  that group or others may read are logged at WARN with path and mode; a
  0600 file is not.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_config_errors import (SECRET, client_lines, expect_error,  # noqa: E402
                                gateway_lines, replace)

EMPTY = "empty secret"
WARN_MSG = "File with secrets is readable by group or others"


def expect_refused(env, program, name, lines, line, key, extra_env=None):
    """--check-config: exit 2, one line 'anyproxy-PROG: configuration
    error: FILE:LINE: [section] key: empty secret ...' (or 'environment
    VAR: ...' when extra_env names the culprit)."""
    where = None
    if extra_env:
        where = "environment %s: " % next(iter(extra_env))
    expect_error(env, program, name, lines, line, key, EMPTY, extra_env=extra_env, where=where)


def test_empty_gateway_password(env):
    expect_refused(env, "gateway", "gw", replace(gateway_lines(env), 6, "auth_password ="), 6,
                   "[gateway] auth_password")


def test_empty_http_password(env):
    g = gateway_lines(env) + ["", "[proxy.http]",                      # 11
                              "listen_addr = 127.0.0.1:%d" % h.free_port(),
                              "auth_username = user",                  # 13
                              "auth_password ="]                       # 14
    expect_refused(env, "gateway", "http", g, 14, "[proxy.http] auth_password")
    # without a username: before, this silently meant "no authentication"
    del g[12]
    expect_refused(env, "gateway", "http-nouser", g, 13, "[proxy.http] auth_password")


def test_empty_socks5_password(env):
    g = gateway_lines(env) + ["", "[proxy.socks5]",                    # 11
                              "listen_addr = 127.0.0.1:%d" % h.free_port(),
                              "auth_password = ",                      # 13
                              "auth_username = user"]
    expect_refused(env, "gateway", "socks5", g, 13, "[proxy.socks5] auth_password")


def test_empty_client_password(env):
    expect_refused(env, "client", "client", replace(client_lines(env), 6, "auth_password ="), 6,
                   "[client] auth_password")


def test_empty_group_password(env):
    """The attacker's finding: an empty [group.X] password was accepted and
    then admitted an empty password. Now the gateway does not even start."""
    g = gateway_lines(env) + ["", "[group.production]",                # 11
                              "auth_username = prod",                  # 12
                              "auth_password ="]                       # 13
    expect_refused(env, "gateway", "group", g, 13, "[group.production] auth_password")
    # a real start, not only --check-config
    path = os.path.join(env.dir, "group.ini")
    r = subprocess.run([h.gateway_bin(), "-c", path], capture_output=True, text=True,
                       timeout=30, env=h._daemon_env(None), cwd=env.dir)
    h.check(r.returncode == 2 and "[group.production] auth_password: " + EMPTY in r.stderr,
            "a real start: rc %d, stderr %r" % (r.returncode, r.stderr))
    h.check(not os.path.exists(env.control), "the gateway started anyway")


def test_empty_secret_from_environment(env):
    g = gateway_lines(env) + ["", "[proxy.http]", "listen_addr = 127.0.0.1:%d" % h.free_port()]
    expect_refused(env, "gateway", "env-http", g, None, "",
                   extra_env={"PROXY_HTTP_AUTH_PASSWORD": ""})
    expect_refused(env, "gateway", "env-gw", gateway_lines(env), None, "",
                   extra_env={"GATEWAY_AUTH_PASSWORD": ""})
    expect_refused(env, "client", "env-client", client_lines(env), None, "",
                   extra_env={"CLIENT_AUTH_PASSWORD": ""})
    # a blank line in the file that the environment fills is fine (the
    # reference configs are written that way)
    path = os.path.join(env.dir, "env-fills.ini")
    with open(path, "w") as f:
        f.write("\n".join(replace(gateway_lines(env), 6, "auth_password =")) + "\n")
    r = subprocess.run([h.gateway_bin(), "-c", path, "--check-config"], capture_output=True,
                       text=True, timeout=30, cwd=env.dir,
                       env=h._daemon_env({"GATEWAY_AUTH_PASSWORD": "from-env"}))
    h.check(r.returncode == 0, "a password from the environment should fill the blank line: "
            "rc %d %s" % (r.returncode, r.stderr))


def exposure_warnings(daemon):
    return [l for l in daemon.find(WARN_MSG) if l.level == "WARN"]


def write(env, name, lines, mode):
    path = os.path.join(env.dir, name + ".ini")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, mode)
    return path


def start_gateway(env, name, config_mode, key_mode):
    key = os.path.join(env.dir, name + ".key")
    shutil.copyfile(os.path.join(env.certs, "server.key"), key)
    os.chmod(key, key_mode)
    path = write(env, name, replace(gateway_lines(env), 4, "tls_key = %s" % key), config_mode)
    gw = env.start("gateway", name, path)
    env.wait_gateway_ready(gw)
    return gw, path, key


def test_world_readable_files_warned(env):
    gw, path, key = start_gateway(env, "gw-0644", 0o644, 0o644)
    warned = {l.get("file"): l for l in exposure_warnings(gw)}
    h.check(path in warned and warned[path].get("mode") == "0644",
            "no WARN with mode=0644 for the 0644 config file %s:\n%s" % (path, gw.tail(15)))
    h.check(key in warned and warned[key].get("mode") == "0644",
            "no WARN with mode=0644 for the 0644 key file %s:\n%s" % (key, gw.tail(15)))
    h.check(SECRET not in gw.log(), "the password is in the log")
    gw.stop()

    # group-readable only (0640) counts too
    env.port = h.free_port()
    gw, path, key = start_gateway(env, "gw-0640", 0o640, 0o600)
    warned = {l.get("file"): l for l in exposure_warnings(gw)}
    h.check(path in warned and warned[path].get("mode") == "0640" and key not in warned,
            "expected a WARN for the 0640 config only: %r" % list(warned))
    gw.stop()


def test_owner_only_files_not_warned(env):
    gw, path, key = start_gateway(env, "gw-0600", 0o600, 0o600)
    h.check(not exposure_warnings(gw), "0600 files warned about:\n%s" % gw.tail(15))
    gw.stop()


def test_agent_key_warned(env):
    """The agent's tls_key (mutual TLS) and config file: same rule."""
    env.gateway()
    key = os.path.join(env.dir, "agent.key")
    shutil.copyfile(os.path.join(env.certs, "server.key"), key)
    os.chmod(key, 0o604)
    c = client_lines(env)[:7] + ["gateway_server_name = localhost",
                                 "tls_cert = %s" % os.path.join(env.certs, "server.crt"),
                                 "tls_key = %s" % key]
    c = replace(replace(c, 5, "auth_username = %s" % h.GW_USER), 6,
                "auth_password = %s" % h.GW_PASS)
    path = write(env, "agent", c, 0o600)
    agent = env.start("client", "agent", path)
    agent.wait_for_log("Connected to gateway", 5 + h.slack())
    warned = {l.get("file"): l for l in exposure_warnings(agent)}
    h.check(key in warned and warned[key].get("mode") == "0604" and path not in warned,
            "expected a WARN for the agent's 0604 key only: %r\n%s" % (warned, agent.tail(10)))
    agent.stop()


if __name__ == "__main__":
    h.run([
        test_empty_gateway_password,
        test_empty_http_password,
        test_empty_socks5_password,
        test_empty_client_password,
        test_empty_group_password,
        test_empty_secret_from_environment,
        test_world_readable_files_warned,
        test_owner_only_files_not_warned,
        test_agent_key_warned,
    ])
