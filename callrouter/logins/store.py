"""The login state in the directory database: who sits where, changed atomically and audited.

Each change is one write transaction (``begin_write``, serialised against all
other writers): a login is decided by ``callrouter.logins.policy`` on what the
database holds at that moment, the change and its audit entries are written, and
the directory revision is bumped (``content=False``: routers reload only the
logins).  ``LoginService`` wraps these for the phone and the API (PINs, lockout,
telling the router at once); the admin's CLI calls them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.audit import AuditEntry, write_audit
from callrouter.directory.database import begin_read, begin_write
from callrouter.directory.errors import (
    DirectoryError,
    UnknownWorkplace,
    integrity_problem,
)
from callrouter.directory.revisions import bump_revision, current_revision
from callrouter.directory.users import user_id_of
from callrouter.domain.directory import Role
from callrouter.logins.policy import OccupiedPolicy, Refusal, login_refusal


class LoginRefused(DirectoryError):
    """A login the rules do not allow (the role, or an occupied workplace)."""

    def __init__(
        self, reason: Refusal, extension: str, workplace_id: str, occupant: str | None = None
    ) -> None:
        self.reason = reason
        self.extension = extension
        self.workplace_id = workplace_id
        self.occupant = occupant
        if reason is Refusal.NOT_ALLOWED:
            message = f"the role of {extension} does not allow workplace {workplace_id}"
        elif reason is Refusal.OCCUPIED:
            message = f"workplace {workplace_id} is occupied by {occupant}"
        else:
            message = f"login of {extension} at {workplace_id} refused: {reason}"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class LoginChange:
    """The outcome of ``set_login`` / ``clear_login``."""

    extension: str
    old_workplace: str | None
    new_workplace: str | None
    displaced: str | None  # the extension moved out of new_workplace, if any
    revision: int  # the directory revision after the change

    @property
    def changed(self) -> bool:
        return self.old_workplace != self.new_workplace


async def _login_of(conn: AsyncConnection, user_id: int) -> str | None:
    lg, w = s.logins, s.workplaces
    found = (
        await conn.execute(
            select(w.c.slug)
            .join_from(lg, w, lg.c.workplace_id == w.c.id)
            .where(lg.c.user_id == user_id)
        )
    ).scalar()
    return None if found is None else str(found)


async def _role_of(conn: AsyncConnection, user_id: int) -> Role | None:
    """The user's role as the login policy sees it (None: no role, anywhere allowed)."""
    u, r, rw, w = s.users, s.roles, s.role_workplaces, s.workplaces
    row = (
        await conn.execute(
            select(r.c.id, r.c.name, r.c.restricted)
            .join_from(u, r, u.c.role_id == r.c.id)
            .where(u.c.id == user_id)
        )
    ).first()
    if row is None:
        return None
    if not row.restricted:
        return Role(row.name)
    allowed = (
        await conn.execute(
            select(w.c.slug)
            .join_from(rw, w, rw.c.workplace_id == w.c.id)
            .where(rw.c.role_id == row.id)
        )
    ).scalars()
    return Role(row.name, frozenset(str(slug) for slug in allowed))


async def set_login(
    engine: AsyncEngine,
    extension: str,
    workplace_id: str,
    *,
    actor: str,
    source: str,
    policy: OccupiedPolicy = "displace",
    now: datetime | None = None,
) -> LoginChange:
    """Log the user in at the workplace (atomic, audited).

    The rules are checked inside the write transaction, against what the database
    holds at that moment: the user's role must allow the workplace (else
    ``LoginRefused``), and whoever is there now is moved out, or with
    ``policy="refuse"`` the login is refused.  The user's previous workplace, if
    any, is left.  Logging in where the user already is changes nothing.
    """
    at = now or datetime.now(UTC)
    lg, u, w = s.logins, s.users, s.workplaces
    try:
        async with begin_write(engine) as conn:
            user_id = await user_id_of(conn, extension)
            found = (await conn.execute(select(w.c.id).where(w.c.slug == workplace_id))).scalar()
            if found is None:
                raise UnknownWorkplace(workplace_id)
            target = int(found)
            occupant = (
                await conn.execute(
                    select(u.c.id, u.c.extension)
                    .join_from(lg, u, lg.c.user_id == u.c.id)
                    .where(lg.c.workplace_id == target)
                )
            ).first()
            refusal = login_refusal(
                extension,
                await _role_of(conn, user_id),
                workplace_id,
                None if occupant is None else occupant.extension,
                policy,
            )
            if refusal is not None:
                raise LoginRefused(
                    refusal,
                    extension,
                    workplace_id,
                    None if occupant is None else occupant.extension,
                )
            old = await _login_of(conn, user_id)
            if old == workplace_id:
                return LoginChange(extension, old, old, None, await current_revision(conn))
            entries: list[AuditEntry] = []
            displaced: str | None = None
            if occupant is not None:
                displaced = occupant.extension
                await conn.execute(delete(lg).where(lg.c.user_id == occupant.id))
                entries.append(
                    AuditEntry(
                        "displaced",
                        occupant.extension,
                        workplace_id,
                        None,
                        f"displaced by {extension}",
                    )
                )
            await conn.execute(delete(lg).where(lg.c.user_id == user_id))
            await conn.execute(
                insert(lg).values(user_id=user_id, workplace_id=target, since=at, source=source)
            )
            entries.append(AuditEntry("login", extension, old, workplace_id))
            await write_audit(conn, entries, at=at, actor=actor, source=source)
            revision = await bump_revision(conn, content=False)
    except IntegrityError as error:  # cannot happen while writers are serialised
        raise DirectoryError(integrity_problem(error)) from error
    return LoginChange(extension, old, workplace_id, displaced, revision)


