"""The directory's change counters, the cheap query routers poll to learn what to reload.

``revision`` moves with every change, ``content_revision`` only with changes to
anything but the logins: a router that sees only ``revision`` move reloads just
the logins (``load_logins``).  Every write bumps them inside its own transaction
(``bump_revision``), so a reader never sees a change without its revision.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s


async def bump_revision(conn: AsyncConnection, *, content: bool = True) -> int:
    """Count one change of the directory, inside the caller's write transaction.

    ``content=False`` for changes to the logins alone.
    """
    rev = s.directory_revision
    values: dict[str, Any] = {"revision": rev.c.revision + 1}
    if content:
        values["content_revision"] = rev.c.revision + 1
    await conn.execute(update(rev).where(rev.c.id == 1).values(**values))
    return await current_revision(conn)


async def current_revision(conn: AsyncConnection) -> int:
    """``read_revision`` inside the caller's transaction."""
    rev = s.directory_revision
    value = (await conn.execute(select(rev.c.revision).where(rev.c.id == 1))).scalar_one()
    return int(value)


async def current_revisions(conn: AsyncConnection) -> tuple[int, int]:
    """``read_revisions`` inside the caller's transaction."""
    rev = s.directory_revision
    row = (
        await conn.execute(select(rev.c.revision, rev.c.content_revision).where(rev.c.id == 1))
    ).one()
    return int(row.revision), int(row.content_revision)


async def read_revision(engine: AsyncEngine) -> int:
    """The directory's change counter: when it moves, the snapshot is stale."""
    async with engine.connect() as conn:
        return await current_revision(conn)


async def read_revisions(engine: AsyncEngine) -> tuple[int, int]:
    """(revision, content_revision): what a router polls to know what to reload."""
    async with engine.connect() as conn:
        return await current_revisions(conn)
