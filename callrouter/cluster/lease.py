"""Who may run the Stasis app of one Asterisk: a lease that one router holds at a time.

On PostgreSQL the lease is a session-level advisory lock (``pg_advisory_lock``) held
on one connection of its own. PostgreSQL releases it the moment that session ends, so a
router killed with SIGKILL, or whose connection breaks, frees it at once, without a
clock or an expiry to wait for; a standby waits for it inside PostgreSQL (a blocked
``pg_advisory_lock``), so it hears of the release without polling.

A holder that stops without closing its connection (its host gone, the process
frozen) shows in ``pg_stat_activity``: the active router confirms its lease with a
query every ``lease_check_interval``, so its session's ``state_change`` moves; a
standby that finds it idle for longer than ``stale_after`` ends that session
(``pg_terminate_backend``) and takes the lease. Should the old holder come back, its
next confirmation fails and Asterisk has given the app to the new one already. TCP
keepalives on the session catch the rest.

On SQLite there is one router per database: the lease is an exclusive lock on a file
beside the database, taken at start or refused with a message that says what to do.

Neither lease is the only guard against two routers taking calls: Asterisk itself
delivers an app's events to one websocket, the newest (the one before it gets
``ApplicationReplaced``), see ``cluster/election.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Protocol

import asyncpg
from sqlalchemy.engine import make_url

from callrouter.backoff import backoff_delay

log = logging.getLogger(__name__)

__all__ = ["FileLease", "Lease", "LeaseRefused", "PostgresLease", "key_halves", "lease_key"]


class LeaseRefused(Exception):
    """This router may not start: another one holds a lease that cannot be shared."""


class Lease(Protocol):
    name: str
    # True: routers share it, one at a time (wait for it); False: one router only
    # (taken at start, or the start is refused).
    shared: bool

    async def acquire(self) -> None:
        """Return once this router holds the lease (waits as long as it takes)."""

    async def confirm(self) -> bool | None:
        """Still held? True: yes; False: another router holds it now; None: cannot
        tell (the database is unreachable)."""

    async def release(self) -> None:
        """Give the lease up (idempotent)."""

    async def standby_waiting(self) -> bool:
        """Does another router wait for the lease (would take over at once)?"""


def lease_key(name: str) -> int:
    """The advisory lock's 64-bit key for a lease name: the same in every router."""
    digest = hashlib.blake2b(f"callrouter lease:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def key_halves(key: int) -> tuple[int, int]:
    """How ``pg_locks`` shows a bigint advisory key: ``classid`` and ``objid``, its two
    unsigned 32-bit halves."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


def _asyncpg_dsn(url: str) -> str:
    """A libpq URL for asyncpg from the directory's SQLAlchemy URL (password kept:
    it goes to asyncpg only, never into a message)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# Session settings of the lock's connection: PostgreSQL drops a session whose host has
# gone silent after idle + interval x count seconds, and with it the lock.
_KEEPALIVES = {
    "tcp_keepalives_idle": "2",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "2",
}
# What a lost or unreachable database raises through asyncpg (a session ended by the
# server mid-request can surface as an InternalClientError).
_DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# A waiting pg_advisory_lock gives up after this, so that the standby checks whether
# the holder still lives, and asks again.
_LOCK_WAIT = "500ms"
# The holder's session, if its last query ended longer ago than stale_after seconds.
_STALE_HOLDER = """
SELECT pg_terminate_backend(a.pid)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::text::bigint = $1 AND l.objid::text::bigint = $2
  AND a.state = 'idle' AND a.state_change < now() - make_interval(secs => $3)
"""


class PostgresLease:
    """A session-level advisory lock on a connection of its own."""

    shared = True

    def __init__(
        self,
        url: str,
        name: str,
        *,
        connect_timeout: float = 3.0,
        confirm_timeout: float = 2.0,
        backoff_cap: float = 2.0,
        stale_after: float = 1.5,
    ) -> None:
        self.name = name
        self.key = lease_key(name)
        self._dsn = _asyncpg_dsn(url)
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._backoff_cap = backoff_cap
        self.stale_after = stale_after
        self._conn: asyncpg.Connection | None = None
        self._held = False

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={
                "application_name": f"callrouter lease {self.name}"[:63],
                "lock_timeout": _LOCK_WAIT,
                **_KEEPALIVES,
            },
        )
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()  # no goodbye: the session (and the lock) just ends

    async def acquire(self) -> None:
        attempt = 0
        while True:
            try:
                conn = self._conn or await self._connect()
                attempt = 0
                try:
                    await conn.execute("SELECT pg_advisory_lock($1)", self.key)
                except asyncpg.LockNotAvailableError:
                    await self._end_stale_holder(conn)  # then ask again
                    continue
            except _DB_ERRORS as exc:
                await self._drop()
                delay = backoff_delay(attempt, base=0.1, cap=self._backoff_cap, rand=0.5)
                attempt += 1
                if attempt == 1:
                    log.warning("lease %s: cannot reach the database: %s", self.name, exc)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                await self._drop()  # cancelled mid-wait: never hold the lock unknowingly
                raise
            self._held = True
            return

    async def _end_stale_holder(self, conn: asyncpg.Connection) -> None:
        ended = await conn.fetch(
            _STALE_HOLDER,
            *key_halves(self.key),
            self.stale_after,
        )
        if ended:
            log.warning(
                "lease %s: its holder has not confirmed it for over %.1f s; its session was ended",
                self.name,
                self.stale_after,
            )

    async def confirm(self) -> bool | None:
        conn = self._conn
        if conn is not None and self._held:
            try:
                await conn.fetchval("SELECT 1", timeout=self._confirm_timeout)
                return True  # the session lives, so does its lock
            except _DB_ERRORS:
                await self._drop()
        # The session is gone, and the lock with it: take it again if nobody else has.
        try:
            conn = await self._connect()
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self.key, timeout=self._confirm_timeout
            )
        except _DB_ERRORS:
            await self._drop()
            return None
        if got:
            self._held = True
            return True
        await self._drop()
        return False

    async def standby_waiting(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND objsubid = 1 AND classid::text::bigint = $1 AND objid::text::bigint = $2",
                *key_halves(self.key),
                timeout=self._confirm_timeout,
            )
        except _DB_ERRORS:
            return False
        return bool(waiting)

    async def release(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)  # ends the session: lock freed
            if not conn.is_closed():
                conn.terminate()


class FileLease:
    """One router per SQLite database: an exclusive ``flock`` on ``PATH.router-lock``."""

    shared = False

    def __init__(self, database: Path) -> None:
        self.name = str(database)
        self.path = database.with_name(database.name + ".router-lock")
        self._fd: int | None = None

    async def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LeaseRefused(
                f"another callrouter serve (pid {holder}) already routes for the SQLite "
                f"directory {self.name}: SQLite takes one router per database. For active "
                "and standby routers, give them a PostgreSQL directory (CALLROUTER_DB="
                "postgresql://…)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    async def confirm(self) -> bool | None:
        return True

    async def standby_waiting(self) -> bool:
        return False  # one router per database

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops the lock
