"""Calls routed by callrouter on the real sandbox Asterisk, with simulated phones.

Each test writes a small directory and rules file, starts the router in-process
against the sandbox, places calls from a simulated SIP phone and checks what the
phones saw (INVITE, CANCEL, BYE, with times) and what the caller got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from callrouter.ari.errors import AriHttpError
from callrouter.calls.driver import ARI_EVENTS, BRIDGE_PREFIX, LEG_PREFIX
from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import CallFailed, PhoneTimeout
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones

StartRouter = Callable[[str, str], Awaitable[RunningRouter]]


@pytest.fixture
async def start_router(asterisk: AsteriskSandbox, tmp_path: Path) -> AsyncIterator[StartRouter]:
    running: list[RunningRouter] = []

    async def start(directory_yaml: str, rules_yaml: str) -> RunningRouter:
        directory_file = tmp_path / "directory.yaml"
        rules_file = tmp_path / "rules.yaml"
        directory_file.write_text(textwrap.dedent(directory_yaml))
        rules_file.write_text(textwrap.dedent(rules_yaml))
        url = f"sqlite:///{tmp_path}/callrouter.db"
        await in_process.load_directory(url, directory_file, actor="test")
        handle = await in_process.start_router(
            in_process.sandbox_settings(asterisk, url, rules_file, poll_interval=0.2),
            asterisk=asterisk,
        )
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.shut_down()
    # Nothing the router made may be left behind.
    await assert_nothing_left(asterisk)


async def assert_nothing_left(asterisk: AsteriskSandbox) -> None:
    for _ in range(100):
        channels = await asterisk.cli_async("core show channels concise")
        bridges = await asterisk.cli_async("bridge show all")
        if (
            LEG_PREFIX not in channels
            and BRIDGE_PREFIX not in bridges
            and "PJSIP/rt-" not in channels
        ):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"left over in Asterisk:\n{channels}\n{bridges}")


def directory(users: str, workplaces: str = "", logins: str = "") -> str:
    text = "users:\n" + textwrap.indent(textwrap.dedent(users), "  ")
    if workplaces:
        text += "workplaces:\n" + textwrap.indent(textwrap.dedent(workplaces), "  ")
    if logins:
        text += "logins:\n" + textwrap.indent(textwrap.dedent(logins), "  ")
    return text


async def test_direct_phones_ring_together_first_answer_wins(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, desk, soft = await make_phones("rt-caller1", "rt-desk1", "rt-soft1")
    desk.ring()
    soft.answer(after=0.5)
    handle = await start_router(
        directory("""
        - {extension: "301", name: Anna, phones: [PJSIP/rt-desk1, PJSIP/rt-soft1]}
        - {extension: "399", name: Caller, phones: [PJSIP/rt-caller1]}
    """),
        "defaults: {timeout: 20}\n",
    )
    # Asterisk sends the app only the event types the call path reads.
    ari = handle.router.ari
    app = await ari.request("GET", f"/applications/{ari.app}")
    # ApplicationReplaced too: it tells a router that another took the app over.
    assert {e["type"] for e in app["events_allowed"]} == ARI_EVENTS | {"ApplicationReplaced"}
    assert app["events_disallowed"] == []
    call = await caller.call("301", asterisk_port(caller))
    desk_invite = await desk.wait_for("INVITE")
    soft_invite = await soft.wait_for("INVITE")
    assert abs(desk_invite.time - soft_invite.time) < 0.3
    assert "rt-caller1" in desk_invite.message.require("From")  # caller ID passes through
    await call.wait_answered(timeout=10)
    await desk.wait_for("CANCEL")
    # Asterisk's own BRIDGEPEER (no request of ours) names the phone that answered.
    (caller_id,) = handle.router.intake.calls
    peer = ""
    for _ in range(50):  # set once the bridge has both (the loser is cancelled first)
        with contextlib.suppress(AriHttpError):
            if peer := await ari.channel_var(caller_id, "BRIDGEPEER"):
                break
        await asyncio.sleep(0.1)
    assert peer.startswith("PJSIP/rt-soft1-"), peer
    await call.hangup()
    await soft.wait_for("BYE")


async def test_followme_entries_ring_at_their_delays(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, first, second = await make_phones("rt-caller2", "rt-first2", "rt-second2")
    first.ring()
    second.answer(after=0.3)
    await start_router(
        directory("""
        - {extension: "302", name: Boris, phones: [PJSIP/rt-first2, PJSIP/rt-second2]}
    """),
        """
        users:
          "302":
            followme:
              - {ring: [PJSIP/rt-first2], timeout: 1.5}
              - {ring: [PJSIP/rt-second2], delay: 1.5, timeout: 10}
    """,
    )
    call = await caller.call("302", asterisk_port(caller))
    a = await first.wait_for("INVITE")
    b = await second.wait_for("INVITE", timeout=5)
    cancel = await first.wait_for("CANCEL", timeout=5)
    assert 1.2 <= b.time - a.time <= 1.8, b.time - a.time  # ±300 ms
    assert 1.2 <= cancel.time - a.time <= 1.8
    await call.wait_answered(timeout=10)  # the winner answers in the later entry
    await call.hangup()
    await second.wait_for("BYE")


async def test_mixed_operation_workplace_and_direct_phones(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, own, wp_desk, wp_dect = await make_phones(
        "rt-caller3", "rt-own3", "rt-wpdesk3", "rt-wpdect3"
    )
    for phone in (own, wp_desk, wp_dect):
        phone.ring()
    await start_router(
        directory(
            """
        - {extension: "303", name: Clara, phones: [PJSIP/rt-own3]}
        """,
            """
        - {id: desk-3, name: Desk 3, code: "803", phones: [PJSIP/rt-wpdesk3, PJSIP/rt-wpdect3]}
        """,
            """
        "303": desk-3
        """,
        ),
        """
        defaults: {timeout: 3}
        users:
          "303":
            followme:
              - {ring: [PJSIP/rt-own3], timeout: 3}
              - {ring: [workplace], delay: 0.5}
        workplaces:
          desk-3:
            ring:
              - {ring: [PJSIP/rt-wpdesk3], timeout: 1}
              - {ring: [PJSIP/rt-wpdect3], delay: 1, timeout: 1}
    """,
    )
    call = await caller.call("303", asterisk_port(caller))
    t_own = (await own.wait_for("INVITE")).time
    t_desk = (await wp_desk.wait_for("INVITE")).time
    t_dect = (await wp_dect.wait_for("INVITE", timeout=5)).time
    assert 0.2 <= t_desk - t_own <= 0.8  # the workplace timeline starts at 0.5 s
    assert 1.2 <= t_dect - t_own <= 1.8  # sequential: dect after the desk's second
    assert 1.2 <= (await wp_desk.wait_for("CANCEL")).time - t_own <= 1.8
    with pytest.raises(CallFailed) as failed:
        await call.wait_answered(timeout=15)
    assert failed.value.status == 480  # NOANSWER's default in callrouter-result
    await own.wait_for("CANCEL")


async def test_all_busy_gives_busy(start_router: StartRouter, make_phones: MakePhones) -> None:
    caller, a, b = await make_phones("rt-caller4", "rt-a4", "rt-b4")
    a.busy()
    b.busy()
    await start_router(
        directory("""
        - {extension: "304", name: Dora, phones: [PJSIP/rt-a4, PJSIP/rt-b4]}
    """),
        "defaults: {timeout: 20}\n",
    )
    call = await caller.call("304", asterisk_port(caller))
    with pytest.raises(CallFailed) as failed:
        await call.wait_answered(timeout=10)
    assert failed.value.status == 486


async def test_unknown_extension_and_no_phones(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    (caller,) = await make_phones("rt-caller5")
    await start_router(
        directory("""
        - {extension: "305", name: Emil}
    """),
        "defaults: {timeout: 20}\n",
    )
    unknown = await caller.call("3999", asterisk_port(caller))
    with pytest.raises(CallFailed) as failed:
        await unknown.wait_answered(timeout=15)
    assert failed.value.status >= 500  # UNKNOWN: ss-noservice, then congestion
    nophones = await caller.call("305", asterisk_port(caller))
    with pytest.raises(CallFailed) as failed:
        await nophones.wait_answered(timeout=15)
    assert failed.value.status == 480  # NOPHONES


async def test_caller_hangs_up_while_ringing_cancels_every_phone(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, a, b = await make_phones("rt-caller6", "rt-a6", "rt-b6")
    a.ring()
    b.ring()
    await start_router(
        directory("""
        - {extension: "306", name: Fritz, phones: [PJSIP/rt-a6, PJSIP/rt-b6]}
    """),
        "defaults: {timeout: 20}\n",
    )
    call = await caller.call("306", asterisk_port(caller))
    await a.wait_for("180", direction="out")
    await b.wait_for("180", direction="out")
    await call.hangup()
    await a.wait_for("CANCEL")
    await b.wait_for("CANCEL")


async def test_router_down_the_astdb_fallback_still_rings(
    asterisk: AsteriskSandbox, start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, a, b = await make_phones("rt-caller7", "rt-a7", "rt-b7")
    a.ring()
    b.answer(after=0.2)
    running = await start_router(
        directory("""
        - {extension: "307", name: Gina, phones: [PJSIP/rt-a7, PJSIP/rt-b7]}
    """),
        "defaults: {timeout: 20}\n",
    )
    for _ in range(100):  # published through AMI when the router connected
        if asterisk.db_get("callrouter", "307"):
            break
        await asyncio.sleep(0.05)
    assert asterisk.db_get("callrouter", "307") == "PJSIP/rt-a7&PJSIP/rt-b7"
    assert asterisk.db_get("callrouter-timeout", "307") == "20"
    await running.shut_down()
    call = await caller.call("307", asterisk_port(caller))
    await a.wait_for("INVITE")
    await call.wait_answered(timeout=10)
    await a.wait_for("CANCEL")
    await call.hangup()


async def test_shutdown_hands_a_ringing_call_back_to_the_fallback(
    asterisk: AsteriskSandbox, start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, a = await make_phones("rt-caller7b", "rt-a7b")
    a.ring()
    running = await start_router(
        directory("""
        - {extension: "317", name: Greta, phones: [PJSIP/rt-a7b]}
    """),
        "defaults: {timeout: 60}\n",
    )
    for _ in range(100):  # published through AMI when the router connected
        if asterisk.db_get("callrouter", "317"):
            break
        await asyncio.sleep(0.05)
    call = await caller.call("317", asterisk_port(caller))
    await a.wait_for("INVITE")  # rung by the router
    # The router stops while the phone rings (grace 2 s in the sandbox settings): the
    # router's leg is cancelled and the dialplan's fallback rings the phone again.
    await running.shut_down()
    await a.wait_for("CANCEL")
    await a.wait_for("INVITE", n=2, timeout=10)
    a.answer_now()
    await call.wait_answered(timeout=10)
    await call.hangup()
    await a.wait_for("BYE")


async def test_shutdown_leaves_a_connected_call_up(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, a = await make_phones("rt-caller7c", "rt-a7c")
    a.answer(after=0.1)
    directory_yaml = directory("""
        - {extension: "318", name: Hanna, phones: [PJSIP/rt-a7c]}
    """)
    running = await start_router(directory_yaml, "defaults: {timeout: 20}\n")
    call = await caller.call("318", asterisk_port(caller))
    await call.wait_answered(timeout=10)
    answered = await a.wait_for_call()
    # Stopped mid-conversation (grace 2 s in the sandbox settings): the call goes on.
    await running.shut_down()
    with pytest.raises(PhoneTimeout):
        await a.wait_for("BYE", timeout=1.0)
    await call.hangup()
    await answered.hangup()
    # The next router's resync removes the bridge the conversation left behind.
    await start_router(directory_yaml, "defaults: {timeout: 20}\n")


async def test_ari_websocket_dropped_and_back_routes_new_calls(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    caller, a = await make_phones("rt-caller8", "rt-a8")
    a.answer(after=0.1)
    running = await start_router(
        directory("""
        - {extension: "308", name: Hugo, phones: [PJSIP/rt-a8]}
    """),
        "defaults: {timeout: 20}\n",
    )
    before = running.router.ari.connection_count
    await running.router.ari.reconnect()
    await running.router.ari.wait_connected(10)
    assert running.router.ari.connection_count == before + 1
    call = await caller.call("308", asterisk_port(caller))
    await call.wait_answered(timeout=10)
    await call.hangup()
    await a.wait_for("BYE")


async def test_two_calls_to_the_same_user_at_once(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    c1, c2, a = await make_phones("rt-caller9", "rt-caller9b", "rt-a9")
    a.ring()
    await start_router(
        directory("""
        - {extension: "309", name: Ida, phones: [PJSIP/rt-a9]}
    """),
        "defaults: {timeout: 2}\n",
    )
    calls = [await c.call("309", asterisk_port(c)) for c in (c1, c2)]
    await a.wait_for("INVITE", n=2)
    for call in calls:
        with pytest.raises(CallFailed) as failed:
            await call.wait_answered(timeout=15)
        assert failed.value.status == 480
    await a.wait_for("CANCEL", n=2)


async def test_fifty_concurrent_calls_to_fifty_users(
    start_router: StartRouter, make_phones: MakePhones
) -> None:
    n = 50
    callees = await make_phones(*(f"rt-u{i}" for i in range(n)))
    callers = await make_phones(*(f"rt-c{i}" for i in range(n)))
    for phone in callees:
        phone.answer(after=0.5)
    users = "".join(
        f'- {{extension: "{4000 + i}", name: User {i}, phones: [PJSIP/rt-u{i}]}}\n'
        for i in range(n)
    )
    await start_router(directory(users), "defaults: {timeout: 20}\n")
    calls = await asyncio.gather(
        *(c.call(str(4000 + i), asterisk_port(c)) for i, c in enumerate(callers))
    )
    await asyncio.gather(*(call.wait_answered(timeout=20) for call in calls))
    for i, phone in enumerate(callees):  # each user's own phone, nobody else's
        invite = await phone.wait_for("INVITE")
        assert f'"rt-c{i}"' in invite.message.require("From")
        assert len(phone.matching("INVITE")) == 1
    await asyncio.gather(*(call.hangup() for call in calls))
    await asyncio.gather(*(p.wait_for("BYE") for p in callees))


_SIP_PORT: dict[str, int] = {}


def asterisk_port(_phone: object) -> int:
    return _SIP_PORT["port"]


@pytest.fixture(autouse=True)
def _sip_port(asterisk: AsteriskSandbox) -> None:
    _SIP_PORT["port"] = asterisk.sip_port


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callrouter")
