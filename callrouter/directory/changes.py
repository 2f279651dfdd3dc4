"""Changes announced by PostgreSQL (``LISTEN``/``NOTIFY``), so every router applies them at once.

Triggers (migration 0004) send ``NOTIFY callrouter_directory, '<revision>
<content_revision>'`` when the directory's revision row moves (the revisions save the
listener reading them) and ``NOTIFY callrouter_client_status, '<extension>'``
when a client status changes.  PostgreSQL delivers a notification when the writing
transaction commits, so a listener never sees an uncommitted change, and no broker of
our own is needed: the database every router already shares is the bus.

``ChangeFeed`` holds one dedicated asyncpg connection (the SQLAlchemy pool's
connections come and go; a LISTEN belongs to a session), calls the handler of each
channel with the payload, and reconnects with back-off when the connection is lost.
Notifications sent while it was away are lost, so after every (re)connect it calls
its ``on_connect`` handlers, which re-read everything once.  Polling
(``directory_poll_interval``) stays as the safety net, and is the only way on SQLite.

``Coalesced`` turns a burst of notifications into few refreshes: one in progress plus
at most one pending, which starts after it and sees everything the burst changed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.backoff import backoff_delay
from callrouter.directory.database import shown_url
from callrouter.directory.live import LiveDirectory
from callrouter.metrics import Metrics
from callrouter.tasks import TaskSet

log = logging.getLogger(__name__)

# The channels migration 0004's triggers notify (the migration keeps its own copy).
DIRECTORY_CHANNEL = "callrouter_directory"
CLIENT_STATUS_CHANNEL = "callrouter_client_status"
# Channel -> the metrics label of its notifications (metrics.CHANGE_KINDS).
CHANNEL_KINDS = {DIRECTORY_CHANNEL: "directory", CLIENT_STATUS_CHANNEL: "client_status"}

# An idle LISTEN connection notices a dead server or network only when it sends:
# a query this often finds out (and the termination listener catches a clean close).
PING_INTERVAL = 5.0
PING_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
BACKOFF_BASE = 0.25
BACKOFF_CAP = 10.0

PayloadHandler = Callable[[str], None]
Connect = Callable[..., Awaitable[asyncpg.Connection]]


class Coalesced:
    """Runs ``action`` when asked: one run at a time, and at most one more pending.

    A request while a run is in progress marks one more run, which starts when this
    one ends and so sees every change made before the request; further requests meanwhile
    add nothing.  A failing run is logged (the next request or poll tries again).
    """

    def __init__(self, action: Callable[[], Awaitable[object]], name: str) -> None:
        self.action = action
        self.name = name
        self.runs = 0  # runs started, for the tests and the benchmark
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._tasks = TaskSet(name)
        self._idle = asyncio.Event()
        self._idle.set()

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._pending = True
            return
        self._idle.clear()
        self._task = self._tasks.spawn(self._run(), self.name)

    async def _run(self) -> None:
        try:
            while True:
                self._pending = False
                self.runs += 1
                try:
                    await self.action()
                except Exception as exc:
                    log.warning("%s failed: %s: %s", self.name, type(exc).__name__, exc)
                if not self._pending:
                    return
        finally:
            self._idle.set()

    async def idle(self) -> None:
        """Wait until no run is in progress or pending."""
        await self._idle.wait()

    async def close(self) -> None:
        await self._tasks.close()
        self._idle.set()


class ChangeFeed:
    """One LISTEN connection to PostgreSQL, kept up, dispatching notifications by channel."""

    def __init__(
        self,
        connect_args: dict[str, Any],
        *,
        shown: str,
        metrics: Metrics | None = None,
        connect: Connect = asyncpg.connect,
        ping_interval: float = PING_INTERVAL,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._connect_args = connect_args
        self.shown = shown  # the server, without the password, for log lines
        self.metrics = metrics
        self._connect = connect
        self.ping_interval = ping_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._rand = rand
        self._handlers: dict[str, list[PayloadHandler]] = {}
        self._on_connect: list[Callable[[], None]] = []
        self._tasks = TaskSet("change feed")
        self._connected = asyncio.Event()
        self.connection_count = 0  # successful connects, the first included
        self.notifications = 0  # received, on every channel
        # The backend's pid of the current connection (tests terminate it).
        self.backend_pid: int | None = None
        self.received_at: dict[str, float] = {}  # channel -> perf_counter() of the last one
        # The refreshes notifications ask for, by name ("directory", ...), closed with the feed.
        self.coalesced: dict[str, Coalesced] = {}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def on(self, channel: str, handler: PayloadHandler) -> None:
        """Call ``handler(payload)`` for every notification on ``channel``.  Register
        before ``start``: channels are listened to when the connection is made."""
        self._handlers.setdefault(channel, []).append(handler)

    def on_connect(self, handler: Callable[[], None]) -> None:
        """Call ``handler()`` after every (re)connect, once the channels are listened to:
        what was announced while disconnected is lost, so re-read everything."""
        self._on_connect.append(handler)

    def coalesce(self, name: str, action: Callable[[], Awaitable[object]]) -> Coalesced:
        """A ``Coalesced`` run of ``action`` (kept as ``coalesced[name]``, closed with
        the feed), for handlers to request."""
        self.coalesced[name] = coalesced = Coalesced(action, f"{name} refresh on NOTIFY")
        return coalesced

    def start(self) -> None:
        self._tasks.spawn(self._run(), "change-feed")

    async def close(self) -> None:
        await self._tasks.close()
        for coalesced in self.coalesced.values():
            await coalesced.close()
        self._connected.clear()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    # --- the connection -------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0  # failed attempts since the feed last listened
        lost_since: float | None = None  # monotonic; None: never lost (nor connected)
        while True:
            listened = False
            try:
                conn = await self._connect(**self._connect_args, timeout=CONNECT_TIMEOUT)
                try:
                    await self._listen(conn, lost_since)
                finally:
                    listened = self.connected
                    self._connected.clear()
                    self.backend_pid = None
                    conn.terminate()  # no goodbye: the server may be gone
            except Exception as exc:  # refused, unreachable, terminated, ping unanswered, ...
                if listened:
                    log.warning(
                        "change feed %s: connection lost (%s); polling until it is back",
                        self.shown,
                        _reason(exc),
                    )
                    lost_since, attempt = time.monotonic(), 0
                elif attempt == 0:  # once per outage, not per attempt
                    log.warning(
                        "change feed %s: cannot listen (%s); polling until it is back",
                        self.shown,
                        _reason(exc),
                    )
                    lost_since = lost_since if lost_since is not None else time.monotonic()
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    async def _listen(self, conn: asyncpg.Connection, lost_since: float | None) -> None:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        for channel in self._handlers:
            await conn.add_listener(channel, self._notified)
        self.backend_pid = conn.get_server_pid()
        self.connection_count += 1
        self._connected.set()
        if lost_since is not None:
            log.info(
                "change feed %s: listening again after %.1f s",
                self.shown,
                time.monotonic() - lost_since,
            )
        else:
            log.info("change feed %s: listening to %s", self.shown, ", ".join(self._handlers))
        for handler in list(self._on_connect):
            try:
                handler()
            except Exception:
                log.exception("change feed: on-connect handler failed")
        while not closed.is_set():
            try:
                await asyncio.wait_for(closed.wait(), self.ping_interval)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
        raise ConnectionResetError("the server closed the connection")

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self.notifications += 1
        self.received_at[channel] = time.perf_counter()
        if self.metrics is not None and channel in CHANNEL_KINDS:
            self.metrics.change_notified(CHANNEL_KINDS[channel])
        for handler in self._handlers.get(channel, ()):
            try:
                handler(str(payload))
            except Exception:  # one broken handler must not stop the others
                log.exception("change feed: handler for %s failed", channel)

    def _delay(self, attempt: int) -> float:
        return backoff_delay(
            attempt, base=self.backoff_base, cap=self.backoff_cap, rand=self._rand()
        )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def asyncpg_connect_args(engine: AsyncEngine) -> dict[str, Any]:
    """``asyncpg.connect``'s keyword arguments for the engine's PostgreSQL database, as
    SQLAlchemy's own asyncpg dialect makes them (host, port, user, password, ssl, ...)."""
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    accepted = inspect.signature(asyncpg.connect).parameters
    # The dialect's own options (prepared_statement_cache_size, ...) are not asyncpg's.
    return {key: value for key, value in kwargs.items() if key in accepted and key != "timeout"}


