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
MAX_MEM = 256 * 1024 * 1024  # the maxmem passed to hashlib.scrypt
# OpenSSL's own limit on r * p (SCRYPT_PR_MAX), far above _MAX_R * _MAX_P.
_MAX_RP = 2**30 - 1

_B64 = r"[A-Za-z0-9+/]+"
_FORMAT = re.compile(rf"scrypt\$([0-9]{{1,8}})\$([0-9]{{1,3}})\$([0-9]{{1,3}})\$({_B64})\$({_B64})")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEM, dklen=length
    )


def hash_pin(pin: str) -> str:
    """A new salted hash of ``pin`` (a different string on every call)."""
    if not pin:
        raise ValueError("PIN is empty")
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(pin, salt, N, R, P, HASH_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64encode(salt)}${_b64encode(digest)}"


def scrypt_problem(n: int, r: int, p: int) -> str | None:
    """Why hashlib.scrypt on this OpenSSL (or our own bounds) refuses n, r, p; None: fine.

    OpenSSL's checks (``EVP_PBE_scrypt``), in its words: r and p not zero, n a power
    of two of at least 2, r * p at most 2**30 - 1, n below 2**(16 * r), and the
    memory 128 * r * (n + p + 2) bytes within maxmem.
    """
    if n < 2 or n & (n - 1):
        return f"n = {n} is not a power of two of at least 2"
    if n > _MAX_N:
        return f"n = {n} is above {_MAX_N}"
    if not 1 <= r <= _MAX_R:
        return f"r = {r} is not between 1 and {_MAX_R}"
    if not 1 <= p <= _MAX_P:
        return f"p = {p} is not between 1 and {_MAX_P}"
    if r * p > _MAX_RP:
        return f"r * p = {r * p} is above {_MAX_RP}"
    if 16 * r < 64 and n >= 1 << (16 * r):
        return f"n = {n} is not below 2**(16 * r) = {1 << (16 * r)}"
    memory = 128 * r * (n + p + 2)
    if memory > MAX_MEM:
        return f"n = {n}, r = {r}, p = {p} need {memory} bytes, more than {MAX_MEM}"
    return None


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | str:
    """The parts of a hash, or why it is not one (the message never quotes it)."""
    match = _FORMAT.fullmatch(stored)
    if match is None:
        return "not in the format scrypt$n$r$p$salt$hash"
    n, r, p = int(match[1]), int(match[2]), int(match[3])
    problem = scrypt_problem(n, r, p)
    if problem is not None:
        return f"scrypt parameters this system cannot verify: {problem}"
    try:
        salt, digest = _b64decode(match[4]), _b64decode(match[5])
    except (binascii.Error, ValueError):
        return "salt or hash is not base64"
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        return "salt shorter than 8 bytes, or hash not 16 to 64 bytes"
    return n, r, p, salt, digest


def pin_hash_problem(value: str) -> str | None:
    """Why ``value`` is not a hash this module wrote (or could have written and can
    verify); None when it is.  The message never quotes the value."""
    parsed = _parse(value)
    return parsed if isinstance(parsed, str) else None


def is_pin_hash(value: str) -> bool:
    """Whether ``value`` is a hash this module wrote (or could have written).

    Used to validate ``pin_hash`` values in import files: anything else (a plain
    PIN pasted into the wrong field, a hash from another system, parameters
    OpenSSL refuses) is rejected.  Every hash accepted here can be verified.
    """
    return pin_hash_problem(value) is None


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` matches the hash ``stored``; False for a malformed hash."""
    parsed = _parse(stored)
    if isinstance(parsed, str) or not pin:
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
