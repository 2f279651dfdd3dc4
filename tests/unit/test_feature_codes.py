"""The feature-code handler with a scripted AGI session, and behind the real FastAGI
server with a channel check (the real Asterisk: tests/e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.agi import AgiCommandFailed, AgiHangup, AgiRequest, AgiServer, parse_reply
from callrouter.ari.client import AriClient
from callrouter.ari.errors import AriConnectionError, AriHttpError
from callrouter.directory.importer import import_document
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins.build import ari_channel_check
from callrouter.logins.feature_codes import ALL_PROMPTS, FeatureCodes
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginService
from tests.fakes import FakeAri, make_channel
from tests.unit.conftest import Live
from tests.unit.test_agi_server import FakeAsterisk
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
        verified: bool = True,
    ) -> None:
        self.request = AgiRequest(script="workplace-login", args=(dialed,), channel=channel)
        self.channel_verified = verified  # as the server's channel check left it
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


# -- only real calls: the channel check ----------------------------------------------------


async def test_a_session_the_server_did_not_verify_changes_nothing(
    features: FeatureCodes, caplog: pytest.LogCaptureFixture
) -> None:
    await run(features, ScriptedSession(DESK, "*44201#4711"))
    outcomes = len(features.outcomes)
    revision = await read_revision(features.service.engine)
    for dialed in ("*44", "*44202#0815"):
        session = ScriptedSession(DESK, dialed, verified=False)
        await run(features, session)
        assert session.played == ["feature-not-avail-line", "goodbye"]
    assert features.service.snapshot.logins == {"201": "hotdesk-1"}
    assert await read_revision(features.service.engine) == revision
    assert len(features.outcomes) == outcomes
    assert "channel not verified" in caplog.text


class LiveChannels:
    """The channel check as ARI answers it: live channels by uniqueid, or ARI down."""

    def __init__(self) -> None:
        self.by_uniqueid: dict[str, str] = {}
        self.down = False

    async def __call__(self, channel: str, uniqueid: str) -> bool:
        if self.down:
            raise AriConnectionError("GET", f"/channels/{uniqueid}", "connection refused")
        return self.by_uniqueid.get(uniqueid) == channel


@pytest.fixture
async def served(
    features: FeatureCodes,
) -> AsyncIterator[tuple[FeatureCodes, AgiServer, LiveChannels]]:
    """The feature codes behind the real FastAGI server, with a channel check."""
    channels = LiveChannels()
    server = AgiServer(
        features.handlers,
        port=0,
        channel_check=channels,
        on_refused=features.refuse_unverified,
        read_timeout=5,
    )
    await server.start()
    yield features, server, channels
    await server.close(grace=0)


async def dial(server: AgiServer, channel: str, uniqueid: str, dialed: str) -> list[str]:
    """One FastAGI session as Asterisk (or someone posing as it) makes it: the
    environment, then "200 result=0" to every command; the commands it got."""
    fake = await FakeAsterisk.connect(server)
    try:
        await fake.send_env("workplace-login", dialed, agi_channel=channel, agi_uniqueid=uniqueid)
        commands = []
        async with asyncio.timeout(5):
            while line := await fake.reader.readline():
                commands.append(line.decode().strip())
                await fake.send("200 result=0 endpos=0")
        return commands
    finally:
        await fake.close()


REFUSED = ["ANSWER", 'STREAM FILE feature-not-avail-line ""', 'STREAM FILE goodbye ""', "HANGUP"]


async def test_a_forged_channel_logs_nobody_out_or_in_and_a_real_one_still_does(
    served: tuple[FeatureCodes, AgiServer, LiveChannels],
) -> None:
    features, server, channels = served
    channels.by_uniqueid["1732800000.1"] = DESK  # the desk phone, calling *44 for real
    assert await dial(server, DESK, "1732800000.1", "*44201#4711") == [
        "ANSWER",
        'STREAM FILE agent-loginok ""',
        'STREAM FILE goodbye ""',
        "HANGUP",
    ]
    assert features.service.snapshot.logins == {"201": "hotdesk-1"}
    revision = await read_revision(features.service.engine)
    outcomes = len(features.outcomes)

    # Someone else on the host, naming the desk phone's channel: a made-up uniqueid,
    # then the real one under another channel name.  Neither logs anyone out or in.
    assert await dial(server, DESK, "1732800000.999", "*44") == REFUSED
    assert await dial(server, OFFICE, "1732800000.1", "*44") == REFUSED
    assert await dial(server, DESK, "1732800000.998", "*44202#0815") == REFUSED
    assert features.service.snapshot.logins == {"201": "hotdesk-1"}
    assert await read_revision(features.service.engine) == revision
    assert len(features.outcomes) == outcomes
    assert server.stats["refused"] == 3

    # The real phone still logs out.
    channels.by_uniqueid["1732800000.2"] = DESK
    assert (await dial(server, DESK, "1732800000.2", "*44"))[1] == 'STREAM FILE agent-loggedoff ""'
    assert features.service.snapshot.logins == {}


async def test_while_ari_is_down_a_feature_code_is_refused_and_the_log_says_why(
    served: tuple[FeatureCodes, AgiServer, LiveChannels], caplog: pytest.LogCaptureFixture
) -> None:
    features, server, channels = served
    channels.by_uniqueid["1732800000.1"] = DESK
    await dial(server, DESK, "1732800000.1", "*44201#4711")
    channels.down = True
    assert await dial(server, DESK, "1732800000.1", "*44") == REFUSED
    assert features.service.snapshot.logins == {"201": "hotdesk-1"}
    assert server.stats["unverifiable"] == 1
    assert (
        "refused PJSIP/hotdesk1-desk-0000002a: cannot check the channel (AriConnectionError: "
        "GET /channels/1732800000.1: connection refused)" in caplog.text
    )


# -- the check, through ARI ---------------------------------------------------------------


@pytest.fixture
async def ari() -> AsyncIterator[tuple[FakeAri, AriClient]]:
    async with FakeAri() as fake:
        client = AriClient(fake.base_url, fake.user, fake.password, fake.app)
        yield fake, client
        await client.close()


def channel(uniqueid: str, name: str, app: str) -> dict[str, Any]:
    data = make_channel(uniqueid, name=name, state="Up")
    data["dialplan"].update(app_name=app, app_data="agi://127.0.0.1:4573/workplace-login,*44")
    return data


async def test_the_ari_check_wants_the_uniqueid_the_exact_name_and_agi_running(
    ari: tuple[FakeAri, AriClient],
) -> None:
    fake, client = ari
    fake.model.channels["1732800000.1"] = channel("1732800000.1", DESK, "AGI")
    fake.model.channels["1732800000.2"] = channel("1732800000.2", OFFICE, "Stasis")
    check = ari_channel_check(client)
    assert await check(DESK, "1732800000.1")
    assert not await check(DESK + "x", "1732800000.1")  # names compare exactly
    assert not await check(DESK.upper(), "1732800000.1")
    assert not await check(OFFICE, "1732800000.2")  # a live call, but not in the AGI
    assert not await check(DESK, "1732800000.404")  # ARI: 404
    assert [r.path for r in fake.requests] == [
        "/channels/1732800000.1",
        "/channels/1732800000.1",
        "/channels/1732800000.1",
        "/channels/1732800000.2",
        "/channels/1732800000.404",
    ]


async def test_the_ari_check_raises_when_ari_cannot_tell(ari: tuple[FakeAri, AriClient]) -> None:
    fake, client = ari
    check = ari_channel_check(client)
    fake.set_response("GET", "/channels/{id}", 500, {"message": "Internal error"})
    with pytest.raises(AriHttpError):
        await check(DESK, "1732800000.1")
    await fake.close()
    with pytest.raises(AriConnectionError):
        await check(DESK, "1732800000.1")
