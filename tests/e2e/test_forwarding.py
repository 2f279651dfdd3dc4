"""Forwarding on the real Asterisk: always (the target rings by their own plan), on
busy, and on no answer once the first plan's time is up."""

from __future__ import annotations

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
