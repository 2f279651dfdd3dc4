"""Graceful overload on the real sandbox Asterisk: a router whose event loop is held up
hands a new call straight back to the dialplan, whose AstDB fallback rings the phone;
once the load is gone the router routes calls again, by itself.

The load is real: the router runs in this process, so the test blocks the event loop
(``time.sleep``) for longer than the lag probe sleeps, again and again, with short
gaps in which the phones, Asterisk's events and the router get their turn.  Every lag
sample after a block is then past the default limit (0.25 s), and no quiet stretch
between two blocks lasts the recover time: the router is overloaded for as long as the
test keeps it busy, however slow the machine, and no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from callrouter.calls.overload import OverloadLimits
from callrouter.metrics import LOOP_LAG_INTERVAL
from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones
from tests.e2e.test_routing import assert_nothing_left
from tests.unit.test_metrics import samples

BLOCK = 0.6  # s: longer than the probe's sleep, so each sample after it is >= 0.35 s late
GAP = 0.2  # s of free loop between two blocks, for the phones, Asterisk and the router
RECOVER = 2.0  # s calm before routing again (a non-calm sample comes every BLOCK + GAP)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")


async def hold_up_the_loop(until: Callable[[], bool]) -> None:
    """The load: the event loop blocked, again and again, until ``until()``."""
    assert OverloadLimits().max_loop_lag < BLOCK - LOOP_LAG_INTERVAL  # each block: past it
    assert BLOCK + GAP < RECOVER  # never calm for long enough while this runs
    while not until():
        time.sleep(BLOCK)
        await asyncio.sleep(GAP)


@pytest.fixture
async def router(asterisk: AsteriskSandbox, tmp_path: Path) -> AsyncIterator[RunningRouter]:
    directory = tmp_path / "directory.yaml"
    directory.write_text(
        textwrap.dedent("""
        users:
          - {extension: "341", name: Olga, phones: [PJSIP/rt-ov-a]}
        """)
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {timeout: 30}\n")
    url = f"sqlite:///{tmp_path}/callrouter.db"
    await in_process.load_directory(url, directory, actor="test")
    settings = in_process.sandbox_settings(asterisk, url, rules, poll_interval=0.2)
    # The default limits; only the recover time longer, for a wider margin (see above).
    settings = settings.model_copy(update={"overload_recover": RECOVER})
    handle = await in_process.start_router(settings, asterisk=asterisk)
    try:
        yield handle
    finally:
        if not handle.task.done():
            await handle.shut_down()
    await assert_nothing_left(asterisk)


def count(handle: RunningRouter, name: str, **labels: str) -> float:
    return samples(handle.router.metrics)[name, tuple(sorted(labels.items()))]


async def test_an_overloaded_router_hands_the_call_to_the_fallback_and_recovers(
    asterisk: AsteriskSandbox,
    router: RunningRouter,
    make_phones: MakePhones,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter")
    caller, phone = await make_phones("rt-ov-caller", "rt-ov-a")
    phone.ring()
    await eventually(
        lambda: asterisk.db_get("callrouter", "341") == "PJSIP/rt-ov-a",
        "the AstDB fallback published",
    )
    intake = router.router.intake

    def handed_back() -> bool:
        return count(router, "callrouter_calls_handed_back_total", reason="overload") >= 1

    load = asyncio.ensure_future(hold_up_the_loop(until=handed_back))
    try:
        await eventually(lambda: intake.overload.overloaded, "overloaded by the blocked loop")
        assert intake.overload.reason == "loop_lag"
        # Health and systemd's STATUS= say so (still ready: the fallback answers).
        state = router.router.readiness()
        assert state.ready and state.overloaded == "loop_lag"
        assert "overloaded (loop_lag)" in router.router.status_line()
        first = await caller.call("341", asterisk.sip_port)
        await asyncio.wait_for(load, 30)  # the load stops once the call was handed back
    finally:
        load.cancel()
    # The fallback rings the phone: the caller is in [callrouter]'s Dial, not the router's.
    await phone.wait_for("INVITE", timeout=10)
    channels = await asterisk.cli_async("core show channels concise")
    assert any(
        "!callrouter!341!" in line and "!Dial!PJSIP/rt-ov-a," in line
        for line in channels.splitlines()
    ), channels
    assert not router.router.calls
    assert count(router, "callrouter_legs_total", outcome="started") == 0
    assert count(router, "callrouter_calls_total", result="handed_back") == 1
    assert count(router, "callrouter_calls_handed_back_total", reason="overload") == 1
    assert count(router, "callrouter_overloads_total", reason="loop_lag") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("overload (loop_lag): new calls go straight to") for m in messages)
    assert any(
        "341 handed back to the dialplan fallback (overload: loop_lag)" in m for m in messages
    )
    phone.answer_now()
    await first.wait_answered(timeout=10)
    await first.hangup()
    await phone.wait_for("BYE")

    # The load is gone: after the recover time the router routes again, by itself.
    await eventually(lambda: not intake.overload.overloaded, "routing again")
    assert count(router, "callrouter_overloaded") == 0
    assert router.router.readiness().overloaded is None
    assert any(
        m.startswith("overload over after") for m in (r.getMessage() for r in caplog.records)
    )
    second = await caller.call("341", asterisk.sip_port)
    await phone.wait_for("INVITE", n=2, timeout=10)
    # The router's leg, counted once Asterisk answered the originate (which may come
    # after the phone saw its INVITE).
    await eventually(
        lambda: count(router, "callrouter_legs_total", outcome="started") == 1, "the router's leg"
    )
    assert len(router.router.calls) == 1
    assert count(router, "callrouter_calls_handed_back_total", reason="overload") == 1
    await second.hangup()
    await phone.wait_for("CANCEL")
