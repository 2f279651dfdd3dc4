"""Every change everywhere at once: two routers on one directory database.

Each "router" here is what ``callrouter serve`` builds for the purpose: its own engine,
``LiveDirectory``, change feed (``directory/changes.py``) and presence with the shared
client statuses (``presence/shared.py``).  On PostgreSQL the poll is set to an hour,
so a change that arrives proves the ``LISTEN``/``NOTIFY`` path; on SQLite the routers
poll (the only way there).  The tests wait on events with generous time-outs and
assert no durations (``benchmarks/propagation.py`` measures them).

The ``[postgresql]`` variants run when ``CALLROUTER_TEST_POSTGRES`` names an empty
database (wiped before each test); the PostgreSQL-only tests are skipped without it,
except where PostgreSQL is required (CI, ``CALLROUTER_REQUIRE_E2E=1``), where they fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api import TokenSigner, create_api
from callrouter.directory import schema as s
from callrouter.directory.changes import (
    DIRECTORY_CHANNEL,
    ChangeFeed,
    Coalesced,
    Connect,
)
from callrouter.directory.changes import build as build_changes
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.importer import import_document
from callrouter.directory.live import LiveDirectory
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.presence import ClientStatus, UserPresence
from callrouter.logins.service import LoginService
from callrouter.logins.store import clear_login, set_login
from callrouter.personal import store as personal_store
from callrouter.presence.build import listen_for_client_statuses
from callrouter.presence.live import PresenceService
from callrouter.presence.shared import ClientStatusStore
from callrouter.presence.tracker import PresenceTracker
from callrouter.routing.plan import PlanStatus
from callrouter.routing.resolver import resolve_plan
from sandbox.router import wipe_postgres
from tests.conftest import POSTGRES_ENV, postgres_required
from tests.unit.test_directory_store import document

POSTGRES_URL = os.environ.get(POSTGRES_ENV)
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAIT = 10.0  # generous: a change normally arrives in milliseconds
NEVER = 3600.0  # the poll interval on PostgreSQL: only NOTIFY can be in time
SQLITE_POLL = 0.02  # what app.py's loop does every directory_poll_interval
ADMIN_TOKEN = "admin-token-0123456789"
HEARTBEAT_TIMEOUT = 90.0


async def _fresh_postgres() -> str:
    assert POSTGRES_URL is not None
    await wipe_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A directory database at the newest schema with the example directory in it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'directory.db'}"
    else:
        url = await _fresh_postgres()
    await _prepare(url)
    return url


@pytest.fixture
async def postgres_url() -> str:
    """Like ``url``, PostgreSQL only (LISTEN/NOTIFY has no SQLite counterpart)."""
    if POSTGRES_URL is None:
        if postgres_required():
            pytest.fail(f"this test needs PostgreSQL: set {POSTGRES_ENV}", pytrace=False)
        pytest.skip(f"PostgreSQL only: set {POSTGRES_ENV}")
    url = await _fresh_postgres()
    await _prepare(url)
    return url


async def _prepare(url: str) -> None:
    await upgrade(url)
    engine = create_engine(url)
    try:
        await import_document(engine, document(), prune=False, actor="test")
    finally:
        await engine.dispose()


@dataclass
class Router:
    """The parts of one router that share the directory (no Asterisk)."""

    engine: AsyncEngine
    live: LiveDirectory
    presence: PresenceService
    feed: ChangeFeed | None
    polling: asyncio.Task[None] | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        if self.polling is not None:
            self.polling.cancel()
            await asyncio.gather(self.polling, return_exceptions=True)
        await self.presence.close()
        if self.feed is not None:
            await self.feed.close()
        await self.engine.dispose()


async def start_router(
    url: str, rules: Path, *, connect: Connect = asyncpg.connect, live_class: Any = LiveDirectory
) -> Router:
    engine = create_engine(url)
    live = live_class(engine, rules)
    await live.load()
    feed = build_changes(live, connect=connect)
    store = ClientStatusStore(engine, heartbeat_timeout=HEARTBEAT_TIMEOUT)
    postgres = engine.url.get_backend_name() == "postgresql"
    presence = PresenceService(
        PresenceTracker(live.snapshot, heartbeat_timeout=HEARTBEAT_TIMEOUT),
        store=store,
        poll_delay=lambda: NEVER if postgres else SQLITE_POLL,
    )
    live.subscribe(lambda concerned: presence.set_snapshot(live.snapshot, concerned))
    router = Router(engine, live, presence, feed)
    if postgres:
        assert feed is not None, "PostgreSQL announces changes"
        listen_for_client_statuses(presence, feed)
        feed.start()
        await feed.wait_connected(WAIT)
        await feed.coalesced["directory"].idle()  # the refresh after connecting
    else:
        assert feed is None, "SQLite has no NOTIFY: routers poll"
        router.polling = asyncio.create_task(_poll(live))
    presence.start()
    return router


async def _poll(live: LiveDirectory) -> None:
    while True:
        await asyncio.sleep(SQLITE_POLL)
        await live.refresh()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    shutil.copy(EXAMPLES / "rules.yaml", path)
    return path


@pytest.fixture
async def routers(url: str, rules: Path) -> AsyncIterator[tuple[Router, Router]]:
    a = await start_router(url, rules)
    b = await start_router(url, rules)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def until(live: LiveDirectory, holds: Callable[[DirectorySnapshot], bool]) -> None:
    """Wait until ``live``'s snapshot satisfies ``holds`` (checked on every change)."""
    reached = asyncio.Event()

    def check(_concerned: frozenset[str] | None) -> None:
        if holds(live.snapshot):
            reached.set()

    unsubscribe = live.subscribe(check)
    try:
        check(None)
        await asyncio.wait_for(reached.wait(), WAIT)
    finally:
        unsubscribe()


