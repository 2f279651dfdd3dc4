"""The users' own forwardings and switches in the directory database, changed
atomically and audited.

Each change is one write transaction (``begin_write``, serialised against every
other writer, so two changes for one user at once happen one after the other): the
row is replaced or deleted, the audit entry written and the directory revision
bumped with ``content=False`` (personal, like a login: routers reload only the
logins and these, ``callrouter.directory.snapshot.load_personal``).  What the rules
allow is checked before, by ``PersonalService``; what only the database knows (the
user, the target extension) is checked here, under the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.audit import AuditEntry, write_audit
from callrouter.directory.database import begin_write
from callrouter.directory.errors import DirectoryError
from callrouter.directory.revisions import bump_revision, current_revision
from callrouter.directory.users import user_id_of
from callrouter.domain.endpoint import is_external_number


class UnknownTarget(DirectoryError):
    """A forwarding to an extension that is nobody's."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"no user has extension {target}")


@dataclass(frozen=True, slots=True)
class ForwardChange:
    extension: str
    kind: str
    old: str | None  # the target before (None: not forwarded)
    new: str | None  # the target now (None: cleared)
    revision: int

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass(frozen=True, slots=True)
class SwitchChange:
    extension: str
    switch: str
    was_on: bool
    on: bool
    revision: int

    @property
    def changed(self) -> bool:
        return self.was_on != self.on


async def _forwards_of(conn: AsyncConnection, user_id: int) -> dict[str, str]:
    f = s.user_forwards
    rows = await conn.execute(select(f.c.kind, f.c.target).where(f.c.user_id == user_id))
    return {str(kind): str(target) for kind, target in rows.all()}


def _detail(kind: str, old: str | None, new: str | None) -> str:
    return f"{kind}: {old or 'not forwarded'} -> {new or 'not forwarded'}"


async def set_forward(
    engine: AsyncEngine,
    extension: str,
    kind: str,
    target: str | None,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> ForwardChange:
    """Forward ``extension``'s calls of ``kind`` to ``target`` (None: clear that kind).

    An extension as the target must be a user's (``UnknownTarget``), checked under
    the write lock; setting what is already set changes nothing.
    """
    at = now or datetime.now(UTC)
    f = s.user_forwards
    async with begin_write(engine) as conn:
        user_id = await user_id_of(conn, extension)
        old = (await _forwards_of(conn, user_id)).get(kind)
        if old == target:
            return ForwardChange(extension, kind, old, target, await current_revision(conn))
        if target is not None and not is_external_number(target):
            u = s.users
            found = (await conn.execute(select(u.c.id).where(u.c.extension == target))).scalar()
            if found is None:
                raise UnknownTarget(target)
        await conn.execute(delete(f).where(f.c.user_id == user_id, f.c.kind == kind))
        if target is not None:
            await conn.execute(
                insert(f).values(user_id=user_id, kind=kind, target=target, since=at)
            )
        action = "forward" if target is not None else "unforward"
        await write_audit(
            conn,
            [AuditEntry(action, extension, None, None, _detail(kind, old, target))],
            at=at,
            actor=actor,
            source=source,
        )
        revision = await bump_revision(conn, content=False)
    return ForwardChange(extension, kind, old, target, revision)


async def clear_forwards(
    engine: AsyncEngine,
    extension: str,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> list[ForwardChange]:
    """Clear every own forwarding of ``extension`` (one transaction, each audited)."""
    at = now or datetime.now(UTC)
    f = s.user_forwards
    async with begin_write(engine) as conn:
        user_id = await user_id_of(conn, extension)
        old = await _forwards_of(conn, user_id)
        if not old:
            return []
        await conn.execute(delete(f).where(f.c.user_id == user_id))
        await write_audit(
            conn,
            [
                AuditEntry("unforward", extension, None, None, _detail(kind, target, None))
                for kind, target in sorted(old.items())
            ],
            at=at,
            actor=actor,
            source=source,
        )
        revision = await bump_revision(conn, content=False)
    return [ForwardChange(extension, kind, target, None, revision) for kind, target in old.items()]


async def set_switch(
    engine: AsyncEngine,
    extension: str,
    switch: str,
    on: bool | None,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> SwitchChange:
    """Turn ``extension``'s switch on or off (None: the other way round than now)."""
    at = now or datetime.now(UTC)
    so = s.switches_off
    async with begin_write(engine) as conn:
        user_id = await user_id_of(conn, extension)
        row = (
            await conn.execute(
                select(so.c.user_id).where(so.c.user_id == user_id, so.c.switch == switch)
            )
        ).first()
        was_on = row is None
        wanted = (not was_on) if on is None else on
        if wanted == was_on:
            return SwitchChange(extension, switch, was_on, wanted, await current_revision(conn))
        if wanted:
            await conn.execute(delete(so).where(so.c.user_id == user_id, so.c.switch == switch))
        else:
            await conn.execute(insert(so).values(user_id=user_id, switch=switch, since=at))
        await write_audit(
            conn,
            [
                AuditEntry(
                    "switch_on" if wanted else "switch_off",
                    extension,
                    None,
                    None,
                    f"switch {switch}: {'on' if wanted else 'off'}",
                )
            ],
            at=at,
            actor=actor,
            source=source,
        )
        revision = await bump_revision(conn, content=False)
    return SwitchChange(extension, switch, was_on, wanted, revision)
