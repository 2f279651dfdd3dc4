"""Presence states and how they merge: parsers and tables, then merge properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrouter.domain.presence import (
    ClientStatus,
    DeviceState,
    PhoneStatus,
    UserPresence,
    merge_client,
    merge_phone,
)

D = DeviceState
C = ClientStatus


# --- DeviceState.parse -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "state"),
    [
        # AMI's spellings (DeviceStateChange, DeviceStateList)
        ("UNKNOWN", D.UNKNOWN),
        ("NOT_INUSE", D.NOT_INUSE),
        ("INUSE", D.INUSE),
        ("BUSY", D.BUSY),
        ("INVALID", D.INVALID),
        ("UNAVAILABLE", D.UNAVAILABLE),
        ("RINGING", D.RINGING),
        ("RINGINUSE", D.RINGINUSE),
        ("ONHOLD", D.ONHOLD),
        # the CLI's spellings (core show hints, devstate2str)
        ("Unknown", D.UNKNOWN),
        ("Not in use", D.NOT_INUSE),
        ("In use", D.INUSE),
        ("Busy", D.BUSY),
        ("Invalid", D.INVALID),
        ("Unavailable", D.UNAVAILABLE),
        ("Ringing", D.RINGING),
        ("Ring+Inuse", D.RINGINUSE),
        ("On Hold", D.ONHOLD),
        # case and surrounding white space do not matter
        ("not_inuse", D.NOT_INUSE),
        ("  INUSE\r\n", D.INUSE),
    ],
)
def test_parse_knows_ami_and_cli_spellings(text: str, state: DeviceState) -> None:
    assert DeviceState.parse(text) is state


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "SLEEPING",
        "IN USE NOW",
        "Ring Inuse",
        "inuse;",
        "__class__",
        "_ALIASES",
        "RING+",
    ],
)
def test_parse_turns_anything_else_into_unknown(text: str) -> None:
    assert DeviceState.parse(text) is D.UNKNOWN


@given(st.text(max_size=30))
def test_parse_never_raises_and_always_returns_a_state(text: str) -> None:
    assert isinstance(DeviceState.parse(text), DeviceState)


@given(st.sampled_from(list(DeviceState)))
def test_parse_reads_back_every_state_value(state: DeviceState) -> None:
    assert DeviceState.parse(state.value) is state
    assert DeviceState.parse(state.value.lower()) is state


# --- what each state means -----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reachable", "in_use", "ringing"),
    [
        (D.UNKNOWN, True, False, False),  # we know nothing: still rung
        (D.NOT_INUSE, True, False, False),
        (D.INUSE, True, True, False),
        (D.BUSY, True, True, False),
        (D.INVALID, False, False, False),
        (D.UNAVAILABLE, False, False, False),
        (D.RINGING, True, False, True),
        (D.RINGINUSE, True, True, True),
        (D.ONHOLD, True, True, False),
    ],
)
def test_state_table(state: DeviceState, reachable: bool, in_use: bool, ringing: bool) -> None:
    assert (state.reachable, state.in_use, state.ringing) == (reachable, in_use, ringing)


# --- merge_client ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "merged"),
    [
        ([], C.OFFLINE),
        ([C.OFFLINE], C.OFFLINE),
        ([C.AWAY], C.AWAY),
        ([C.ONLINE, C.AWAY], C.ONLINE),
        ([C.AWAY, C.ONLINE], C.ONLINE),
        ([C.AWAY, C.OFFLINE], C.AWAY),
        ([C.ONLINE, C.DND], C.DND),  # any dnd wins
        ([C.DND, C.ONLINE, C.AWAY, C.OFFLINE], C.DND),
        ([C.OFFLINE, C.OFFLINE], C.OFFLINE),
    ],
)
def test_merge_client_table(statuses: list[ClientStatus], merged: ClientStatus) -> None:
    assert merge_client(statuses) is merged
    assert merge_client(iter(statuses)) is merged  # any iterable, read once


RANK = [C.OFFLINE, C.AWAY, C.ONLINE, C.DND]  # lowest to highest


@given(st.lists(st.sampled_from(list(ClientStatus)), max_size=8), st.randoms())
def test_merge_client_is_the_highest_rank_in_any_order(
    statuses: list[ClientStatus], rnd: random.Random
) -> None:
    expected = max(statuses, key=RANK.index, default=C.OFFLINE)
    assert merge_client(statuses) is expected
    shuffled = list(statuses)
    rnd.shuffle(shuffled)
    assert merge_client(shuffled) is expected
    assert merge_client(reversed(statuses)) is expected


# --- merge_phone -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "phone"),
    [
        ([], PhoneStatus(available=False, on_call=False, ringing=False)),  # no phone at all
        ([D.NOT_INUSE], PhoneStatus(True, False, False)),
        ([D.UNKNOWN], PhoneStatus(True, False, False)),
        ([D.UNAVAILABLE, D.INVALID], PhoneStatus(False, False, False)),
        ([D.UNAVAILABLE, D.NOT_INUSE], PhoneStatus(True, False, False)),  # one is enough
        ([D.INUSE, D.NOT_INUSE], PhoneStatus(True, True, False)),
        ([D.RINGING, D.UNAVAILABLE], PhoneStatus(True, False, True)),
        ([D.INUSE, D.RINGING], PhoneStatus(True, True, True)),
        ([D.RINGINUSE], PhoneStatus(True, True, True)),
        ([D.ONHOLD], PhoneStatus(True, True, False)),
    ],
)
def test_merge_phone_table(states: list[DeviceState], phone: PhoneStatus) -> None:
    assert merge_phone(states) == phone
    assert merge_phone(iter(states)) == phone


@given(st.lists(st.sampled_from(list(DeviceState)), max_size=6))
def test_merge_phone_is_any_of_each_flag(states: list[DeviceState]) -> None:
    merged = merge_phone(states)
    assert merged.available == any(s.reachable for s in states)
    assert merged.on_call == any(s.in_use for s in states)
    assert merged.ringing == any(s.ringing for s in states)
    assert merge_phone(reversed(states)) == merged


# --- UserPresence: what BLF keys and presence hints show -----------------------------


@pytest.mark.parametrize(
    ("phone", "client", "device_state"),
    [
        (PhoneStatus(True, True, False), C.ONLINE, D.INUSE),  # on a call
        (PhoneStatus(True, False, True), C.ONLINE, D.RINGING),
        (PhoneStatus(True, True, True), C.ONLINE, D.RINGINUSE),
        (PhoneStatus(True, True, False), C.DND, D.INUSE),  # a call shows through dnd
        (PhoneStatus(True, True, True), C.DND, D.RINGINUSE),
        (PhoneStatus(True, False, True), C.DND, D.RINGING),
        (PhoneStatus(True, False, False), C.DND, D.BUSY),  # dnd, not on a call: busy
        (PhoneStatus(False, False, False), C.DND, D.BUSY),
        (PhoneStatus(False, False, False), C.ONLINE, D.UNAVAILABLE),  # no phone reachable
        (PhoneStatus(False, False, False), C.OFFLINE, D.UNAVAILABLE),
        (PhoneStatus(True, False, False), C.ONLINE, D.NOT_INUSE),
        (PhoneStatus(True, False, False), C.AWAY, D.NOT_INUSE),
        (PhoneStatus(True, False, False), C.OFFLINE, D.NOT_INUSE),
    ],
)
def test_device_state_table(
    phone: PhoneStatus, client: ClientStatus, device_state: DeviceState
) -> None:
    assert UserPresence("201", phone, client).device_state is device_state


@pytest.mark.parametrize(
    ("client", "presence_state"),
    [
        (C.ONLINE, "available"),
        (C.AWAY, "away"),
        (C.DND, "dnd"),
        (C.OFFLINE, "unavailable"),
    ],
)
def test_presence_state_table(client: ClientStatus, presence_state: str) -> None:
    assert UserPresence("201", PhoneStatus(True), client).presence_state == presence_state


def test_a_user_with_nothing_known_is_offline_and_unavailable() -> None:
    presence = UserPresence("201")
    assert presence.client is C.OFFLINE
    assert presence.device_state is D.UNAVAILABLE
    assert presence.presence_state == "unavailable"


def test_to_json() -> None:
    presence = UserPresence("201", PhoneStatus(True, True, False), C.AWAY)
    assert presence.to_json() == {
        "extension": "201",
        "phone": {"available": True, "on_call": True, "ringing": False},
        "client": "away",
        "device_state": "INUSE",
    }
