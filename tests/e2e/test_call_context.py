"""Internal and external calls, and office hours, on the real Asterisk."""

from __future__ import annotations

from datetime import datetime

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

RULES = """
schedules:
  office-hours: {days: [mon-fri], hours: ["08:00-18:00"]}
users:
  "891":
    followme:
      - {ring: [PJSIP/cx-desk], calls: internal, timeout: 10}
      - {ring: [PJSIP/cx-lab], when: office-hours, timeout: 10}
      - {ring: [PJSIP/cx-soft], delay: 10, timeout: 10}
"""


async def test_an_internal_only_entry_does_not_ring_for_an_external_call(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    outsider, colleague, desk, lab, soft = await make_phones(
        "cx-outsider", "cx-colleague", "cx-desk", "cx-lab", "cx-soft"
    )
    for phone in (desk, lab, soft):
        phone.ring()
    running = await start_router(
        directory("""
        - {extension: "891", name: Xenia, phones: [PJSIP/cx-desk, PJSIP/cx-lab, PJSIP/cx-soft]}
        - {extension: "892", name: Colleague, phones: [PJSIP/cx-colleague]}
    """),
        RULES,
    )
    running.router.intake.local_time = lambda: datetime(2026, 12, 2, 19, 0)  # after hours
    # cx-outsider is no phone of the directory: an external call. The desk entry is
    # for internal calls and the lab's for office hours: both are left out, and so is
    # the silence they would have left: the softphone (delay 10 s) rings at once.
    call = await outsider.call("891", asterisk.sip_port)
    await soft.wait_for("INVITE", timeout=5)
    with pytest.raises(PhoneTimeout):
        await desk.wait_for("INVITE", timeout=1.0)
    assert lab.matching("INVITE") == []
    await call.hangup()
    await soft.wait_for("CANCEL")
    # A comma in the dialled number cannot add a Stasis argument that claims the call
    # is internal (the dialplan passes the digits alone).
    soft.clear_events()
    call = await outsider.call("891,internal", asterisk.sip_port)
    await soft.wait_for("INVITE", timeout=5)
    assert desk.matching("INVITE") == []
    await call.hangup()
    await soft.wait_for("CANCEL")
    # A colleague's phone calls: internal, so the desk rings (the softphone after 10 s).
    call = await colleague.call("891", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10)
    await call.hangup()
    await desk.wait_for("CANCEL")


async def test_an_office_hours_entry_does_not_ring_outside_its_schedule(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    colleague, desk, lab, soft = await make_phones("cy-colleague", "cx-desk", "cx-lab", "cx-soft")
    for phone in (desk, lab, soft):
        phone.ring()
    running = await start_router(
        directory("""
        - {extension: "891", name: Xenia, phones: [PJSIP/cx-desk, PJSIP/cx-lab, PJSIP/cx-soft]}
        - {extension: "893", name: Colleague, phones: [PJSIP/cy-colleague]}
    """),
        RULES,
    )
    running.router.intake.local_time = lambda: datetime(2026, 12, 2, 19, 0)  # after hours
    call = await colleague.call("891", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10)
    with pytest.raises(PhoneTimeout):
        await lab.wait_for("INVITE", timeout=1.5)
    await call.hangup()
    await desk.wait_for("CANCEL")
    # In office hours (the same rules, the clock moved): the lab phone rings too.
    running.router.intake.local_time = lambda: datetime(2026, 12, 2, 9, 30)
    desk.clear_events()
    call = await colleague.call("891", asterisk.sip_port)
    await lab.wait_for("INVITE", timeout=10)
    await desk.wait_for("INVITE", timeout=10)
    await call.hangup()
    await lab.wait_for("CANCEL")
