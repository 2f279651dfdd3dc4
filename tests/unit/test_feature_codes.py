"""The feature-code handler with a scripted AGI session (the real one: tests/e2e)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.agi import AgiCommandFailed, AgiHangup, AgiRequest, parse_reply
from callrouter.directory.importer import import_document
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins.feature_codes import ALL_PROMPTS, FeatureCodes
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginService
from tests.unit.conftest import Live
from tests.unit.test_directory_store import document

DESK = "PJSIP/hotdesk1-desk-0000002a"  # a phone of workplace hotdesk-1
OFFICE = "PJSIP/office1-desk-0000002b"
ANNA = "PJSIP/anna-desk-0000002c"  # Anna's own phone: not a workplace's


class ScriptedSession:
    """Stands in for AgiSession: records commands, answers GET DATA from a script."""

    def __init__(
        self,
        channel: str,
        dialed: str,
        digits: Sequence[str] = (),
        hang_up_on: str | None = None,
        missing: Sequence[str] = (),
    ) -> None:
        self.request = AgiRequest(script="workplace-login", args=(dialed,), channel=channel)
        self.hung_up = False
        self.played: list[str] = []
        self.digits = list(digits)
        self.hang_up_on = hang_up_on
        self.missing = set(missing)
        self.answered = False
        self.hangups = 0

    async def answer(self) -> None:
        self.answered = True

    async def stream_file(self, name: str, escape_digits: str = "") -> None:
        if name == self.hang_up_on:
            self.hung_up = True
            raise AgiHangup("hung up")
        if name in self.missing:
            raise AgiCommandFailed(
                "no such file", command="STREAM FILE", reply=parse_reply("200 result=-1 endpos=0")
            )
        self.played.append(name)

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        self.played.append(prompt)
        if prompt == self.hang_up_on:
            self.hung_up = True
            raise AgiHangup("hung up")
        return (self.digits.pop(0), False) if self.digits else ("", True)

    async def hangup(self) -> None:
        self.hangups += 1
        self.hung_up = True


@pytest.fixture
async def features(engine: AsyncEngine) -> FeatureCodes:
    await import_document(engine, document(logins={}), prune=False, actor="test")
    live = Live(engine)
    live.snapshot = await load_snapshot(engine)
    return FeatureCodes(LoginService(engine, lambda: live.snapshot, on_change=live.refresh))


async def run(features: FeatureCodes, session: ScriptedSession) -> None:
    await features.handle(session)  # type: ignore[arg-type]
    assert session.hangups == 1 or session.hung_up


async def test_login_with_the_pin_in_the_dialled_code(features: FeatureCodes) -> None:
    session = ScriptedSession(DESK, "*44201#4711")
    await run(features, session)
    assert session.answered and session.played == ["agent-loginok", "goodbye"]
    assert features.service.snapshot.logins == {"201": "hotdesk-1"}
    outcome = features.outcomes[-1]
    assert (outcome.action, outcome.extension, outcome.workplace, outcome.ok) == (
        "login",
        "201",
        "hotdesk-1",
        True,
    )


async def test_login_asks_for_the_pin(features: FeatureCodes) -> None:
    session = ScriptedSession(DESK, "*44202", digits=["0815"])
    await run(features, session)
    assert session.played == ["agent-pass", "agent-loginok", "goodbye"]
    assert features.service.snapshot.logins == {"202": "hotdesk-1"}


@pytest.mark.parametrize(
    ("channel", "dialed", "digits", "refusal", "prompts"),
    [
        (DESK, "*44201#1234", (), Refusal.BAD_CREDENTIALS, ["vm-incorrect", "goodbye"]),
        (DESK, "*44999#1234", (), Refusal.BAD_CREDENTIALS, ["vm-incorrect", "goodbye"]),
        (
            DESK,
            "*44201",
            (),
            Refusal.BAD_CREDENTIALS,  # no PIN typed before the time-out
            ["agent-pass", "vm-incorrect", "goodbye"],
        ),
        (
            OFFICE,
            "*44202#0815",
            (),
            Refusal.NOT_ALLOWED,  # interns: hotdesk-1 only
            ["im-sorry", "feature-not-avail-line", "goodbye"],
        ),
        (
            ANNA,
            "*44201#4711",
            (),
            Refusal.NOT_A_WORKPLACE_PHONE,
            ["feature-not-avail-line", "goodbye"],
        ),
        (
            "Local/x@y-00000001;2",
            "*44201#4711",
            (),
            Refusal.NOT_A_WORKPLACE_PHONE,
            ["feature-not-avail-line", "goodbye"],
        ),
        (DESK, "*44abc", (), Refusal.BAD_INPUT, ["privacy-incorrect", "goodbye"]),
        (DESK, "*44" + "1" * 200, (), Refusal.BAD_INPUT, ["privacy-incorrect", "goodbye"]),
        (DESK, "*44201#47\x001", (), Refusal.BAD_INPUT, ["privacy-incorrect", "goodbye"]),
    ],
)
async def test_refusals_are_spoken_and_change_nothing(
    features: FeatureCodes,
    channel: str,
    dialed: str,
    digits: Sequence[str],
    refusal: Refusal,
    prompts: list[str],
) -> None:
    revision = await read_revision(features.service.engine)
    session = ScriptedSession(channel, dialed, digits)
    await run(features, session)
    assert session.played == prompts
    assert features.outcomes[-1].refusal is refusal and not features.outcomes[-1].ok
    assert await read_revision(features.service.engine) == revision
    assert set(prompts) <= ALL_PROMPTS


async def test_logout_by_the_code_alone(features: FeatureCodes) -> None:
    await run(features, ScriptedSession(DESK, "*44201#4711"))
    session = ScriptedSession(DESK, "*44")
    await run(features, session)
    assert session.played == ["agent-loggedoff", "goodbye"]
    assert features.service.snapshot.logins == {}
    assert features.outcomes[-1].extension == "201"


async def test_lockout_from_one_desk_phone(features: FeatureCodes) -> None:
    for _ in range(5):
        await run(features, ScriptedSession(DESK, "*44201#0000"))
    session = ScriptedSession(DESK, "*44201#4711")
    await run(features, session)
    assert features.outcomes[-1].refusal is Refusal.LOCKED
    assert session.played == ["vm-incorrect", "please-try-call-later", "goodbye"]
    assert features.service.snapshot.logins == {}


async def test_caller_hanging_up_at_the_pin_prompt(features: FeatureCodes) -> None:
    session = ScriptedSession(DESK, "*44201", hang_up_on="agent-pass")
    await run(features, session)
    assert session.hangups == 0  # nothing to hang up any more
    assert features.service.snapshot.logins == {}


async def test_a_missing_sound_does_not_stop_the_call(features: FeatureCodes) -> None:
    session = ScriptedSession(DESK, "*44201#4711", missing=["agent-loginok"])
    await run(features, session)
    assert session.played == ["goodbye"] and session.hangups == 1
    assert features.outcomes[-1].failed_prompts == ("agent-loginok",)
    assert features.service.snapshot.logins == {"201": "hotdesk-1"}


async def test_a_pin_in_a_bad_code_never_reaches_the_log(
    features: FeatureCodes, caplog: pytest.LogCaptureFixture
) -> None:
    await run(features, ScriptedSession(DESK, "*44201#4711x"))
    assert features.outcomes[-1].refusal is Refusal.BAD_INPUT
    assert "4711" not in caplog.text
    assert "*44201#***" in caplog.text
