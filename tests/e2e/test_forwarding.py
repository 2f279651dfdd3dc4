"""Forwarding on the real Asterisk: always (the target rings by their own plan), on
busy, on no answer once the first plan's time is up, and when no phone can be
reached."""

from __future__ import annotations

import asyncio
import time

import pytest

from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import PhoneTimeout
from tests.e2e.conftest import MakePhones
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    StartRouter,
    _sip_port,
    directory,
    start_router,
)
from tests.unit.test_metrics import samples

DIRECTORY = """
        - {extension: "861", name: Fiona, phones: [PJSIP/fw-fiona]}
        - {extension: "862", name: Gero, phones: [PJSIP/fw-gero-desk, PJSIP/fw-gero-soft]}
        - {extension: "863", name: Hanna, phones: [PJSIP/fw-hanna]}
        - {extension: "869", name: Caller, phones: [PJSIP/fw-caller]}
"""
# Gero's own plan: the desk first, the softphone 2 s later.
GERO = """
  "862":
    followme:
      - {ring: [PJSIP/fw-gero-desk], timeout: 20}
      - {ring: [PJSIP/fw-gero-soft], delay: 2, timeout: 18}
"""


async def test_forward_always_rings_the_target_by_their_own_plan(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, fiona, desk, soft = await make_phones(
        "fw-caller", "fw-fiona", "fw-gero-desk", "fw-gero-soft"
    )
    fiona.ring()
    desk.ring()
    soft.answer()
    await start_router(
        directory(DIRECTORY),
        'users:\n  "861":\n    forward: {always: "862"}\n' + GERO,
    )
    call = await caller.call("861", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10)
    # By Gero's plan: the softphone only after the desk (its entry's delay).
    assert soft.matching("INVITE") == []
    await call.wait_answered(timeout=10)  # the softphone answered: the call is Gero's
    assert soft.matching("INVITE")
    await desk.wait_for("CANCEL", timeout=5)
    assert fiona.matching("INVITE") == []  # always: Fiona's phone never rang
    await call.hangup()


async def test_forward_on_busy_rings_the_target_when_every_phone_is_busy(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, fiona, hanna = await make_phones("fw-caller", "fw-fiona", "fw-hanna")
    fiona.busy()
    hanna.answer(after=0.3)
    await start_router(
        directory(DIRECTORY),
        'users:\n  "861":\n    forward: {busy: "863", no_answer: "862"}\n',
    )
    call = await caller.call("861", asterisk.sip_port)
    await call.wait_answered(timeout=15)  # Hanna: the busy forwarding, not no answer's
    fiona_invite = fiona.matching("INVITE")
    assert fiona_invite and hanna.matching("INVITE")
    await call.hangup()
    await hanna.wait_for("BYE", timeout=5)


async def test_forward_on_no_answer_rings_the_target_once_the_plan_is_over(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, fiona, desk, soft = await make_phones(
        "fw-caller", "fw-fiona", "fw-gero-desk", "fw-gero-soft"
    )
    fiona.ring()
    desk.answer(after=0.3)
    soft.ring()
    await start_router(
        directory(DIRECTORY),
        'users:\n  "861":\n    followme: [{ring: [PJSIP/fw-fiona], timeout: 3}]\n'
        '    forward: {no_answer: "862"}\n' + GERO,
    )
    call = await caller.call("861", asterisk.sip_port)
    await fiona.wait_for("INVITE", timeout=10)
    # Gero's phones wait for Fiona's 3 s to be over.
    with pytest.raises(PhoneTimeout):
        await desk.wait_for("INVITE", timeout=1.5)
    await fiona.wait_for("CANCEL", timeout=10)
    await desk.wait_for("INVITE", timeout=5)
    await call.wait_answered(timeout=10)
    # Fiona's phone stopped before Gero's desk was rung.
    cancel = fiona.matching("CANCEL")[0]
    invite = desk.matching("INVITE")[0]
    assert cancel.time <= invite.time
    await call.hangup()


async def test_forward_when_unreachable_follows_at_once_a_phone_asterisk_cannot_reach(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    """A mobile behind a trunk Asterisk does not have looks reachable when the call is
    resolved (no presence for external numbers); its leg is refused, and the call
    forwards when unreachable at once, not after the plan's 20 s, and not by the
    no-answer forwarding."""
    caller, gero, hanna = await make_phones("fw-caller", "fw-gero-desk", "fw-hanna")
    gero.ring()
    hanna.answer(after=0.3)
    running = await start_router(
        directory(DIRECTORY),
        'defaults: {external_endpoint: "PJSIP/{number}@fw-no-such-trunk"}\n'
        'users:\n  "861":\n    followme: [{ring: ["+4917099999"], timeout: 20}]\n'
        '    forward: {unreachable: "863", no_answer: "862"}\n',
    )
    started = time.monotonic()
    call = await caller.call("861", asterisk.sip_port)
    await call.wait_answered(timeout=10)
    assert time.monotonic() - started < 10  # well before the mobile's 20 s were up
    assert hanna.matching("INVITE") and gero.matching("INVITE") == []
    figures = samples(running.router.metrics)
    assert figures["callrouter_calls_forwarded_total", (("kind", "unreachable"),)] == 1
    await call.hangup()
    await hanna.wait_for("BYE", timeout=5)
    # The legs are counted as the call ends: the mobile's as unreachable.
    for _ in range(100):
        figures = samples(running.router.metrics)
        if figures["callrouter_legs_total", (("outcome", "answered"),)] == 1:
            break
        await asyncio.sleep(0.05)
    assert figures["callrouter_legs_total", (("outcome", "unreachable"),)] == 1
