"""The runner: run(cases) executes a test file's cases, each with a fresh
TestEnv (or one shared fixture), and prints TAP ("ok - NAME", comments
with "# ") ending with "# SCRIPT: N passed, N failed in S s"; it exits 0
only when every case passed. meson registers each test file as one test.
"""

import os
import shutil
import signal
import sys
import time
import traceback

from . import processes
from .base import apctl_bin, build_dir, client_bin, gateway_bin
from .processes import TestEnv, _reap_all


def _on_term(signo, frame):
    # meson's timeout (or a user) stops us: leave no daemon behind
    raise SystemExit(128 + signo)


def note(text):
    """A diagnostic line in the test output (TAP comment)."""
    for line in str(text).splitlines():
        print("# " + line, flush=True)


def run(cases, fixture=None):
    """Run test cases (functions taking a TestEnv) and exit.

    Without fixture every case gets a fresh TestEnv. With fixture, one
    TestEnv is set up by fixture(env) and shared by the cases in order; its
    clean shutdown is reported as an extra case."""
    signal.signal(signal.SIGTERM, _on_term)
    build_dir()
    for b in (gateway_bin, client_bin, apctl_bin):
        b()
    script = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    total = len(cases) + (1 if fixture else 0)
    print("1..%d" % total, flush=True)
    failed = 0
    keep = False
    shared = None
    setup_error = None
    started = time.monotonic()
    if fixture:
        shared = TestEnv(script)
        try:
            fixture(shared)
        except Exception:
            setup_error = traceback.format_exc()
    for case in cases:
        name = case.__name__
        env = shared or TestEnv(name)
        t0 = time.monotonic()
        error = None
        problems = []
        if setup_error:
            error = "fixture failed:\n" + setup_error
        else:
            try:
                case(env)
            except Exception:
                error = traceback.format_exc()
            finally:
                if shared is None:
                    problems = env.cleanup()
        if error or problems:
            failed += 1
            keep = True
            print("not ok - %s" % name, flush=True)
            if error:
                note(error)
            for p in problems:
                note("clean-up: " + p)
            note(env.dump_logs())
            note("test folder kept: " + env.dir)
        else:
            print("ok - %s" % name, flush=True)
            note("%.2f s" % (time.monotonic() - t0))
    if shared is not None:
        problems = shared.cleanup()
        if problems:
            failed += 1
            keep = True
            print("not ok - clean shutdown of the shared daemons")
            for p in problems:
                note(p)
            note(shared.dump_logs())
        else:
            print("ok - clean shutdown of the shared daemons")
    _reap_all()
    if not keep and processes._base_dir and not os.environ.get("AP_KEEP_TMP"):
        shutil.rmtree(processes._base_dir, ignore_errors=True)
    print("# %s: %d passed, %d failed in %.1f s" % (script, total - failed, failed,
                                                    time.monotonic() - started), flush=True)
    sys.exit(1 if failed else 0)