async def until_presence(
    presence: PresenceService, extension: str, holds: Callable[[UserPresence], bool]
) -> None:
    reached = asyncio.Event()

    def check(state: UserPresence | None) -> None:
        if state is not None and state.extension == extension and holds(state):
            reached.set()

    unsubscribe = presence.subscribe(check)
    try:
        check(presence.tracker.user(extension))
        await asyncio.wait_for(reached.wait(), WAIT)
    finally:
        unsubscribe()


# --- the directory and the logins -------------------------------------------------


async def test_a_login_made_through_one_router_is_applied_by_the_other(
    routers: tuple[Router, Router],
) -> None:
    a, b = routers
    assert b.live.snapshot.logins.get("202") is None
    await set_login(a.engine, "202", "hotdesk-1", actor="202", source="api")
    await until(b.live, lambda snap: snap.logins.get("202") == "hotdesk-1")
    await clear_login(a.engine, "201", actor="201", source="api")
    await until(b.live, lambda snap: "201" not in snap.logins)


async def test_own_forwardings_and_switches_made_through_one_router_reach_the_other(
    routers: tuple[Router, Router],
) -> None:
    a, b = routers
    users = b.live.snapshot.users
    await personal_store.set_forward(a.engine, "201", "busy", "202", actor="201", source="api")
    await personal_store.set_switch(a.engine, "201", "mobile", False, actor="201", source="api")
    await until(
        b.live,
        lambda snap: (
            snap.forwards == {"201": {"busy": "202"}}
            and snap.switched_off == {"201": frozenset({"mobile"})}
        ),
    )
    assert b.live.snapshot.users is users  # the personal reload, not a full one


async def test_a_directory_change_through_one_router_is_applied_by_the_other(
    routers: tuple[Router, Router],
) -> None:
    a, b = routers
    users = [
        {"extension": "203", "name": "Clara Diaz-Weber"},
        {"extension": "204", "name": "Dana Evers", "phones": ["PJSIP/spare-1"]},
    ]
    await import_document(a.engine, document(users=users, phones=[]), prune=False, actor="admin")
    await until(
        b.live, lambda snap: "204" in snap.users and snap.users["203"].name == "Clara Diaz-Weber"
    )
    assert b.live.snapshot.users["204"].phones == ("PJSIP/spare-1",)


