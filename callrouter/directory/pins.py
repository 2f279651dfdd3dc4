"""Salted PIN hashes, with nothing but the standard library.

Format: ``scrypt$n$r$p$salt_b64$hash_b64`` (standard base64 without padding).
The parameters travel with each hash, so they can be raised later without
invalidating stored PINs.

The cost is deliberately modest (n = 2**12, r = 8: about 7 ms and 4 MiB per hash
on a small server).  A PIN of 4 to 12 digits cannot be protected by hashing cost
alone; the real defence is the lockout after a few wrong tries.  The hash still
keeps PINs out of database dumps and export files, and the cost keeps an import
of thousands of users fast.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

SCHEME = "scrypt"
N = 2**12
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Bounds accepted when reading a stored hash: wide enough for stronger settings
# later, narrow enough that a hostile export file cannot make verification eat
# gigabytes of memory or minutes of CPU.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAX_MEM = 256 * 1024 * 1024

_B64 = r"[A-Za-z0-9+/]+"
_FORMAT = re.compile(rf"scrypt\$([0-9]{{1,8}})\$([0-9]{{1,3}})\$([0-9]{{1,3}})\$({_B64})\$({_B64})")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEM, dklen=length
    )


def hash_pin(pin: str) -> str:
    """A new salted hash of ``pin`` (a different string on every call)."""
    if not pin:
        raise ValueError("PIN is empty")
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(pin, salt, N, R, P, HASH_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64encode(salt)}${_b64encode(digest)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    match = _FORMAT.fullmatch(stored)
    if match is None:
        return None
    n, r, p = int(match[1]), int(match[2]), int(match[3])
    if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
        return None
    if 128 * r * (n + p + 2) > _MAX_MEM:
        return None
    try:
        salt, digest = _b64decode(match[4]), _b64decode(match[5])
    except (binascii.Error, ValueError):
        return None
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        return None
    return n, r, p, salt, digest


def is_pin_hash(value: str) -> bool:
    """Whether ``value`` is a hash this module wrote (or could have written).

    Used to validate ``pin_hash`` values in import files: anything else (a plain
    PIN pasted into the wrong field, a hash from another system) is rejected.
    """
    return _parse(value) is not None


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` matches the hash ``stored``; False for a malformed hash."""
    parsed = _parse(stored)
    if parsed is None or not pin:
        return False
    n, r, p, salt, digest = parsed
    candidate = _scrypt(pin, salt, n, r, p, len(digest))
    return hmac.compare_digest(candidate, digest)


def hashes_to_store(pairs: Sequence[tuple[str, str | None]]) -> list[str]:
    """The hash to store for each (plain PIN, stored hash): the stored one if it matches.

    Keeping a matching hash makes re-importing the same file a no-op.  scrypt
    releases the GIL, so the work is spread over the CPUs.
    """

    def one(pair: tuple[str, str | None]) -> str:
        pin, stored = pair
        if stored is not None and verify_pin(pin, stored):
            return stored
        return hash_pin(pin)

    if len(pairs) < 4:
        return [one(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, pairs))
