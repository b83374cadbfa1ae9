#!/usr/bin/env python3
"""The Debian package (issue 10 item 4, docs/operations.md "Installing and
the package"): tools/package.sh builds build/pkg/anyproxy_VERSION_ARCH.deb;
`apt-get install ./…deb` installs it without the network (its Depends are
what the build already uses), the installed binaries answer --version (with
wolfSSL linked in statically) and --check-config on the installed examples
(the conffiles and every example deployment of configs/examples, installed
in /usr/share/doc/anyproxy/examples) as the system user the package
created, the Grafana dashboard is installed, the installed units pass
systemd-analyze verify where it can run, an upgrade to a newer version
keeps the operator's change to a conffile (the release's copy beside it as
.dpkg-dist), and `apt-get remove --purge`
leaves nothing behind: no file of the package, no /etc/anyproxy, no user.

Needs root, apt-get and dpkg-deb, and a machine where anyproxy is not
installed and no user anyproxy exists (otherwise skipped, exit 77: the
test must not touch what it did not create). Everything it installs is
purged again, also when a check fails.

The build folder $AP_BUILD_DIR is reused (tools/package.sh sets its prefix
to /usr, which changes only what meson install writes); a sanitizer build
is not packaged (skipped: the plain build's run covers it).
"""
import glob
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PACKAGE = "anyproxy"
ETC = "/etc/anyproxy"
CERTS = ETC + "/certs"
EXAMPLES = ["gateway.ini", "client-default.ini", "client-production.ini",
            "client-development.ini", "client-testing.ini"]
DOC = "/usr/share/doc/anyproxy"
# the example deployments of configs/examples, as installed below DOC/examples
DEPLOYMENT_FILES = sorted(os.path.relpath(f, os.path.join(h.CONFIGS, "examples"))
                          for f in glob.glob(os.path.join(h.CONFIGS, "examples", "*", "*.ini")))
DASHBOARD = DOC + "/grafana/anyproxy.json"
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def run(args, check=True, **kw):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=kw.pop("timeout", 600), **kw)
    if check and p.returncode != 0:
        h.fail("%s: exit %d\n%s" % (" ".join(args), p.returncode, p.stdout[-3000:]))
    return p


def installed():
    p = run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], check=False)
    return p.returncode == 0 and "installed" in p.stdout.split()[-1:]


