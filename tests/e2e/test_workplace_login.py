"""Workplace login on the real Asterisk: feature codes by phone (DTMF into the call),
the shipped dialplan, FastAGI, and the next call ringing where the user sits."""

from __future__ import annotations

import asyncio
import time

import pytest

from callrouter.ami import AmiClient
from callrouter.ami.protocol import AmiMessage
from callrouter.ari.events import Channel
from callrouter.directory.database import create_engine
from callrouter.directory.revisions import read_revision
from callrouter.logins.feature_codes import FeatureCodes, FeatureOutcome
from callrouter.logins.policy import Refusal
from callrouter.logins.store import set_login
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import SimulatedPhone
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones, until
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    StartRouter,
    _quiet_logs,
    _sip_port,
    start_router,
)

DIRECTORY = """
roles:
  - {name: staff}
  - {name: intern, workplaces: [desk-b]}
users:
  - {extension: "401", name: Dora, role: staff, pin: "4711", phones: [PJSIP/rt-dora-own]}
  - {extension: "402", name: Emil, role: intern, pin: "0815"}
  - {extension: "499", name: Caller, phones: [PJSIP/rt-wl-caller]}
workplaces:
  - {id: desk-a, name: Desk A, code: "841", phones: [PJSIP/rt-desk-a]}
  - {id: desk-b, name: Desk B, code: "842", phones: [PJSIP/rt-desk-b]}
"""
RULES = "defaults: {timeout: 20}\n"
TONE_MS = 100


async def dial_code(
    asterisk: AsteriskSandbox,
    router: RunningRouter,
    phone: SimulatedPhone,
    dialed: str,
    pin: str | None = None,
) -> FeatureOutcome:
    """Dial a feature code from ``phone``; type ``pin`` at the prompt; wait for the end."""
    features: FeatureCodes = router.router.feature_codes
    before = len(features.outcomes)
    # Digits pressed before Asterisk runs GET DATA are dropped (as for a person who
    # types before the prompt): wait for Asterisk to say it started the command.
    # Then one key press at a time, as a person types: a 100 ms tone, Asterisk takes
    # it, a pause.  (The simulated phone sends no audio; without audio frames,
    # Asterisk never releases a digit that arrives while it still times the one
    # before, so the pause between presses matters here.)
    prompting = asyncio.Event()
    digits_taken = asyncio.Queue[str]()

    def on_event(event: AmiMessage) -> None:
        if (event.get("Command") or "").upper().startswith("GET DATA"):
            prompting.set()
        if (
            event.get("Event") == "DTMFEnd"
            and (event.get("Channel") or "").startswith(f"PJSIP/{phone.name}-")
            and event.get("Direction") == "Received"
        ):
            digits_taken.put_nowait(event.get("Digit") or "")

    ami = AmiClient(
        asterisk.ami_host,
        asterisk.ami_port,
        asterisk.ami_user,
        asterisk.ami_secret,
        events={"AGIExecStart", "DTMFEnd"},
        server_filter=False,
    )
    ami.subscribe(on_event)
    await ami.start()
    try:
        call = await phone.call(dialed, asterisk.sip_port)
        await call.wait_answered(timeout=10)
        if pin is not None:
            await asyncio.wait_for(prompting.wait(), 10)
            for digit in pin + "#":
                await call.send_dtmf(digit, duration_ms=TONE_MS)
                assert await asyncio.wait_for(digits_taken.get(), 5) == digit
                await asyncio.sleep(TONE_MS / 1000 + 0.05)  # the pause between presses
    finally:
        await ami.close()
    await call.wait_ended(timeout=30)  # the router hangs up after speaking the outcome
    await until(lambda: len(features.outcomes) > before, "the outcome")
    outcome = features.outcomes[-1]
    assert outcome.failed_prompts == (), f"Asterisk could not play {outcome.failed_prompts}"
    return outcome