async def clear_login(
    engine: AsyncEngine,
    extension: str,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> LoginChange:
    """Log the user out of their workplace (atomic, audited); a no-op if not logged in."""
    at = now or datetime.now(UTC)
    lg = s.logins
    async with begin_write(engine) as conn:
        user_id = await user_id_of(conn, extension)
        old = await _login_of(conn, user_id)
        if old is None:
            return LoginChange(extension, None, None, None, await current_revision(conn))
        await conn.execute(delete(lg).where(lg.c.user_id == user_id))
        await write_audit(
            conn, [AuditEntry("logout", extension, old, None)], at=at, actor=actor, source=source
        )
        revision = await bump_revision(conn, content=False)
    return LoginChange(extension, old, None, None, revision)


async def clear_workplace(
    engine: AsyncEngine,
    workplace_id: str,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> LoginChange | None:
    """Log out whoever is at the workplace (atomic, audited); None if nobody is."""
    at = now or datetime.now(UTC)
    lg, u, w = s.logins, s.users, s.workplaces
    async with begin_write(engine) as conn:
        found = (await conn.execute(select(w.c.id).where(w.c.slug == workplace_id))).scalar()
        if found is None:
            raise UnknownWorkplace(workplace_id)
        occupant = (
            await conn.execute(
                select(u.c.id, u.c.extension)
                .join_from(lg, u, lg.c.user_id == u.c.id)
                .where(lg.c.workplace_id == int(found))
            )
        ).first()
        if occupant is None:
            return None
        await conn.execute(delete(lg).where(lg.c.user_id == occupant.id))
        await write_audit(
            conn,
            [AuditEntry("logout", occupant.extension, workplace_id, None)],
            at=at,
            actor=actor,
            source=source,
        )
        revision = await bump_revision(conn, content=False)
    return LoginChange(occupant.extension, workplace_id, None, None, revision)


async def expire_logins(
    engine: AsyncEngine,
    cutoffs: Mapping[str, datetime],
    *,
    actor: str = "auto-logout",
    source: str = "router",
    now: datetime | None = None,
) -> list[LoginChange]:
    """End every login at a workplace in ``cutoffs`` that began before its cut-off.

    One transaction, audited as logouts; safe to run from several routers at once
    (a login already ended, or begun after the cut-off, is left alone).
    """
    if not cutoffs:
        return []
    at = now or datetime.now(UTC)
    lg, u, w = s.logins, s.users, s.workplaces
    query = (
        select(lg.c.user_id, u.c.extension, w.c.slug, lg.c.since)
        .join_from(lg, u, lg.c.user_id == u.c.id)
        .join(w, lg.c.workplace_id == w.c.id)
    )
    # A cheap read first: most sweeps find nothing and need no write lock.
    async with begin_read(engine) as conn:
        due = [
            row
            for row in (await conn.execute(query)).all()
            if row.slug in cutoffs and row.since < cutoffs[row.slug]
        ]
    if not due:
        return []
    changes: list[LoginChange] = []
    async with begin_write(engine) as conn:
        entries: list[AuditEntry] = []
        for row in (await conn.execute(query)).all():  # again, under the lock
            cutoff = cutoffs.get(row.slug)
            if cutoff is None or row.since >= cutoff:
                continue
            await conn.execute(delete(lg).where(lg.c.user_id == row.user_id))
            entries.append(
                AuditEntry(
                    "logout",
                    row.extension,
                    row.slug,
                    None,
                    f"automatic logout (login before {cutoff.isoformat()})",
                )
            )
        if not entries:
            return []
        await write_audit(conn, entries, at=at, actor=actor, source=source)
        revision = await bump_revision(conn, content=False)
    for entry in entries:
        changes.append(
            LoginChange(entry.extension or "", entry.old_workplace, None, None, revision)
        )
    return changes
