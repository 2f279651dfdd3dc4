"""Active and standby routers for one Asterisk, on a real PostgreSQL directory.

Two ``callrouter serve`` processes with the same settings: one runs the Stasis app,
the other waits. ``kill -9`` of the active one while a call rings: the standby takes
the lease, connects ARI, and takes the waiting caller over: the phones ring again
under its control and the call is answered and bridged.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from callrouter.directory.database import create_engine
from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.router import ServeProcess
from tests.conftest import POSTGRES_ENV, postgres_required
from tests.e2e.conftest import MakePhones, until
from tests.e2e.test_routing import directory


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if postgres_required():
            pytest.fail(f"{POSTGRES_ENV} is required here (CI): active/standby needs it")
        pytest.skip(f"{POSTGRES_ENV} not set")
    return url


async def fresh_directory(url: str, directory_yaml: str, workdir: Path) -> None:
    wipe = create_engine(url)
    async with wipe.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await wipe.dispose()
    path = workdir / "directory.yaml"
    path.write_text(textwrap.dedent(directory_yaml))
    await in_process.load_directory(url, path, actor="test")


@pytest.fixture
async def pair(
    asterisk: AsteriskSandbox, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {timeout: 30}\n")
    settings = in_process.sandbox_settings(asterisk, postgres_url, rules, poll_interval=0.2)
    settings = settings.model_copy(update={"log_level": "DEBUG"})
    routers = (ServeProcess(settings, tmp_path, "a"), ServeProcess(settings, tmp_path, "b"))
    yield routers
    for router in routers:
        await router.stop()


async def test_kill_9_of_the_active_router_while_a_call_rings_the_standby_takes_it_over(
    asterisk: AsteriskSandbox,
    postgres_url: str,
    tmp_path: Path,
    pair: tuple[ServeProcess, ServeProcess],
    make_phones: MakePhones,
) -> None:
    caller, desk, mobile = await make_phones("ha-caller", "ha-desk", "ha-mobile")
    desk.ring()
    mobile.ring()
    await fresh_directory(
        postgres_url,
        directory("""
        - {extension: "811", name: Hanna, phones: [PJSIP/ha-desk, PJSIP/ha-mobile]}
    """),
        tmp_path,
    )
    a, b = pair
    await a.start()
    await a.wait_role("active")
    await b.start()
    standby = await b.wait_role("standby")
    assert standby["since"] is not None
    assert (await a.health() or {}).get("role") == "active"

    call = await caller.call("811", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10)
    await mobile.wait_for("INVITE", timeout=10)
    a.kill()
    active = await b.wait_role("active", timeout=10)
    assert active["since"] > standby["since"]
    # The standby hung up A's legs and rang the phones again, under its control.
    await desk.wait_for("INVITE", n=2, timeout=10)
    await mobile.wait_for("INVITE", n=2, timeout=10)
    desk.answer_now()
    await call.wait_answered(timeout=10)
    await mobile.wait_for("CANCEL", n=2, timeout=10)  # the loser of B's round
    await call.hangup()
    await desk.wait_for("BYE", timeout=10)
    log = b.output()
    assert "active: lease callrouter@" in log and "routing after" in log, log[-3000:]
    assert "resync: taking over waiting call" in log, log[-3000:]

    # A call placed while nobody is active yet rings too: through the dialplan's
    # fallback, or routed by the new active router; never lost.
    await a.start()  # back, as a standby now
    await a.wait_role("standby")
    desk.clear_events()
    b.kill()
    second = await caller.call("811", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=15)
    await a.wait_role("active", timeout=10)
    desk.answer_now()
    await second.wait_answered(timeout=10)
    await second.hangup()
    await until(lambda: not caller.active_calls(), "the second call to end")
