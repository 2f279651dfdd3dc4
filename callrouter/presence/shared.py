"""Client statuses and heartbeats in the directory database, shared by every router.

A client app may reach any router (the API is served by all of them), and the call
may be routed by another: so a client's status (online, away, dnd) and its expiry
(the heartbeat time-out) are rows of ``client_statuses``, one per user and client,
and every router merges the rows into its in-memory tracker.  Routing reads only the
tracker; the database is read when a change is announced (PostgreSQL ``NOTIFY``,
``directory/changes.py``), after this router's own writes, and by a poll (the only
way on SQLite, where one router serves one database anyway).

Expiry is stored as wall-clock time (UTC), since routers share no monotonic clock,
and turned into the tracker's monotonic time when read: the routers' clocks must
agree to well within the time-out (NTP does).

Heartbeats write only when they move the stored expiry by more than
``HEARTBEAT_WRITE_SLACK`` of the time-out (a status change always writes): with
clients beating every few seconds that is one write per client per ``slack x
time-out`` instead of one per beat.  The price: every router keeps the expiry as
stored, so a client whose beats stop lapses up to ``slack x time-out`` sooner than
one time-out after its last beat (9 s of 90 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import DatabaseError, begin_write
from callrouter.domain.presence import ClientStatus

# A heartbeat is written when it moves the stored expiry by more than this share of
# the heartbeat time-out (see the module's docstring for the trade-off).
HEARTBEAT_WRITE_SLACK = 0.1

# extension -> client id -> (status, expires: monotonic)
Clients = dict[str, dict[str, tuple[ClientStatus, float]]]


class ClientStatusStore:
    """Reads and writes ``client_statuses``; times converted to the caller's monotonic clock."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        heartbeat_timeout: float,
        slack: float = HEARTBEAT_WRITE_SLACK,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.heartbeat_timeout = heartbeat_timeout
        self.slack = slack
        self.clock = clock
        self.wall_clock = wall_clock
        self.writes = 0  # rows written or deleted by this router (tests, benchmark)

    def needs_write(self, status: ClientStatus, known: tuple[ClientStatus, float] | None) -> bool:
        """Whether a report of ``status`` must be stored, given what is stored now
        (``known``: status and expiry as the tracker holds them; None: no row)."""
        # Offline always deletes: another router's row may not have reached this one yet.
        if known is None or status is ClientStatus.OFFLINE or status is not known[0]:
            return True
        moved = self.clock() + self.heartbeat_timeout - known[1]
        return moved > self.slack * self.heartbeat_timeout

    async def write(self, extension: str, client_id: str, status: ClientStatus) -> None:
        """Store one client's status with a fresh expiry (``offline``: delete its row);
        rows already expired go with the same transaction.  Raises ``DatabaseError``
        with nothing written when the database refuses or cannot be reached."""
        now = self.wall_clock()
        table = s.client_statuses
        try:
            async with self._begin() as conn:
                await conn.execute(delete(table).where(table.c.expires_at <= now))
                if status is ClientStatus.OFFLINE:
                    await conn.execute(
                        delete(table).where(
                            table.c.extension == extension, table.c.client_id == client_id
                        )
                    )
                else:
                    await self._upsert(
                        conn,
                        extension=extension,
                        client_id=client_id,
                        status=status.value,
                        expires_at=now + timedelta(seconds=self.heartbeat_timeout),
                    )
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(
                f"client status of {extension} not stored, the directory database failed: "
                f"{type(exc).__name__}; try again"
            ) from exc
        self.writes += 1

    async def read(self, extensions: Collection[str] | None = None) -> Clients:
        """The live client statuses of ``extensions`` (None: everyone's)."""
        table = s.client_statuses
        now = self.wall_clock()
        query = select(table.c.extension, table.c.client_id, table.c.status, table.c.expires_at)
        query = query.where(table.c.expires_at > now)
        if extensions is not None:
            query = query.where(table.c.extension.in_(sorted(extensions)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        base = self.clock()
        found: Clients = {}
        for row in rows:
            try:
                status = ClientStatus(row.status)
            except ValueError:  # the table's check constraint keeps others out
                continue
            remaining = (row.expires_at - now).total_seconds()
            found.setdefault(row.extension, {})[row.client_id] = (status, base + remaining)
        return found

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        # SQLite: queue for the write lock like every other writer.  PostgreSQL: a
        # plain transaction; the directory's revision lock is not needed for a row
        # nobody else's change depends on.
        if self.engine.url.get_backend_name() == "sqlite":
            return begin_write(self.engine)
        return self.engine.begin()

    async def _upsert(self, conn: AsyncConnection, **values: object) -> None:
        table = s.client_statuses
        backend = self.engine.url.get_backend_name()
        insert = postgresql.insert if backend == "postgresql" else sqlite.insert
        statement = insert(table).values(**values)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.extension, table.c.client_id],
                set_={
                    "status": statement.excluded.status,
                    "expires_at": statement.excluded.expires_at,
                },
            )
        )
