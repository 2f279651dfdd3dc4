"""Confirmed legs (``confirm: true``) on the real Asterisk: whoever answers hears the
prompt (Asterisk's core sound followme/options, played by ARI) and takes the call only
by pressing 1 (SIP INFO, the sandbox endpoints' dtmf_mode); the caller hears ringing
until then, and the other phones ring on."""

from __future__ import annotations

import asyncio
import contextlib

from callrouter.ari.errors import AriHttpError
from callrouter.calls.driver import CallDriver
from sandbox.asterisk import AsteriskSandbox
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones, until
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    StartRouter,
    _sip_port,
    directory,
    start_router,
)

CONFIRM_TIME = 2  # seconds: short, so the tests are; the default is 10


def rules(desk: str, mobile: str, confirm_time: float = CONFIRM_TIME) -> str:
    return f"""
        defaults: {{timeout: 20, confirm_timeout: {confirm_time}}}
        users:
          "861":
            followme:
              - {{ring: [PJSIP/{desk}]}}
              - {{ring: [PJSIP/{mobile}], confirm: true}}
    """


def the_call(running: RunningRouter) -> CallDriver:
    (driver,) = running.router.intake.calls.values()
    return driver


async def bridge_peer(running: RunningRouter, caller_id: str) -> str:
    """Asterisk's own BRIDGEPEER of the caller: set once both are in one bridge."""
    for _ in range(50):
        with contextlib.suppress(AriHttpError):
            if peer := await running.router.ari.channel_var(caller_id, "BRIDGEPEER"):
                return peer
        await asyncio.sleep(0.1)
    return ""


async def playing_prompt(running: RunningRouter, driver: CallDriver) -> dict[str, object]:
    """The confirm prompt's playback, as Asterisk reports it while it plays."""
    await until(lambda: driver._prompts, "the confirm prompt to be asked for")
    (playback_id,) = driver._prompts.values()
    playback: dict[str, object] = {}
    for _ in range(50):
        playback = await running.router.ari.request("GET", f"/playbacks/{playback_id}")
        if playback["state"] == "playing":
            break
        await asyncio.sleep(0.1)
    return playback