# --- client status --------------------------------------------------------------


async def test_dnd_set_through_router_a_api_is_in_force_on_router_b(
    routers: tuple[Router, Router],
) -> None:
    a, b = routers
    api = create_api(
        LoginService(a.engine, lambda: a.live.snapshot, on_change=a.live.refresh),
        TokenSigner(b"k" * 32),
        ADMIN_TOKEN,
        presence=a.presence,
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    rules = b.live.rules
    assert resolve_plan(b.live.snapshot, rules, "201", presence=b.presence.tracker).status is (
        PlanStatus.OK
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://router-a"
    ) as client:
        reply = await client.put(
            "/api/v1/presence/client",
            headers=admin,
            json={"extension": "201", "client_id": "anna-laptop", "status": "dnd"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["client"] == "dnd"
        await until_presence(b.presence, "201", lambda p: p.client is ClientStatus.DND)
        # The call-routing decision on router B: do not disturb.
        plan = resolve_plan(b.live.snapshot, rules, "201", presence=b.presence.tracker)
        assert plan.status is PlanStatus.DND

        # A heartbeat right after stores nothing: the expiry would hardly move.
        writes = a.presence.store.writes if a.presence.store else -1
        reply = await client.put(
            "/api/v1/presence/client",
            headers=admin,
            json={"extension": "201", "client_id": "anna-laptop", "status": "dnd"},
        )
        assert reply.status_code == 200 and reply.json()["client"] == "dnd"
        assert a.presence.store is not None and a.presence.store.writes == writes

        # A second client of the same user, through router A too: merged as before
        # (dnd wins); then the dnd client goes offline and online is left, on B.
        for client_id, status in (("anna-phone", "online"), ("anna-laptop", "offline")):
            reply = await client.put(
                "/api/v1/presence/client",
                headers=admin,
                json={"extension": "201", "client_id": client_id, "status": status},
            )
            assert reply.status_code == 200, reply.text
        await until_presence(b.presence, "201", lambda p: p.client is ClientStatus.ONLINE)
        assert b.presence.tracker.client_statuses("201") == {"anna-phone": ClientStatus.ONLINE}
        plan = resolve_plan(b.live.snapshot, rules, "201", presence=b.presence.tracker)
        assert plan.status is PlanStatus.OK
    async with a.engine.connect() as conn:
        stored = (await conn.execute(select(s.client_statuses.c.client_id))).scalars().all()
    assert stored == ["anna-phone"]


async def test_client_statuses_written_by_another_router_merge_per_client(
    routers: tuple[Router, Router],
) -> None:
    """Each router reports its own client of one user: both see both, merged."""
    a, b = routers
    await a.presence.report_client("202", "boris-laptop", ClientStatus.AWAY)
    await b.presence.report_client("202", "boris-phone", ClientStatus.ONLINE)
    both = {"boris-laptop": ClientStatus.AWAY, "boris-phone": ClientStatus.ONLINE}
    for router in (a, b):
        await until_presence(
            router.presence,
            "202",
            lambda _p, r=router: r.presence.tracker.client_statuses("202") == both,
        )
        assert router.presence.tracker.user("202") is not None
        state = router.presence.tracker.user("202")
        assert state is not None and state.client is ClientStatus.ONLINE


# --- the store's decisions (no database needed) ---------------------------------


def test_a_heartbeat_writes_only_when_the_expiry_moves_enough() -> None:
    now = [1000.0]
    store = ClientStatusStore(
        create_engine("sqlite://"), heartbeat_timeout=90.0, slack=0.1, clock=lambda: now[0]
    )
    online = ClientStatus.ONLINE
    stored = (online, 1000.0 + 90.0)  # written just now
    assert not store.needs_write(online, stored)
    now[0] += 9.0  # the expiry would move by exactly the slack (9 s): not yet
    assert not store.needs_write(online, stored)
    now[0] += 0.5
    assert store.needs_write(online, stored)
    # A change of status always writes; so does a client nobody has stored yet.
    assert store.needs_write(ClientStatus.DND, (online, 1000.0 + 90.0 + 100))
    assert store.needs_write(online, None)
    # Going offline always writes (a delete): another router may hold a row this one
    # has not heard of yet.
    assert store.needs_write(ClientStatus.OFFLINE, stored)
    assert store.needs_write(ClientStatus.OFFLINE, None)


def test_the_tracker_takes_shared_statuses_per_user_or_for_everyone() -> None:
    from tests.unit.test_presence_routing import snapshot as two_users

    tracker = PresenceTracker(two_users())
    tracker.set_client("202", "boris-app", ClientStatus.ONLINE)
    changed = tracker.load_clients({"201": {"anna-laptop": (ClientStatus.DND, 5.0)}}, ["201"])
    assert [p.extension for p in changed] == ["201"]
    assert tracker.client_statuses("202") == {"boris-app": ClientStatus.ONLINE}  # untouched
    assert tracker.client("201", "anna-laptop") == (ClientStatus.DND, 5.0)
    tracker.load_clients({"201": {"anna-laptop": (ClientStatus.AWAY, 9.0)}})  # everyone
    assert tracker.client_statuses("202") == {}
    assert tracker.client_statuses("201") == {"anna-laptop": ClientStatus.AWAY}


# --- the change feed (PostgreSQL) ---------------------------------------------------


class GatedConnect:
    """asyncpg.connect, except that every connect after the first waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.attempts = 0
        self.waiting = asyncio.Event()

    async def __call__(self, **kwargs: Any) -> asyncpg.Connection:
        self.attempts += 1
        if self.attempts > 1:
            self.waiting.set()
            await self.gate.wait()
        return await asyncpg.connect(**kwargs)


async def test_the_feed_recovers_after_its_connection_is_killed_and_refreshes_once(
    postgres_url: str, rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connect = GatedConnect()
    a = await start_router(postgres_url, rules)
    b = await start_router(postgres_url, rules, connect=connect)
    try:
        assert b.feed is not None
        reconnected = asyncio.Event()
        b.feed.on_connect(reconnected.set)
        refreshes = b.feed.coalesced["directory"]
        runs = refreshes.runs
        pid = b.feed.backend_pid
        assert pid is not None
        caplog.set_level(logging.INFO, logger="callrouter.directory.changes")
        async with a.engine.connect() as conn:
            killed = await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert killed is True
        await asyncio.wait_for(connect.waiting.wait(), WAIT)  # B is disconnected now
        assert not b.feed.connected
        # Announced while B listens to nothing: this notification is lost.
        await set_login(a.engine, "202", "hotdesk-1", actor="202", source="api")
        await a.presence.report_client("203", "clara-app", ClientStatus.DND)
        assert b.live.snapshot.logins.get("202") is None
        connect.gate.set()
        await asyncio.wait_for(reconnected.wait(), WAIT)
        await until(b.live, lambda snap: snap.logins.get("202") == "hotdesk-1")
        await until_presence(b.presence, "203", lambda p: p.client is ClientStatus.DND)
        await refreshes.idle()
        assert refreshes.runs == runs + 1  # exactly one refresh for the reconnect
        assert b.feed.connection_count == 2
        lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
        back = [r for r in caplog.records if "listening again" in r.getMessage()]
        assert len(lost) == 1 and lost[0].levelno == logging.WARNING
        assert len(back) == 1
        # And it listens again: the next change arrives by NOTIFY.
        await clear_login(a.engine, "202", actor="202", source="api")
        await until(b.live, lambda snap: "202" not in snap.logins)
    finally:
        await a.close()
        await b.close()


class GatedLive(LiveDirectory):
    """A LiveDirectory whose refreshes wait for ``gate`` while it is armed."""

    gate: asyncio.Event
    entered: asyncio.Event

    async def refresh(
        self, *, force: bool = False, announced: tuple[int, int] | None = None
    ) -> bool:
        if hasattr(self, "gate"):
            self.entered.set()
            await self.gate.wait()
        return await super().refresh(force=force, announced=announced)


async def test_a_burst_of_notifications_costs_one_refresh_in_progress_and_one_more(
    postgres_url: str, rules: Path
) -> None:
    a = await start_router(postgres_url, rules)
    b = await start_router(postgres_url, rules, live_class=GatedLive)
    try:
        assert b.feed is not None and isinstance(b.live, GatedLive)
        refreshes = b.feed.coalesced["directory"]
        runs = refreshes.runs
        b.live.gate, b.live.entered = asyncio.Event(), asyncio.Event()
        burst = 20
        heard: list[str] = []
        all_heard = asyncio.Event()

        def count(payload: str) -> None:
            heard.append(payload)
            if len(heard) == burst:
                all_heard.set()

        b.feed.on(DIRECTORY_CHANNEL, count)  # after build's handler: B has asked already
        # (A handler added after start is called: channels are listened to on connect,
        # and the directory channel already is.)
        for n in range(burst):
            if n % 2 == 0:
                await set_login(a.engine, "202", "hotdesk-1", actor="202", source="api")
            else:
                await clear_login(a.engine, "202", actor="202", source="api")
            if n == 0:
                await asyncio.wait_for(b.live.entered.wait(), WAIT)  # the first is running
        await asyncio.wait_for(all_heard.wait(), WAIT)
        assert len(set(heard)) == burst  # one notification per change, each its revision
        b.live.gate.set()
        await refreshes.idle()
        assert refreshes.runs == runs + 2
        async with a.engine.connect() as conn:
            revision = await conn.scalar(select(s.directory_revision.c.revision))
        assert b.live.snapshot.revision == revision
        assert "202" not in b.live.snapshot.logins  # the last change: a logout
    finally:
        await a.close()
        await b.close()


async def test_the_triggers_announce_at_commit_only(postgres_url: str) -> None:
    """NOTIFY is delivered when the transaction commits: a rolled back change is never
    announced, and nothing is heard before the commit."""
    engine = create_engine(postgres_url)
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    from callrouter.directory.changes import asyncpg_connect_args

    listener = await asyncpg.connect(**asyncpg_connect_args(engine))
    try:
        for channel in ("callrouter_directory", "callrouter_client_status"):
            await listener.add_listener(
                channel, lambda _c, _p, ch, payload: heard.put_nowait((ch, payload))
            )
        async with engine.connect() as conn, conn.begin() as transaction:
            await conn.execute(text("UPDATE directory_revision SET revision = revision + 1"))
            await listener.fetchval("SELECT 1")  # a round trip on the listener
            assert heard.empty()
            await transaction.rollback()
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE directory_revision SET revision = revision + 1"))
            revisions = (
                await conn.execute(
                    select(s.directory_revision.c.revision, s.directory_revision.c.content_revision)
                )
            ).one()
            await conn.execute(
                text(
                    "INSERT INTO client_statuses VALUES ('201', 'x', 'dnd', now() + interval '1 h')"
                )
            )
        first = await asyncio.wait_for(heard.get(), WAIT)
        second = await asyncio.wait_for(heard.get(), WAIT)
        assert {first, second} == {
            ("callrouter_directory", f"{revisions[0]} {revisions[1]}"),
            ("callrouter_client_status", "201"),
        }
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM client_statuses"))
        assert await asyncio.wait_for(heard.get(), WAIT) == ("callrouter_client_status", "201")
        async with engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(s.client_statuses))
        assert count == 0
    finally:
        await listener.close()
        await engine.dispose()


# --- Coalesced (no database) ------------------------------------------------------


async def test_coalesced_runs_once_more_for_any_number_of_requests_meanwhile() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    calls = 0

    async def action() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await gate.wait()

    coalesced = Coalesced(action, "test")
    coalesced.request()
    await asyncio.wait_for(started.wait(), WAIT)
    for _ in range(50):
        coalesced.request()
    gate.set()
    await coalesced.idle()
    assert calls == 2
    coalesced.request()
    await coalesced.idle()
    assert calls == 3
    await coalesced.close()


async def test_coalesced_goes_on_after_a_failing_run(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = [RuntimeError("database away"), None]

    async def action() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    coalesced = Coalesced(action, "flaky refresh")
    coalesced.request()
    await coalesced.idle()
    assert "flaky refresh failed: RuntimeError: database away" in caplog.text
    coalesced.request()
    await coalesced.idle()
    assert outcomes == []
    await coalesced.close()


async def test_a_feed_that_cannot_connect_says_so_once_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0
    tried_enough = asyncio.Event()

    async def refused(**kwargs: Any) -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        if attempts == 5:
            tried_enough.set()
        raise ConnectionRefusedError(111, "Connection refused")

    feed = ChangeFeed({}, shown="postgresql://router:***@db/cr", connect=refused)
    feed.backoff_base = feed.backoff_cap = 0.001
    feed.start()
    try:
        await asyncio.wait_for(tried_enough.wait(), WAIT)
    finally:
        await feed.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "change feed postgresql://router:***@db/cr: cannot listen (ConnectionRefusedError: "
        "[Errno 111] Connection refused); polling until it is back"
    ]
    assert not feed.connected


async def test_a_client_status_the_database_cannot_store_is_refused_and_in_force_nowhere(
    tmp_path: Path,
) -> None:
    from tests.unit.test_presence_routing import snapshot as two_users

    # A database without the directory's tables: every write fails. (Not a file that
    # cannot be opened: aiosqlite's thread of a failed connect may report to the event
    # loop after the test closed it.)
    path = tmp_path / "directory.db"
    sqlite3.connect(path).close()
    broken = create_engine(f"sqlite:///{path}")
    presence = PresenceService(
        PresenceTracker(two_users()),
        store=ClientStatusStore(broken, heartbeat_timeout=HEARTBEAT_TIMEOUT),
    )

    api = create_api(
        LoginService(broken, two_users),
        TokenSigner(b"k" * 32),
        ADMIN_TOKEN,
        presence=presence,
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://router"
        ) as client:
            reply = await client.put(
                "/api/v1/presence/client",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                json={"extension": "201", "client_id": "anna-laptop", "status": "dnd"},
            )
        assert reply.status_code == 503
        assert reply.json()["reason"] == "database"
        assert "client status of 201 not stored" in reply.json()["detail"]
        assert presence.tracker.client_statuses("201") == {}
    finally:
        await broken.dispose()


def test_a_directory_notification_carries_both_revisions() -> None:
    from callrouter.directory.changes import announced_revisions

    assert announced_revisions("17 12") == (17, 12)
    for unreadable in ("", "17", "17 12 3", "x 1", "-1 2", "1.5 2"):
        assert announced_revisions(unreadable) is None


async def test_an_unreadable_notification_still_refreshes_from_the_database(
    postgres_url: str, rules: Path
) -> None:
    """A NOTIFY without the revisions (by hand, or an older trigger) is a plain "look"."""
    b = await start_router(postgres_url, rules)
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            # The change without its trigger (replica mode), then a bare notification.
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text("UPDATE directory_revision SET revision = revision + 1"))
            await conn.execute(
                text("UPDATE users SET name = 'Boris Chen-Li' WHERE extension = '202'")
            )
            await conn.execute(text("UPDATE directory_revision SET content_revision = revision"))
            await conn.execute(text("NOTIFY callrouter_directory, 'look'"))
        await until(b.live, lambda snap: snap.users["202"].name == "Boris Chen-Li")
    finally:
        await engine.dispose()
        await b.close()