def announced_revisions(payload: str) -> tuple[int, int] | None:
    """(revision, content_revision) from a directory notification, or None."""
    words = payload.split()
    if len(words) != 2 or not all(word.isdigit() for word in words):
        return None
    return int(words[0]), int(words[1])


def listens(engine: AsyncEngine) -> bool:
    """Whether the directory database can announce changes (PostgreSQL via asyncpg)."""
    return engine.url.get_backend_name() == "postgresql" and engine.url.get_driver_name() in (
        "asyncpg",
    )


def build(
    live: LiveDirectory, *, metrics: Metrics | None = None, connect: Connect = asyncpg.connect
) -> ChangeFeed | None:
    """The change feed of ``live``'s database, refreshing ``live`` on every directory
    change; None on SQLite (and other drivers), where polling is the only way.

    Features that share state through the database add their own channels
    (``presence/build.py``: client statuses) before ``start``.
    """
    engine = live.engine
    if not listens(engine):
        return None
    feed = ChangeFeed(
        asyncpg_connect_args(engine), shown=shown_url(engine.url), metrics=metrics, connect=connect
    )
    if metrics is not None:
        metrics.track_change_feed(lambda: feed.connected, lambda: feed.connection_count)
    # The newest revisions announced since the last refresh began; or read them from
    # the database instead (after a (re)connect, or a payload that does not parse).
    latest: tuple[int, int] | None = None
    read_database = True

    async def refresh_live() -> None:
        nonlocal latest, read_database
        revisions = None if read_database else latest
        latest, read_database = None, False
        await live.refresh(announced=revisions)

    refresh = feed.coalesce("directory", refresh_live)

    def directory_changed(payload: str) -> None:
        nonlocal latest, read_database
        revisions = announced_revisions(payload)
        if revisions is None:
            read_database = True
        elif revisions[0] <= live.snapshot.revision:
            return  # this router has it already (its own login, or a later change)
        elif latest is None or revisions[0] > latest[0]:
            latest = revisions
        refresh.request()

    def connected() -> None:
        nonlocal read_database
        read_database = True  # what was announced while away is lost
        refresh.request()

    feed.on(DIRECTORY_CHANNEL, directory_changed)
    feed.on_connect(connected)
    return feed