def known(name):
    """dpkg still knows the package (installed, or its conffiles left)."""
    p = run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], check=False)
    return p.returncode == 0 and "not-installed" not in p.stdout


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def why_skip():
    if os.geteuid() != 0:
        return "needs root (apt-get install)"
    for tool in ("apt-get", "dpkg-deb", "dpkg-shlibdeps", "adduser"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    if h.sanitized_build():
        # a package of sanitizer binaries means nothing; the plain build's
        # run of this file covers packaging
        return "a sanitizer build is not packaged"
    if known(PACKAGE):
        return "the package %s is already on this machine; not touching it" % PACKAGE
    if user_exists("anyproxy") or group_exists("anyproxy") or os.path.exists(ETC):
        return "a user, group or %s named anyproxy exists already; not touching it" % ETC
    return None


def build_package():
    p = run([os.path.join(h.REPO, "tools", "package.sh"), h.build_dir()], timeout=1800)
    deb = p.stdout.strip().splitlines()[-1]
    h.check(deb.endswith(".deb") and os.path.isfile(deb),
            "package.sh did not name a .deb: %r" % p.stdout[-2000:])
    h.check(os.path.basename(deb).startswith("anyproxy_")
            and os.path.dirname(deb) == os.path.join(h.REPO, "build", "pkg"),
            "unexpected package path %s" % deb)
    return deb


def package_files(deb):
    """The regular files and links the package ships, as absolute paths."""
    out = run(["dpkg-deb", "-c", deb]).stdout
    files = []
    for line in out.splitlines():
        if line.startswith("d"):
            continue
        path = line.split(None, 5)[5].split(" -> ")[0]
        files.append(path[1:])  # "./usr/bin/x" -> "/usr/bin/x"
    return files


def purge():
    """Remove the package and what this test put in /etc/anyproxy."""
    for f in glob.glob(CERTS + "/*"):
        os.unlink(f)
    if known(PACKAGE):
        return run(["apt-get", "remove", "--purge", "-y", PACKAGE], env=APT_ENV, check=False)
    return None


def as_anyproxy(args, cwd):
    return run(["setpriv", "--reuid=anyproxy", "--regid=anyproxy", "--init-groups"] + args,
               check=False, cwd=cwd)


def check_installed(deb, files):
    control = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
    for lib in ("liburing2", "libinih1", "libpcre2-8-0", "libc6", "adduser"):
        h.check(lib in control, "Depends lacks %s: %s" % (lib, control))
    h.check("wolfssl" not in control.lower(), "Depends names wolfSSL: %s" % control)
    for f in files:
        h.check(os.path.lexists(f), "%s from the package is not installed" % f)
    for b in ("anyproxy-gateway", "anyproxy-client", "apctl"):
        h.check("/usr/bin/" + b in files, "the package has no /usr/bin/%s" % b)
    for unit in ("anyproxy-gateway.service", "anyproxy-client@.service"):
        h.check("/lib/systemd/system/" + unit in files, "the package has no unit %s" % unit)
    h.check(DEPLOYMENT_FILES, "no example deployments in configs/examples")
    shipped = sorted(os.path.relpath(f, DOC + "/examples") for f in files
                     if f.startswith(DOC + "/examples/") and f.count("/") == 7 and
                     f.endswith(".ini"))
    h.check(shipped == DEPLOYMENT_FILES, "example deployments in the package %r, in "
            "configs/examples %r" % (shipped, DEPLOYMENT_FILES))
    h.check(DASHBOARD in files, "the package has no %s" % DASHBOARD)
    with open(DASHBOARD) as f:
        h.check(json.load(f).get("panels"), "the installed dashboard has no panels")
    conffiles = set(run(["dpkg-query", "--control-show", PACKAGE, "conffiles"],
                        check=False).stdout.split())
    for ex in EXAMPLES:
        path = os.path.join(ETC, ex)
        h.check(path in conffiles, "%s is not a conffile (%r)" % (path, conffiles))
        st = os.stat(path)
        h.check(stat.S_IMODE(st.st_mode) == 0o640 and grp.getgrgid(st.st_gid).gr_name == "anyproxy",
                "%s: mode %o group %d, want 0640 group anyproxy"
                % (path, stat.S_IMODE(st.st_mode), st.st_gid))

    # the system user and group the daemons run as
    pw = pwd.getpwnam("anyproxy")
    h.check(pw.pw_uid < 1000, "anyproxy is not a system user (uid %d)" % pw.pw_uid)
    h.check(not os.path.exists(pw.pw_dir) or pw.pw_dir == "/nonexistent",
            "the system user got a home folder %s" % pw.pw_dir)
    h.check(os.path.isdir(CERTS), "%s was not created" % CERTS)

    # no dynamic wolfSSL: the package's own optimized one is linked in
    ldd = run(["ldd", "/usr/bin/anyproxy-gateway"]).stdout
    h.check("wolfssl" not in ldd.lower(), "the gateway loads wolfSSL dynamically:\n" + ldd)
    version = run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip()
    for b in ("anyproxy-gateway", "anyproxy-client"):
        out = run(["/usr/bin/" + b, "--version"]).stdout
        h.check(out.startswith("%s %s (wolfSSL" % (b, version)), "%s --version: %r" % (b, out))


def check_examples():
    """--check-config on every installed example, as the unit runs it: user
    anyproxy, in /etc/anyproxy, with certificates in /etc/anyproxy/certs."""
    run([os.path.join(h.REPO, "tools", "gen-certs.sh"), CERTS])
    for f in glob.glob(CERTS + "/*"):
        os.chown(f, 0, grp.getgrnam("anyproxy").gr_gid)
        os.chmod(f, 0o640)
    for ex in EXAMPLES:
        binary = "/usr/bin/anyproxy-gateway" if ex == "gateway.ini" else "/usr/bin/anyproxy-client"
        p = as_anyproxy([binary, "-c", os.path.join(ETC, ex), "--check-config"], cwd=ETC)
        h.check(p.returncode == 0 and "is valid" in p.stdout,
                "%s --check-config on %s as anyproxy: rc %d\n%s"
                % (binary, ex, p.returncode, p.stdout))
    # the example deployments, as installed in the doc folder (their relative
    # certs/ paths taken from /etc/anyproxy, as a unit would)
    for rel in DEPLOYMENT_FILES:
        path = os.path.join(DOC, "examples", rel)
        binary = ("/usr/bin/anyproxy-gateway" if os.path.basename(rel) == "gateway.ini"
                  else "/usr/bin/anyproxy-client")
        p = as_anyproxy([binary, "-c", path, "--check-config"], cwd=ETC)
        h.check(p.returncode == 0 and "is valid" in p.stdout,
                "%s --check-config on the installed %s: rc %d\n%s"
                % (binary, path, p.returncode, p.stdout))
    # an ordinary user cannot read them (they hold passwords)
    p = run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "/usr/bin/anyproxy-gateway", "-c", os.path.join(ETC, "gateway.ini"),
             "--check-config"], check=False, cwd="/")
    h.check(p.returncode == 2 and "Permission denied" in p.stdout,
            "nobody could read gateway.ini: rc %d %r" % (p.returncode, p.stdout))


