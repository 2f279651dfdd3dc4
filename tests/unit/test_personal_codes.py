"""The personal feature codes (*7 forwarding, *5 switches): the parser as a table,
and the handler on a real directory database with a scripted AGI session."""

from __future__ import annotations

import asyncio

import pytest

from callrouter.directory.revisions import read_revisions
from callrouter.directory.snapshot import load_personal
from callrouter.personal.feature_codes import (
    ForwardCode,
    PersonalCodes,
    SwitchCode,
    parse_personal_code,
)
from callrouter.personal.service import PersonalService
from tests.unit.conftest import Live
from tests.unit.test_feature_codes import ScriptedSession
from tests.unit.test_personal import make_rules

ANNA = "PJSIP/anna-desk-0000002c"  # Anna's own phone
OFFICE = "PJSIP/office1-desk-0000002b"  # office-1's phone: Anna is logged in there
HOTDESK = "PJSIP/hotdesk1-desk-0000002a"  # hotdesk-1's phone: nobody there
STRANGER = "PJSIP/somebody-0000002d"  # no phone of the directory


@pytest.mark.parametrize(
    ("dialed", "expected"),
    [
        ("*71202", ForwardCode("always", "202")),
        ("*72202", ForwardCode("busy", "202")),
        ("*73202", ForwardCode("no_answer", "202")),
        ("*74202", ForwardCode("unreachable", "202")),
        ("*75202", ForwardCode("dnd", "202")),
        ("*7300491701234", ForwardCode("no_answer", "+491701234")),
        ("*72", ForwardCode("busy", None)),
        ("*70", ForwardCode(None, None)),
        ("*51", SwitchCode(1, None)),
        ("*520", SwitchCode(2, False)),
        ("*591", SwitchCode(9, True)),
        ("*7", None),
        ("*76202", None),  # no kind 6
        ("*7012", None),  # clear all takes nothing after it
        ("*72#202", None),
        ("*72" + "1" * 23, None),  # longer than any extension or number
        ("*7" + "1" * 100, None),
        ("*5", None),
        ("*50", None),  # switches count from 1
        ("*512", None),
        ("*5111", None),
        ("*44201", None),
        ("", None),
        ("*72\u0662\u0660\u0662", None),  # Arabic-Indic digits are no digits here
    ],
)
def test_parse(dialed: str, expected: ForwardCode | SwitchCode | None) -> None:
    assert parse_personal_code(dialed, "*7", "*5") == expected


@pytest.fixture
def codes(live: Live) -> PersonalCodes:
    rules = make_rules()
    service = PersonalService(
        live.engine, lambda: live.snapshot, lambda: rules, on_change=live.refresh
    )
    return PersonalCodes(service)


async def run(codes: PersonalCodes, channel: str, dialed: str) -> ScriptedSession:
    session = ScriptedSession(channel, dialed)
    await codes.handle(session)  # type: ignore[arg-type]
    assert session.hangups == 1 or session.hung_up
    return session


async def test_forward_from_the_users_own_phone(codes: PersonalCodes, live: Live) -> None:
    session = await run(codes, ANNA, "*72202")
    assert session.played == ["activated", "goodbye"]
    assert live.snapshot.forwards == {"201": {"busy": "202"}}
    outcome = codes.outcomes[-1]
    assert (outcome.extension, outcome.action, outcome.detail, outcome.ok) == (
        "201",
        "forward",
        "busy -> 202",
        True,
    )
    session = await run(codes, ANNA, "*72")
    assert session.played == ["de-activated", "goodbye"]
    assert live.snapshot.forwards == {}


async def test_a_workplace_phone_acts_for_who_sits_there(codes: PersonalCodes, live: Live) -> None:
    await run(codes, OFFICE, "*520")  # Anna's 2nd switch: mobile
    assert live.snapshot.switched_off == {"201": frozenset({"mobile"})}
    assert codes.outcomes[-1].extension == "201"
    await run(codes, OFFICE, "*52")  # toggled back on
    assert live.snapshot.switched_off == {}


@pytest.mark.parametrize(
    ("channel", "dialed", "refusal", "prompts"),
    [
        (HOTDESK, "*72202", "nobody's phone", ["feature-not-avail-line", "goodbye"]),
        (STRANGER, "*510", "nobody's phone", ["feature-not-avail-line", "goodbye"]),
        ("garbage", "*510", "nobody's phone", ["feature-not-avail-line", "goodbye"]),
        (ANNA, "*72201", "to_self", ["privacy-incorrect", "goodbye"]),
        (ANNA, "*72299", "unknown_target", ["privacy-incorrect", "goodbye"]),
        (ANNA, "*720049301234", "not_allowed", ["im-sorry", "feature-not-avail-line", "goodbye"]),
        (ANNA, "*530", "unknown_switch", ["privacy-incorrect", "goodbye"]),
        (ANNA, "*7" + "2" * 5000, "bad_input", ["privacy-incorrect", "goodbye"]),
        (ANNA, "*72\n202", "bad_input", ["privacy-incorrect", "goodbye"]),
    ],
)
async def test_refused_codes_say_so_and_write_nothing(
    codes: PersonalCodes, live: Live, channel: str, dialed: str, refusal: str, prompts: list[str]
) -> None:
    revisions = await read_revisions(live.engine)
    session = await run(codes, channel, dialed)
    assert session.played == prompts
    assert (codes.outcomes[-1].ok, codes.outcomes[-1].refusal) == (False, refusal)
    assert await read_revisions(live.engine) == revisions


async def test_an_unverified_channel_is_refused(codes: PersonalCodes, live: Live) -> None:
    revisions = await read_revisions(live.engine)
    session = ScriptedSession(ANNA, "*72202", verified=False)
    await codes.handle(session)  # type: ignore[arg-type]
    assert session.played == ["feature-not-avail-line", "goodbye"]
    assert await read_revisions(live.engine) == revisions


async def test_concurrent_codes_from_one_user(codes: PersonalCodes, live: Live) -> None:
    """Ten toggles at once end where they began; each one is counted and audited."""
    before, _ = await read_revisions(live.engine)
    sessions = await asyncio.gather(*(run(codes, ANNA, "*52") for _ in range(10)))
    assert all(
        s.played in (["activated", "goodbye"], ["de-activated", "goodbye"]) for s in sessions
    )
    assert (await load_personal(live.engine)).switched_off == {}
    after, _ = await read_revisions(live.engine)
    assert after - before == 10
