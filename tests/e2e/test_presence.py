"""Presence on the real Asterisk: device states in, routing by them, the person's
state published back (custom device state, presence state, hints), resync."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from callrouter.domain.presence import DeviceState
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import CallFailed
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones, until
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    StartRouter,
    _quiet_logs,
    _sip_port,
    directory,
    start_router,
)


async def published(running: RunningRouter, extension: str) -> tuple[str | None, str | None]:
    """What Asterisk holds for the person: custom device state and presence state."""
    ami = running.router.ami
    device = await ami.getvar(f"DEVICE_STATE(Custom:user-{extension})")
    presence = await ami.getvar(f"PRESENCE_STATE(CustomPresence:user-{extension},value)")
    return device, presence


async def until_published(
    running: RunningRouter, extension: str, device: str, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while (got := await published(running, extension))[0] != device:
        if time.monotonic() > deadline:
            pytest.fail(f"Custom:user-{extension} is {got}, not {device}")
        await asyncio.sleep(0.05)


async def test_unreachable_phone_is_skipped_without_dead_air(
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
    asterisk: AsteriskSandbox,
) -> None:
    caller, after = await make_phones("rt-caller51", "rt-after51")
    (dead,) = await make_phones("rt-dead51", qualify=True)
    after.ring()
    running = await start_router(
        directory("""
        - {extension: "501", name: Frank, phones: [PJSIP/rt-dead51, PJSIP/rt-after51]}
    """),
        """
        users:
          "501":
            followme:
              - {ring: [PJSIP/rt-dead51], timeout: 5}
              - {ring: [PJSIP/rt-after51], delay: 5, timeout: 10}
    """,
    )
    tracker = running.router.presence.tracker
    await dead.close()  # the phone is gone: Asterisk's OPTIONS go unanswered
    await until(
        lambda: tracker.device_state("PJSIP/rt-dead51") is DeviceState.UNAVAILABLE,
        "Asterisk to report the phone unavailable",
    )
    started = time.monotonic()
    call = await caller.call("501", asterisk.sip_port)
    invite = await after.wait_for("INVITE", timeout=4)
    # The first entry (5 s) is skipped and the second moves up: it rings at once.
    assert invite.time - started < 1.5, invite.time - started
    await call.hangup()
    await after.wait_for("CANCEL")


async def test_busy_at_once_when_on_a_call_without_call_waiting(
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
    asterisk: AsteriskSandbox,
) -> None:
    first, second, desk = await make_phones("rt-caller52", "rt-caller52b", "rt-desk52")
    desk.answer(after=0.2)
    running = await start_router(
        directory("""
        - {extension: "502", name: Gina, phones: [PJSIP/rt-desk52]}
    """),
        """
        users:
          "502": {call_waiting: false}
    """,
    )
    call = await first.call("502", asterisk.sip_port)
    await call.wait_answered(timeout=10)
    tracker = running.router.presence.tracker
    await until(
        lambda: (u := tracker.user("502")) is not None and u.phone.on_call,
        "Gina's phone to be in use",
    )
    await until_published(running, "502", "INUSE")
    busy = await second.call("502", asterisk.sip_port)
    with pytest.raises(CallFailed) as failed:
        await busy.wait_answered(timeout=10)
    assert failed.value.status == 486
    assert len(desk.matching("INVITE")) == 1  # her phone was not rung again
    await call.hangup()
    await until(
        lambda: not tracker.user("502").phone.on_call,  # type: ignore[union-attr]
        "Gina's phone to be free",
    )
    await until_published(running, "502", "NOT_INUSE")


async def test_dnd_set_through_the_api_sends_calls_to_dnd(
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
    asterisk: AsteriskSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller, desk = await make_phones("rt-caller53", "rt-desk53")
    desk.ring()
    running = await start_router(
        directory("""
        - {extension: "503", name: Hugo, pin: "2580", phones: [PJSIP/rt-desk53]}
    """),
        "defaults: {timeout: 20}\n",
    )
    assert running.router.api_server is not None
    base = f"http://127.0.0.1:{running.router.api_server.port}"
    async with httpx.AsyncClient(base_url=base) as api:
        session = await api.post("/api/v1/session", json={"extension": "503", "pin": "2580"})
        headers = {"Authorization": f"Bearer {session.json()['token']}"}
        reply = await api.put(
            "/api/v1/presence/client",
            headers=headers,
            json={"client_id": "laptop", "status": "dnd"},
        )
        assert reply.status_code == 200 and reply.json()["client"] == "dnd"
        # A second client, online, does not lift the dnd of the first.
        await api.put(
            "/api/v1/presence/client",
            headers=headers,
            json={"client_id": "phone-app", "status": "online"},
        )
        await until_published(running, "503", "BUSY")
        assert (await published(running, "503"))[1] == "dnd"
        # The hint for BLF keys follows: 2 = busy.
        state = await running.router.ami.send_action(
            "ExtensionState", Exten="503", Context="callrouter-hints"
        )
        assert state.get("Status") == "2", state

        call = await caller.call("503", asterisk.sip_port)
        with pytest.raises(CallFailed) as failed:
            await call.wait_answered(timeout=10)
        assert failed.value.status == 486  # [callrouter-result]'s default for DND
        assert desk.matching("INVITE") == []
        # The router logs the result once the call is back in the dialplan.
        await until(
            lambda: any("finished, DND" in r.getMessage() for r in caplog.records),
            "the router to report DND",
        )

        await api.put(
            "/api/v1/presence/client",
            headers=headers,
            json={"client_id": "laptop", "status": "online"},
        )
        await until_published(running, "503", "NOT_INUSE")
        assert (await published(running, "503"))[1] == "available"
        call = await caller.call("503", asterisk.sip_port)
        await desk.wait_for("INVITE")
        await call.hangup()


async def test_presence_follows_workplace_login_and_logout(
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
) -> None:
    await make_phones("rt-desk54")
    running = await start_router(
        directory(
            """
        - {extension: "504", name: Ida}
        """,
            """
        - {id: desk-54, name: Desk 54, code: "854", phones: [PJSIP/rt-desk54]}
        """,
        ),
        "defaults: {timeout: 20}\n",
    )
    tracker = running.router.presence.tracker
    logins = running.router.logins
    assert tracker.user("504") is not None and not tracker.user("504").phone.available  # type: ignore[union-attr]
    await until_published(running, "504", "UNAVAILABLE")  # no phone at all
    await logins.login("504", "desk-54", actor="admin", source="test")
    assert tracker.user("504").phone.available  # type: ignore[union-attr]
    await until_published(running, "504", "NOT_INUSE")
    await logins.logout("504", actor="admin", source="test")
    assert not tracker.user("504").phone.available  # type: ignore[union-attr]
    await until_published(running, "504", "UNAVAILABLE")


async def test_presence_is_resynced_after_asterisk_restarts(
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
    asterisk: AsteriskSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller, desk = await make_phones("rt-caller55", "rt-desk55")
    desk.answer(after=0.2)
    running = await start_router(
        directory("""
        - {extension: "505", name: Jonas, phones: [PJSIP/rt-desk55]}
    """),
        "defaults: {timeout: 20}\n",
    )
    tracker = running.router.presence.tracker
    call = await caller.call("505", asterisk.sip_port)
    await call.wait_answered(timeout=10)
    await until(
        lambda: tracker.user("505").phone.on_call,  # type: ignore[union-attr]
        "Jonas on a call",
    )
    await until_published(running, "505", "INUSE")
    caplog.clear()
    # The call dies with Asterisk; no event will ever say the phone is free again.
    # Asterisk also restores Custom:user-505 (INUSE) from its AstDB at start.
    await asyncio.to_thread(asterisk.restart)
    await until(
        lambda: any(r.getMessage().startswith("presence resync:") for r in caplog.records),
        "the presence resync after AMI reconnects",
        timeout=30,
    )
    assert not tracker.user("505").phone.on_call  # type: ignore[union-attr]
    await until_published(running, "505", "NOT_INUSE")
    await running.router.ari.wait_connected(30)
    # Calls work again after the restart.
    desk.ring()
    call = await caller.call("505", asterisk.sip_port)
    await desk.wait_for("INVITE", n=2)
    await call.hangup()
    logging.getLogger(__name__).info("restart survived")