def upgraded_copy(deb, workdir):
    """The same package with a higher version, as the next release would be."""
    tree = os.path.join(workdir, "upgrade")
    run(["dpkg-deb", "-R", deb, tree])
    control = os.path.join(tree, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    version = run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip()
    text = text.replace("Version: %s\n" % version, "Version: %s+upgrade1\n" % version)
    with open(control, "w") as f:
        f.write(text)
    # the release changed the example too: dpkg must choose
    with open(os.path.join(tree, "etc", "anyproxy", "gateway.ini"), "a") as f:
        f.write("; changed in the release\n")
    new = os.path.join(workdir, "anyproxy_%s+upgrade1_amd64.deb" % version)
    run(["dpkg-deb", "--build", "--root-owner-group", tree, new])
    return new, version + "+upgrade1"


def check_upgrade(deb, workdir):
    """An upgrade keeps the operator's changes to a conffile (dpkg puts the
    release's next to it as .dpkg-dist), the user, and the files' group and
    mode."""
    gateway_ini = os.path.join(ETC, "gateway.ini")
    with open(gateway_ini, "a") as f:
        f.write("; changed by the operator\n")
    new, version = upgraded_copy(deb, workdir)
    p = run(["apt-get", "install", "-y", "-o", "Dpkg::Options::=--force-confold", new],
            env=APT_ENV, check=False)
    h.check(p.returncode == 0, "upgrade to %s: exit %d\n%s" % (version, p.returncode,
                                                               p.stdout[-3000:]))
    now = run(["dpkg-query", "-W", "-f=${Version}", PACKAGE]).stdout
    h.check(now == version, "installed version after the upgrade: %r" % now)
    with open(gateway_ini) as f:
        h.check(f.read().endswith("; changed by the operator\n"),
                "the upgrade overwrote the operator's gateway.ini")
    with open(gateway_ini + ".dpkg-dist") as f:
        h.check(f.read().endswith("; changed in the release\n"),
                "the release's gateway.ini is not beside the operator's")
    for ex in EXAMPLES:
        st = os.stat(os.path.join(ETC, ex))
        h.check(stat.S_IMODE(st.st_mode) == 0o640 and grp.getgrgid(st.st_gid).gr_name == "anyproxy",
                "%s after the upgrade: mode %o gid %d" % (ex, stat.S_IMODE(st.st_mode), st.st_gid))
    h.check(user_exists("anyproxy"), "the upgrade lost the user anyproxy")
    p = as_anyproxy(["/usr/bin/anyproxy-gateway", "-c", gateway_ini, "--check-config"], cwd=ETC)
    h.check(p.returncode == 0, "--check-config after the upgrade: %s" % p.stdout)


def check_units_verify():
    if not shutil.which("systemd-analyze"):
        h.note("SKIP systemd-analyze verify: not installed")
        return
    args = ["systemd-analyze", "verify"] + ([] if shutil.which("man") else ["--man=no"])
    probe = run(args + ["/lib/systemd/system/anyproxy-gateway.service"], check=False)
    out = probe.stdout
    # the production instance reads the installed client-production.ini
    p = run(args + ["/lib/systemd/system/anyproxy-client@production.service"], check=False)
    out += p.stdout
    ours = [line for line in out.splitlines() if "anyproxy" in line]
    if probe.returncode != 0 and not ours:
        h.note("SKIP systemd-analyze verify cannot run here: " + out.strip())
        return
    h.check(probe.returncode == 0 and p.returncode == 0 and not ours,
            "systemd-analyze verify on the installed units:\n" + out)


def test_package_install_remove(env):
    deb = build_package()
    files = package_files(deb)
    try:
        p = run(["apt-get", "install", "-y", deb], env=APT_ENV, check=False)
        h.check(p.returncode == 0, "apt-get install %s: exit %d\n%s"
                % (deb, p.returncode, p.stdout[-3000:]))
        h.check(installed(), "dpkg does not list %s as installed" % PACKAGE)
        check_installed(deb, files)
        check_examples()
        check_units_verify()
        check_upgrade(deb, env.dir)
    finally:
        p = purge()
    h.check(p is not None and p.returncode == 0,
            "apt-get remove --purge: %s" % (p.stdout[-3000:] if p else "not installed"))
    h.check(not known(PACKAGE), "dpkg still knows %s after the purge" % PACKAGE)
    left = [f for f in files if os.path.lexists(f)]
    h.check(not left, "left behind after the purge: %s" % left)
    for d in (ETC, "/var/log/anyproxy", "/usr/share/doc/anyproxy"):
        h.check(not os.path.exists(d), "%s is left behind" % d)
    h.check(not user_exists("anyproxy") and not group_exists("anyproxy"),
            "the user or group anyproxy is left behind")


if __name__ == "__main__":
    why = why_skip()
    if why:
        print("1..0 # SKIP %s" % why, flush=True)
        sys.exit(77)
    h.run([test_package_install_remove])
