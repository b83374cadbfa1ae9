"""Deterministic payloads: gen_chunks(size, seed) and friends make the same
bytes on both sides of a relay, so a test compares lengths and hashes
instead of holding the data.
"""

import hashlib
import random
import struct


GEN_BLOCK = 65536
_gen_bases = {}
_gen_hashes = {}


def _gen_base(seed):
    b = _gen_bases.get(seed)
    if b is None:
        b = memoryview(random.Random(seed).randbytes(1 << 20))
        _gen_bases[seed] = b
    return b


def gen_chunks(size, seed=1):
    """size bytes of deterministic data in blocks of at most GEN_BLOCK: a
    random 1 MiB pattern per seed, each 64 KiB block stamped with its index
    (so a lost, doubled or reordered block changes the hash)."""
    base = _gen_base(seed)
    k = 0
    off = 0
    while off < size:
        start = (k * GEN_BLOCK) % len(base)
        block = struct.pack(">Q", k) + base[start + 8:start + GEN_BLOCK]
        n = min(GEN_BLOCK, size - off)
        yield block if n == GEN_BLOCK else block[:n]
        off += n
        k += 1


def gen_bytes(size, seed=1):
    return b"".join(gen_chunks(size, seed))


def gen_sha256(size, seed=1):
    key = (size, seed)
    if key not in _gen_hashes:
        h = hashlib.sha256()
        for c in gen_chunks(size, seed):
            h.update(c)
        _gen_hashes[key] = h.hexdigest()
    return _gen_hashes[key]
