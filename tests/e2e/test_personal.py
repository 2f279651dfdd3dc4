"""The users' own switches and forwardings on the real Asterisk: switched off
through the API, the next call leaves that entry out; set by a feature code dialled
from a real (simulated SIP) phone, through the dialplan and FastAGI."""

from __future__ import annotations

import httpx

from callrouter.directory.database import create_engine
from callrouter.directory.snapshot import load_personal
from callrouter.personal.feature_codes import PersonalCodes, PersonalOutcome
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
users:
  - {extension: "871", name: Ida, pin: "4711", phones: [PJSIP/rt-ps-desk, PJSIP/rt-ps-mobile]}
  - {extension: "872", name: Jan, phones: [PJSIP/rt-ps-jan]}
  - {extension: "879", name: Caller, phones: [PJSIP/rt-ps-caller]}
workplaces:
  - {id: ps-desk, name: Desk, code: "870", phones: [PJSIP/rt-ps-nobody]}
"""
# Ida's desk phone, and her "mobile" (a SIP phone here) that she may switch off.
RULES = """
users:
  "871":
    followme:
      - {ring: [PJSIP/rt-ps-desk]}
      - {ring: [PJSIP/rt-ps-mobile], switch: mobile}
"""


def api_of(running: RunningRouter) -> httpx.AsyncClient:
    server = running.router.api_server
    assert server is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10)


async def test_a_switch_turned_off_through_the_api_leaves_its_phone_out_of_the_next_call(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    caller, desk, mobile = await make_phones("rt-ps-caller", "rt-ps-desk", "rt-ps-mobile")
    desk.answer(after=1.0)
    mobile.ring()
    running = await start_router(DIRECTORY, RULES)

    call = await caller.call("871", asterisk.sip_port)
    await mobile.wait_for("INVITE", timeout=10)  # on: the mobile rings with the desk
    await call.wait_answered(timeout=10)
    await call.hangup()
    await mobile.wait_for("CANCEL", timeout=5)
    await desk.wait_for("BYE", timeout=5)

    async with api_of(running) as api:
        reply = await api.post("/api/v1/session", json={"extension": "871", "pin": "4711"})
        assert reply.status_code == 200, reply.text
        ida = {"Authorization": f"Bearer {reply.json()['token']}"}
        reply = await api.put("/api/v1/me/switches/mobile", json={"on": False}, headers=ida)
        assert reply.status_code == 200, reply.text
        assert reply.json() == [{"name": "mobile", "on": False, "rings": ["PJSIP/rt-ps-mobile"]}]
        plan = (await api.get("/api/v1/me/plan", headers=ida)).json()
        assert [leg["endpoint"] for leg in plan["legs"]] == ["PJSIP/rt-ps-desk"]

    mobile_invites = len(mobile.matching("INVITE"))
    desk_invites = len(desk.matching("INVITE"))
    call = await caller.call("871", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10, n=desk_invites + 1)
    await call.wait_answered(timeout=10)  # the desk answered 1 s after its INVITE
    # Both legs start at 0 s: had the mobile been rung, its INVITE would be here.
    assert len(mobile.matching("INVITE")) == mobile_invites, "the switched-off mobile rang"
    await call.hangup()
    await desk.wait_for("BYE", timeout=5, n=2)


async def dial(
    asterisk: AsteriskSandbox, running: RunningRouter, phone: SimulatedPhone, dialed: str
) -> PersonalOutcome:
    """Dial a personal feature code from ``phone``; wait for the router to hang up."""
    codes: PersonalCodes = running.router.personal.feature_codes
    before = len(codes.outcomes)
    call = await phone.call(dialed, asterisk.sip_port)
    await call.wait_answered(timeout=10)
    await call.wait_ended(timeout=30)  # the router hangs up after saying the outcome
    await until(lambda: len(codes.outcomes) > before, "the outcome")
    return codes.outcomes[-1]


async def test_feature_codes_from_a_phone_set_a_forwarding_and_a_switch(
    asterisk: AsteriskSandbox,
    start_router: StartRouter,  # noqa: F811 (the fixture imported above)
    make_phones: MakePhones,
) -> None:
    desk, nobody = await make_phones("rt-ps-desk", "rt-ps-nobody")
    running = await start_router(DIRECTORY, RULES)
    engine = create_engine(running.router.settings.db)
    try:
        outcome = await dial(asterisk, running, desk, "*72872")  # busy -> Jan
        assert (outcome.extension, outcome.action, outcome.ok) == ("871", "forward", True)
        assert outcome.prompts == ("activated", "goodbye")
        outcome = await dial(asterisk, running, desk, "*510")  # the 1st switch (mobile) off
        assert (outcome.action, outcome.detail, outcome.ok) == ("switch", "mobile off", True)
        assert outcome.prompts == ("de-activated", "goodbye")
        state = await load_personal(engine)
        assert state.forwards == {"871": {"busy": "872"}}
        assert state.switched_off == {"871": frozenset({"mobile"})}

        # Refused, and nothing written: to oneself; a switch Ida has not; garbage;
        # and a phone of nobody (a workplace's phone, nobody logged in there).
        for phone, code, refusal in (
            (desk, "*72871", "to_self"),
            (desk, "*520", "unknown_switch"),
            (desk, "*7" + "9" * 30, "bad_input"),
            (nobody, "*510", "nobody's phone"),
        ):
            outcome = await dial(asterisk, running, phone, code)
            assert (outcome.ok, outcome.refusal) == (False, refusal), code
        assert await load_personal(engine) == state

        outcome = await dial(asterisk, running, desk, "*70")  # clear all
        assert (outcome.action, outcome.ok) == ("unforward", True)
        assert (await load_personal(engine)).forwards == {}
    finally:
        await engine.dispose()
