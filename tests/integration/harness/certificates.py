"""Test certificates: one CA with a server certificate (valid for localhost,
127.0.0.1 and ::1) per name, made by tools/gen-certs.sh into a temporary
folder that is removed at interpreter exit.
"""

import atexit
import os
import shutil
import subprocess
import tempfile

from .base import REPO, check


GEN_CERTS = os.path.join(REPO, "tools", "gen-certs.sh")

_certs_root = None
_certs_cache = {}


def certs(name="main"):
    """A folder with ca.crt, server.crt, server.key from tools/gen-certs.sh.
    Each name is a separate CA (use a second name for a "wrong CA")."""
    global _certs_root
    if name in _certs_cache:
        return _certs_cache[name]
    if _certs_root is None:
        _certs_root = tempfile.mkdtemp(prefix="ap-itest-certs-")
        atexit.register(shutil.rmtree, _certs_root, True)
    d = os.path.join(_certs_root, name)
    r = subprocess.run(["bash", GEN_CERTS, d], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0,
          "tools/gen-certs.sh %s failed (rc %d): %s" % (d, r.returncode, r.stderr))
    for f in ("ca.crt", "server.crt", "server.key"):
        check(os.path.getsize(os.path.join(d, f)) > 0, "gen-certs.sh made no %s" % f)
    _certs_cache[name] = d
    return d