async def forged_session(port: int, channel: str, uniqueid: str, dialed: str) -> list[str]:
    """A local process posing as Asterisk on the router's FastAGI port: the
    environment of ``channel``, then "200" to every command; the commands it got."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = {
        "agi_network": "yes",
        "agi_network_script": "workplace-login",
        "agi_request": f"agi://127.0.0.1:{port}/workplace-login",
        "agi_channel": channel,
        "agi_uniqueid": uniqueid,
        "agi_callerid": "841",
        "agi_context": "phones",
        "agi_extension": "s",
        "agi_priority": "5",
        "agi_arg_1": dialed,
    }
    writer.write("".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n")
    commands: list[str] = []
    try:
        async with asyncio.timeout(10):
            while line := await reader.readline():
                commands.append(line.decode().strip())
                writer.write(b"200 result=0 endpos=0\n")
                await writer.drain()
    finally:
        writer.close()
    return commands


async def rung(
    caller: SimulatedPhone,
    asterisk: AsteriskSandbox,
    extension: str,
    expected: list[SimulatedPhone],
    not_expected: list[SimulatedPhone],
) -> None:
    """Call ``extension``: the ``expected`` phones ring, the others do not."""
    marks = {p.name: len(p.matching("INVITE")) for p in expected + not_expected}
    call = await caller.call(extension, asterisk.sip_port)
    for phone in expected:
        await phone.wait_for("INVITE", timeout=5, n=marks[phone.name] + 1)
    await call.hangup()
    for phone in expected:
        await until(
            lambda p=phone: len(p.matching("CANCEL")) >= marks[p.name] + 1,
            f"CANCEL at {phone.name}",
            timeout=5,
        )
    # Every leg starts at 0 s here: had they been rung, they would have been by now.
    for phone in not_expected:
        assert len(phone.matching("INVITE")) == marks[phone.name], f"{phone.name} rang"


@pytest.fixture
async def setup(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
) -> tuple[RunningRouter, dict[str, SimulatedPhone]]:
    phones = await make_phones("rt-dora-own", "rt-wl-caller", "rt-desk-a", "rt-desk-b")
    for phone in phones:
        phone.ring()
    running = await start_router(DIRECTORY, RULES)
    return running, {p.name: p for p in phones}


async def test_login_by_feature_code_then_calls_ring_the_workplace_then_logout(
    asterisk: AsteriskSandbox, setup: tuple[RunningRouter, dict[str, SimulatedPhone]]
) -> None:
    running, phones = setup
    own, desk_a, caller = phones["rt-dora-own"], phones["rt-desk-a"], phones["rt-wl-caller"]
    await rung(caller, asterisk, "401", [own], [desk_a])  # not logged in yet

    outcome = await dial_code(asterisk, running, desk_a, "*44401", pin="4711")
    assert (outcome.ok, outcome.action, outcome.workplace) == (True, "login", "desk-a")
    assert outcome.prompts == ("agent-pass", "agent-loginok", "goodbye")
    assert running.router.live.snapshot.logins == {"401": "desk-a"}
    # Mixed operation: her own phone by FollowMe and the workplace's phone.
    await rung(caller, asterisk, "401", [own, desk_a], [])
    # The AstDB fallback (for when the router is down) knows the workplace too.
    await until(
        lambda: "PJSIP/rt-desk-a" in (asterisk.db_get("callrouter", "401") or ""),
        "the AstDB fallback",
    )

    outcome = await dial_code(asterisk, running, desk_a, "*44")
    assert (outcome.ok, outcome.action, outcome.extension) == (True, "logout", "401")
    assert outcome.prompts == ("agent-loggedoff", "goodbye")
    await rung(caller, asterisk, "401", [own], [desk_a])
    await until(
        lambda: asterisk.db_get("callrouter", "401") == "PJSIP/rt-dora-own",
        "the AstDB fallback without the workplace",
    )


async def test_wrong_pin_is_refused_and_nothing_changes(
    asterisk: AsteriskSandbox, setup: tuple[RunningRouter, dict[str, SimulatedPhone]]
) -> None:
    running, phones = setup
    engine = running.router.live.engine
    revision = await read_revision(engine)
    outcome = await dial_code(asterisk, running, phones["rt-desk-a"], "*44401", pin="1234")
    assert outcome.refusal is Refusal.BAD_CREDENTIALS and not outcome.ok
    assert outcome.prompts == ("agent-pass", "vm-incorrect", "goodbye")
    assert await read_revision(engine) == revision
    await rung(
        phones["rt-wl-caller"], asterisk, "401", [phones["rt-dora-own"]], [phones["rt-desk-a"]]
    )


async def test_role_decides_where_with_the_pin_in_the_dialled_code(
    asterisk: AsteriskSandbox, setup: tuple[RunningRouter, dict[str, SimulatedPhone]]
) -> None:
    running, phones = setup
    revision = await read_revision(running.router.live.engine)
    # "#" travels in the SIP URI as %23; Asterisk decodes it into the extension.
    refused = await dial_code(asterisk, running, phones["rt-desk-a"], "*44402%230815")
    assert refused.refusal is Refusal.NOT_ALLOWED
    assert refused.prompts == ("im-sorry", "feature-not-avail-line", "goodbye")
    assert await read_revision(running.router.live.engine) == revision

    allowed = await dial_code(asterisk, running, phones["rt-desk-b"], "*44402%230815")
    assert allowed.ok and allowed.workplace == "desk-b"
    await rung(
        phones["rt-wl-caller"], asterisk, "402", [phones["rt-desk-b"]], [phones["rt-desk-a"]]
    )


async def test_garbage_after_the_code_is_refused_cleanly(
    asterisk: AsteriskSandbox, setup: tuple[RunningRouter, dict[str, SimulatedPhone]]
) -> None:
    running, phones = setup
    revision = await read_revision(running.router.live.engine)
    outcome = await dial_code(asterisk, running, phones["rt-desk-a"], "*44401x9")
    assert outcome.refusal is Refusal.BAD_INPUT
    assert outcome.prompts == ("privacy-incorrect", "goodbye")
    # From a phone that is nobody's workplace: refused, too.
    outcome = await dial_code(asterisk, running, phones["rt-dora-own"], "*44401%234711")
    assert outcome.refusal is Refusal.NOT_A_WORKPLACE_PHONE
    assert await read_revision(running.router.live.engine) == revision


async def test_a_login_made_elsewhere_reaches_the_router_through_the_database(
    asterisk: AsteriskSandbox, setup: tuple[RunningRouter, dict[str, SimulatedPhone]]
) -> None:
    running, phones = setup
    live = running.router.live
    # Another router, or the admin's CLI: a separate connection to the same directory.
    other = create_engine(running.router.settings.db)
    try:
        await set_login(other, "401", "desk-b", actor="admin", source="test")
    finally:
        await other.dispose()
    await until(lambda: live.snapshot.logins.get("401") == "desk-b", "the directory poll")
    await rung(
        phones["rt-wl-caller"],
        asterisk,
        "401",
        [phones["rt-dora-own"], phones["rt-desk-b"]],
        [phones["rt-desk-a"]],
    )


async def test_a_forged_fastagi_session_cannot_log_the_occupant_out(
    asterisk: AsteriskSandbox, setup: tuple[RunningRouter, dict[str, SimulatedPhone]]
) -> None:
    """Any local process can reach the FastAGI port and name a workplace phone's
    channel; the router asks ARI first, and the occupant stays."""
    running, phones = setup
    router = running.router
    assert router.agi_server is not None
    desk_a = phones["rt-desk-a"]
    outcome = await dial_code(asterisk, running, desk_a, "*44401", pin="4711")
    assert outcome.ok and router.live.snapshot.logins == {"401": "desk-a"}
    assert router.agi_server.stats["verified"] == 1  # the real call passed the ARI check
    revision = await read_revision(router.live.engine)
    outcomes = len(router.feature_codes.outcomes)

    # A live channel of the workplace's phone: desk A calls 499.
    call = await desk_a.call("499", asterisk.sip_port)
    live: list[Channel] = []
    deadline = time.monotonic() + 10
    while not live and time.monotonic() < deadline:
        live = [
            c for c in await router.ari.list_channels() if c.name.startswith("PJSIP/rt-desk-a-")
        ]
        await asyncio.sleep(0.05)
    assert live, "no channel of rt-desk-a"
    real = live[0]
    try:
        # Its real name with a made-up uniqueid: ARI knows no such channel (404).
        made_up = await forged_session(router.agi_server.port, real.name, "1700000000.4242", "*44")
        # Its real name and its real uniqueid (a process could learn both): the channel
        # lives, but it is ringing 499, not running the feature code's AGI.
        borrowed = await forged_session(router.agi_server.port, real.name, real.id, "*44")
    finally:
        await call.hangup()
    for commands in (made_up, borrowed):
        assert commands == [
            "ANSWER",
            'STREAM FILE feature-not-avail-line ""',
            'STREAM FILE goodbye ""',
            "HANGUP",
        ]
    assert router.agi_server.stats["refused"] == 2
    assert router.live.snapshot.logins == {"401": "desk-a"}
    assert await read_revision(router.live.engine) == revision
    assert len(router.feature_codes.outcomes) == outcomes  # forged sessions leave no trace
    await rung(phones["rt-wl-caller"], asterisk, "401", [phones["rt-dora-own"], desk_a], [])
