"""Two routers on one PostgreSQL directory, real calls on the real Asterisk.

Router B is active (in this process: the test watches its snapshot and presence) and
routes the calls; router A is its standby, a ``callrouter serve`` process of its own
with the same settings, and serves the HTTP API like every router.  Both poll the
directory once a minute, so what B knows within the test's seconds came by PostgreSQL's
``NOTIFY``: DND and a workplace login set through the standby's API decide the active
router's next call.

Needs ``CALLROUTER_TEST_POSTGRES`` (an empty database, wiped here) besides the sandbox:
without it the test is skipped, except where the e2e tests are required (CI,
``CALLROUTER_REQUIRE_E2E=1``), where that is a failure.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from callrouter.domain.presence import ClientStatus
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import CallFailed
from sandbox.router import (
    RunningRouter,
    ServeProcess,
    load_directory,
    sandbox_settings,
    start_router,
    wipe_postgres,
)
from tests.conftest import POSTGRES_ENV
from tests.e2e.conftest import MakePhones, e2e_required, until
from tests.e2e.test_routing import assert_nothing_left

POSTGRES_URL = os.environ.get(POSTGRES_ENV)
POLL = 60.0  # the longest poll the settings allow: only NOTIFY is in time
ADMIN_TOKEN = "admin-token-shared-0123456789"

DIRECTORY = """
users:
  - {extension: "561", name: Ines, phones: [PJSIP/rt-own56]}
  - {extension: "569", name: Caller, phones: [PJSIP/rt-caller56]}
workplaces:
  - {id: desk-56, name: Desk 56, code: "856", phones: [PJSIP/rt-desk56]}
"""


@pytest.fixture
async def two_routers(
    asterisk: AsteriskSandbox, tmp_path: Path
) -> AsyncIterator[tuple[ServeProcess, RunningRouter]]:
    if POSTGRES_URL is None:
        if e2e_required():
            pytest.fail(f"two routers need a PostgreSQL directory: set {POSTGRES_ENV}")
        pytest.skip(f"two routers need a PostgreSQL directory: set {POSTGRES_ENV}")
    await wipe_postgres(POSTGRES_URL)
    directory_file, rules_file = tmp_path / "directory.yaml", tmp_path / "rules.yaml"
    directory_file.write_text(textwrap.dedent(DIRECTORY))
    rules_file.write_text("defaults: {timeout: 20}\n")
    await load_directory(POSTGRES_URL, directory_file, actor="test")
    settings = sandbox_settings(asterisk, POSTGRES_URL, rules_file, poll_interval=POLL)
    settings = settings.model_copy(update={"api_admin_token": SecretStr(ADMIN_TOKEN)})
    b = await start_router(settings, asterisk=asterisk)  # first: it takes the lease
    a = ServeProcess(settings, tmp_path, "standby")
    try:
        assert b.router.changes is not None
        await b.router.changes.wait_connected(10)
        await a.start()
        await a.wait_role("standby")
        yield a, b
    finally:
        await a.stop()
        await b.shut_down()
    await assert_nothing_left(asterisk)


async def test_dnd_and_a_login_set_through_the_standby_decide_the_active_routers_calls(
    two_routers: tuple[ServeProcess, RunningRouter],
    make_phones: MakePhones,
    asterisk: AsteriskSandbox,
) -> None:
    a, b = two_routers
    caller, own, desk = await make_phones("rt-caller56", "rt-own56", "rt-desk56")
    own.ring()
    desk.answer(after=0.3)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=a.api_url) as api:
        reply = await api.put(
            "/api/v1/presence/client",
            headers=admin,
            json={"extension": "561", "client_id": "laptop", "status": "dnd"},
        )
        assert reply.status_code == 200 and reply.json()["client"] == "dnd"
        tracker = b.router.presence.tracker
        await until(
            lambda: (
                tracker.user("561") is not None and tracker.user("561").client is ClientStatus.DND
            ),  # type: ignore[union-attr]
            "the active router to know Ines's DND",
        )
        call = await caller.call("561", asterisk.sip_port)
        with pytest.raises(CallFailed) as failed:
            await call.wait_answered(timeout=10)
        assert failed.value.status == 486  # DND, decided by the active router
        assert own.matching("INVITE") == []

        # DND lifted and a workplace login, both through the standby: the next call rings
        # the desk.
        reply = await api.put(
            "/api/v1/presence/client",
            headers=admin,
            json={"extension": "561", "client_id": "laptop", "status": "offline"},
        )
        assert reply.status_code == 200 and reply.json()["client"] == "offline"
        reply = await api.post(
            "/api/v1/login", headers=admin, json={"extension": "561", "workplace": "desk-56"}
        )
        assert reply.status_code == 200, reply.text
        await until(
            lambda: (
                b.router.live.snapshot.logins.get("561") == "desk-56"
                and tracker.user("561") is not None
                and tracker.user("561").client is ClientStatus.OFFLINE
            ),  # type: ignore[union-attr]
            "the active router to know the login and the lifted DND",
        )
        call = await caller.call("561", asterisk.sip_port)
        await desk.wait_for("INVITE")
        await call.wait_answered(timeout=10)
        await call.hangup()
