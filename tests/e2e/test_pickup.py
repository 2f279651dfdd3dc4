"""Pickup for a person on the real Asterisk: *8 + extension from another phone while
the person's phones ring connects that phone with the caller; a picker of a role
that picked_up_by leaves out is refused and the phones ring on; with nothing
ringing the picker's call ends cleanly."""

from __future__ import annotations

import asyncio

import pytest

from callrouter.calls.driver import BRIDGE_PREFIX
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import CallFailed, SimulatedPhone
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    StartRouter,
    _quiet_logs,
    _sip_port,
    assert_nothing_left,
    directory,
    start_router,
)

ROLES = "roles:\n  - {name: staff}\n  - {name: intern}\n"
DIRECTORY = directory("""
    - {extension: "201", name: Anna, role: staff, phones: [PJSIP/rt-pk-desk, PJSIP/rt-pk-soft]}
    - {extension: "202", name: Bert, role: staff, phones: [PJSIP/rt-pk-bert]}
    - {extension: "203", name: Cleo, role: intern, phones: [PJSIP/rt-pk-cleo]}
    - {extension: "299", name: Caller, phones: [PJSIP/rt-pk-caller]}
""")
RULES = """
defaults: {timeout: 30}
users:
  "201": {picked_up_by: [staff]}
"""
NAMES = ("rt-pk-caller", "rt-pk-desk", "rt-pk-soft", "rt-pk-bert", "rt-pk-cleo")


async def setup(
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> tuple[RunningRouter, dict[str, SimulatedPhone]]:
    phones = {p.name.removeprefix("rt-pk-"): p for p in await make_phones(*NAMES)}
    phones["desk"].ring()
    phones["soft"].ring()
    running = await start_router(ROLES + DIRECTORY, RULES)
    return running, phones


async def bridges(running: RunningRouter) -> list[list[str]]:
    """The channel names in each of the router's bridges, from Asterisk."""
    ari = running.router.ari
    found = []
    for bridge in await ari.request("GET", "/bridges"):
        if bridge["id"].startswith(BRIDGE_PREFIX):
            names = [
                (await ari.request("GET", f"/channels/{c}"))["name"] for c in bridge["channels"]
            ]
            found.append(sorted(n.rsplit("-", 1)[0] for n in names))
    return found


async def test_a_colleague_picks_up_with_star_8_and_is_connected_with_the_caller(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
) -> None:
    running, phones = await setup(start_router, make_phones)
    call = await phones["caller"].call("201", asterisk.sip_port)
    await phones["desk"].wait_for("INVITE")
    await phones["soft"].wait_for("INVITE")
    pickup = await phones["bert"].call("*8201", asterisk.sip_port)
    await pickup.wait_answered(timeout=10)
    await call.wait_answered(timeout=10)
    # Anna's phones stop ringing; Bert and the caller share one bridge.
    await phones["desk"].wait_for("CANCEL")
    await phones["soft"].wait_for("CANCEL")
    connected: list[list[str]] = []
    deadline = asyncio.get_running_loop().time() + 10
    while connected != [["PJSIP/rt-pk-bert", "PJSIP/rt-pk-caller"]]:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
        connected = await bridges(running)
    assert connected == [["PJSIP/rt-pk-bert", "PJSIP/rt-pk-caller"]]
    for phone in (phones["desk"], phones["soft"]):  # neither answered
        assert phone.matching("200", direction="out", method="INVITE") == []
    # An answered call like any other: the caller hangs up, Bert's phone hears BYE.
    await call.hangup()
    await pickup.wait_ended(timeout=10)
    await assert_nothing_left(asterisk)


async def test_a_picker_of_a_role_not_in_picked_up_by_is_refused_the_phones_ring_on(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
) -> None:
    running, phones = await setup(start_router, make_phones)
    call = await phones["caller"].call("201", asterisk.sip_port)
    await phones["desk"].wait_for("INVITE")
    await phones["soft"].wait_for("INVITE")
    pickup = await phones["cleo"].call("*8201", asterisk.sip_port)  # an intern
    with pytest.raises(CallFailed) as failed:
        await pickup.wait_answered(timeout=20)
    assert failed.value.status == 403  # REFUSED: "feature not available", then cause 21
    # Anna's phones still ring, and the call still waits for one of them.
    assert phones["desk"].matching("CANCEL") == [] and phones["soft"].matching("CANCEL") == []
    (driver,) = running.router.intake.calls.values()
    assert driver.flow.ringing()
    phones["soft"].answer_now()
    await call.wait_answered(timeout=10)
    await phones["desk"].wait_for("CANCEL")
    await call.hangup()
    await phones["soft"].wait_for("BYE")


async def test_nothing_ringing_ends_the_pickers_call_cleanly(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
) -> None:
    running, phones = await setup(start_router, make_phones)
    pickup = await phones["bert"].call("*8201", asterisk.sip_port)
    with pytest.raises(CallFailed) as failed:
        await pickup.wait_answered(timeout=20)
    assert failed.value.status == 404  # NOCALL: "cannot be completed", then cause 1
    assert phones["desk"].matching("INVITE") == []
    assert not running.router.intake.calls
    await assert_nothing_left(asterisk)  # no channel of a phone, no leg, no bridge


async def test_with_the_router_not_running_the_picker_hears_try_later(
    asterisk: AsteriskSandbox, make_phones: MakePhones
) -> None:
    (bert,) = await make_phones("rt-pk-bert")
    pickup = await bert.call("*8201", asterisk.sip_port)
    with pytest.raises(CallFailed) as failed:
        await pickup.wait_answered(timeout=20)
    assert failed.value.status == 503  # Stasis failed: "please try later", cause 34
    await assert_nothing_left(asterisk)