async def test_a_confirm_leg_answered_without_pressing_1_is_dropped_and_another_can_answer(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, desk, mobile = await make_phones("cf-caller1", "cf-desk1", "cf-mobile1")
    desk.ring()
    mobile.answer(after=0.2)  # a voicemail, say: it answers and presses nothing
    running = await start_router(
        directory("""
        - {extension: "861", name: Nina, phones: [PJSIP/cf-desk1, PJSIP/cf-mobile1]}
    """),
        rules("cf-desk1", "cf-mobile1"),
    )
    call = await caller.call("861", asterisk.sip_port)
    answer = await mobile.wait_for("200", direction="out", method="INVITE", timeout=10)
    driver = the_call(running)
    playback = await playing_prompt(running, driver)
    assert playback["state"] == "playing", playback  # the sound exists and plays
    assert playback["media_uri"] == "sound:followme/options"
    assert call.state in ("calling", "early")  # the caller still hears ringing
    bye = await mobile.wait_for("BYE", timeout=CONFIRM_TIME + 5)  # dropped ...
    assert bye.time - answer.time >= CONFIRM_TIME - 0.3  # ... once its time was up
    assert desk.matching("CANCEL") == []  # the desk phone rings on ...
    assert call.state in ("calling", "early")
    desk.answer_now()  # ... and can still take the call
    await call.wait_answered(timeout=10)
    peer = await bridge_peer(running, driver.caller.id)
    assert peer.startswith("PJSIP/cf-desk1-"), peer
    await call.hangup()
    await desk.wait_for("BYE")
    assert driver.flow.result is not None and driver.flow.result.value == "ANSWERED"
    (mobile_leg,) = [r for r in driver.flow.legs.values() if "cf-mobile1" in r.leg.endpoint]
    assert mobile_leg.end is not None and mobile_leg.end.value == "unconfirmed"


async def test_a_confirm_leg_that_presses_1_is_bridged_with_the_caller(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, desk, mobile = await make_phones("cf-caller2", "cf-desk2", "cf-mobile2")
    desk.ring()
    mobile.answer(after=0.2)
    running = await start_router(
        directory("""
        - {extension: "861", name: Nina, phones: [PJSIP/cf-desk2, PJSIP/cf-mobile2]}
    """),
        rules("cf-desk2", "cf-mobile2"),
    )
    call = await caller.call("861", asterisk.sip_port)
    incoming = await mobile.wait_for_call(timeout=10)
    await incoming.wait_state("confirmed", timeout=10)
    driver = the_call(running)
    playback = await playing_prompt(running, driver)
    assert playback["state"] == "playing", playback
    assert call.state in ("calling", "early")  # answered by the mobile, not yet the call's
    await incoming.send_dtmf("1")  # while the prompt plays
    await call.wait_answered(timeout=10)
    await desk.wait_for("CANCEL")
    peer = await bridge_peer(running, driver.caller.id)
    assert peer.startswith("PJSIP/cf-mobile2-"), peer
    # The prompt was stopped for the bridge, not left to play to its end.
    with contextlib.suppress(AriHttpError):
        state = await running.router.ari.request("GET", f"/playbacks/{playback['id']}")
        assert state["state"] != "playing", state
    assert driver.flow.winner is not None and "cf-mobile2" in driver.flow.winner.leg.endpoint
    await call.hangup()
    await mobile.wait_for("BYE")


async def test_a_confirm_leg_that_presses_2_is_dropped_at_once(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, desk, mobile = await make_phones("cf-caller3", "cf-desk3", "cf-mobile3")
    desk.ring()
    mobile.answer(after=0.2)
    running = await start_router(
        directory("""
        - {extension: "861", name: Nina, phones: [PJSIP/cf-desk3, PJSIP/cf-mobile3]}
    """),
        rules("cf-desk3", "cf-mobile3", confirm_time=60),  # 2 ends it, not the deadline
    )
    call = await caller.call("861", asterisk.sip_port)
    incoming = await mobile.wait_for_call(timeout=10)
    await incoming.wait_state("confirmed", timeout=10)
    await playing_prompt(running, the_call(running))
    await incoming.send_dtmf("2")
    await incoming.wait_ended(timeout=10)
    assert incoming.ended_by == "remote"  # Asterisk hung it up
    assert desk.matching("CANCEL") == [] and call.state in ("calling", "early")
    await call.hangup()
    await desk.wait_for("CANCEL")


async def test_the_astdb_fallback_leaves_a_confirm_phone_out(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    """Dial() cannot confirm one leg while the others ring: with the router down, the
    mobile (a voicemail that answers at once) is not rung, and the desk takes the call."""
    caller, desk, mobile = await make_phones("cf-caller4", "cf-desk4", "cf-mobile4")
    desk.answer(after=0.5)
    mobile.answer()
    running = await start_router(
        directory("""
        - {extension: "864", name: Nina, phones: [PJSIP/cf-desk4, PJSIP/cf-mobile4]}
    """),
        rules("cf-desk4", "cf-mobile4").replace('"861"', '"864"'),
    )
    await until(lambda: asterisk.db_get("callrouter", "864"), "the fallback entry")
    assert asterisk.db_get("callrouter", "864") == "PJSIP/cf-desk4"
    await running.shut_down()
    call = await caller.call("864", asterisk.sip_port)
    await call.wait_answered(timeout=10)
    assert desk.matching("200", direction="out", method="INVITE")
    assert mobile.matching("INVITE") == []
    await call.hangup()
    await desk.wait_for("BYE")
    asterisk.db_del("callrouter", "864")
    asterisk.db_del("callrouter-timeout", "864")
