"""PIN hashes: salted scrypt from the standard library."""

from __future__ import annotations

import base64
import ctypes
import functools
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.directory.pins import MAX_MEM, hash_pin, is_pin_hash, verify_pin


def test_hash_has_the_documented_format() -> None:
    scheme, n, r, p, salt, digest = hash_pin("4711").split("$")
    assert (scheme, n, r, p) == ("scrypt", "4096", "8", "1")
    assert len(base64.b64decode(salt + "==")) == 16
    assert len(base64.b64decode(digest + "=")) == 32


def test_the_pin_itself_is_not_in_the_hash() -> None:
    assert "4711" not in hash_pin("4711").split("$", 4)[4]


def test_the_right_pin_verifies_and_a_wrong_one_does_not() -> None:
    stored = hash_pin("4711")
    assert verify_pin("4711", stored)
    assert not verify_pin("4712", stored)
    assert not verify_pin("47110", stored)
    assert not verify_pin("", stored)


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_pin("0815"), hash_pin("0815")
    assert first != second
    assert verify_pin("0815", first) and verify_pin("0815", second)


def test_an_empty_pin_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_pin("")


def test_our_hashes_are_recognised() -> None:
    assert is_pin_hash(hash_pin("123456789012"))


# Well-formed, so each case below differs from an acceptable hash by one flaw only.
WELL_FORMED = "scrypt$4096$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g"


def test_a_well_formed_hash_from_elsewhere_is_accepted_but_matches_nothing() -> None:
    assert is_pin_hash(WELL_FORMED)
    assert not verify_pin("4711", WELL_FORMED)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "4711",
        "scrypt$4096$8$1$c2FsdA",  # a part missing
        "bcrypt$4096$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "scrypt$4095$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g",  # n not 2**k
        "scrypt$1073741824$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g",  # 2**30
        "scrypt$4096$0$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g",  # r = 0
        "scrypt$4096$8$1$c2Fs!HNhbHRz$aGFzaGhhc2hoYXNoaGFzaGhhc2g",  # not base64
        "scrypt$4096$8$1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g",  # salt too short
        "scrypt$4096$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",  # digest too short
        " " + WELL_FORMED,
        WELL_FORMED + "\n",
    ],
)
def test_anything_else_is_not_a_pin_hash(value: str) -> None:
    assert not is_pin_hash(value)
    assert not verify_pin("4711", value)  # and never raises


@settings(max_examples=20, deadline=None)
@given(st.from_regex(r"[0-9]{4,12}", fullmatch=True))
def test_any_pin_verifies_against_its_own_hash(pin: str) -> None:
    stored = hash_pin(pin)
    assert is_pin_hash(stored)
    assert verify_pin(pin, stored)
    assert not verify_pin(pin + "0", stored)


# --- the scrypt parameters: every hash is_pin_hash accepts can really be verified -------

SALT_AND_DIGEST = "c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g"


def stored_with(n: int, r: int, p: int) -> str:
    return f"scrypt${n}${r}${p}${SALT_AND_DIGEST}"


def openssl_accepts(n: int, r: int, p: int) -> bool:
    """What hashlib.scrypt asks OpenSSL before it computes anything: the same call
    (``EVP_PBE_scrypt`` without a key only checks the parameters), in the libcrypto
    that hashlib uses, so that the whole range can be tried without the cost."""
    return _evp_pbe_scrypt()(None, 0, None, 0, n, r, p, MAX_MEM, None, 0) == 1


@functools.cache
def _evp_pbe_scrypt() -> Any:
    import _hashlib  # noqa: F401 (loads the libcrypto hashlib links)

    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        paths = {line.split()[-1] for line in maps if "libcrypto" in line}
    if not paths:
        pytest.skip("cannot find the libcrypto hashlib uses")
    function = ctypes.CDLL(sorted(paths)[0]).EVP_PBE_scrypt
    function.argtypes = (
        [ctypes.c_char_p, ctypes.c_size_t] * 2
        + [ctypes.c_uint64] * 4
        + [
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
    )
    function.restype = ctypes.c_int
    return function


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (2**20, 1, 1),  # n >= 2**(16 r): OpenSSL refuses (the directory import took it)
        (2**16, 1, 1),  # the smallest such
        (2**20, 32, 1),  # 4 GiB
        (2**19, 4, 16),  # 128 * r * (n + p + 2) > 256 MiB
        (2**12, 8, 0),
        (2**12, 0, 1),
        (1, 8, 1),
        (0, 8, 1),
        (2**21, 1, 1),
    ],
)
def test_parameters_openssl_refuses_are_not_a_pin_hash(n: int, r: int, p: int) -> None:
    assert not openssl_accepts(n, r, p)
    assert not is_pin_hash(stored_with(n, r, p))
    assert not verify_pin("4711", stored_with(n, r, p))  # and never raises


@pytest.mark.parametrize(("n", "r", "p"), [(2**15, 1, 1), (2**16, 2, 1), (2**12, 32, 16)])
def test_parameters_at_the_edges_verify(n: int, r: int, p: int) -> None:
    assert is_pin_hash(stored_with(n, r, p))
    assert not verify_pin("4711", stored_with(n, r, p))  # computed, no exception


def powers_of_two_and_others() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 24).map(lambda k: 2**k), st.integers(0, 2**25), st.just(2**16))


@settings(max_examples=2000, deadline=None)
@given(powers_of_two_and_others(), st.integers(0, 70), st.integers(0, 40))
def test_every_accepted_hash_passes_openssls_checks(n: int, r: int, p: int) -> None:
    accepted = is_pin_hash(stored_with(n, r, p))
    assert not accepted or openssl_accepts(n, r, p), (n, r, p)
    # Refused only by our own bounds (cost), or by OpenSSL.
    within_our_bounds = n <= 2**20 and r <= 32 and p <= 16
    assert accepted or not within_our_bounds or not openssl_accepts(n, r, p), (n, r, p)


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(st.integers(0, 13).map(lambda k: 2**k), st.integers(0, 5000)),
    st.integers(0, 34),
    st.integers(0, 18),
)
def test_is_pin_hash_exactly_when_verifying_does_not_raise(n: int, r: int, p: int) -> None:
    """The real thing, where it is cheap (n up to 2**13): is_pin_hash ⇔ verify_pin
    computes without an exception (hashlib's ValueError was a 500)."""
    stored = stored_with(n, r, p)
    try:
        hashlib.scrypt(b"4711", salt=b"saltsalt", n=n, r=r, p=p, maxmem=MAX_MEM, dklen=32)
    except ValueError:
        computable = False
    else:
        computable = r <= 32 and p <= 16  # our own cost bounds, beyond OpenSSL's
    assert is_pin_hash(stored) == computable, (n, r, p)
    assert not verify_pin("4711", stored)


@settings(max_examples=8, deadline=None)
@given(st.integers(15, 16), st.integers(1, 2), st.integers(1, 3))
def test_is_pin_hash_matches_hashlib_at_the_16r_boundary(k: int, r: int, p: int) -> None:
    n = 2**k
    try:
        hashlib.scrypt(b"4711", salt=b"saltsalt", n=n, r=r, p=p, maxmem=MAX_MEM, dklen=16)
    except ValueError:
        computable = False
    else:
        computable = True
    assert is_pin_hash(stored_with(n, r, p)) == computable
