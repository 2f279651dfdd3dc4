"""PIN hashes: salted scrypt from the standard library."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.directory.pins import hash_pin, is_pin_hash, verify_pin


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
