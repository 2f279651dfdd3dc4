"""A user's row by extension, inside the caller's transaction: what the logins' and
the personal settings' stores look up first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.directory import schema as s
from callrouter.directory.errors import UnknownExtension


async def user_id_of(conn: AsyncConnection, extension: str) -> int:
    """The row id of the user with ``extension``; UnknownExtension if there is none."""
    u = s.users
    found = (await conn.execute(select(u.c.id).where(u.c.extension == extension))).scalar()
    if found is None:
        raise UnknownExtension(extension)
    return int(found)
