"""Importing the admin's directory file (``callrouter directory import FILE``).

``import_document`` makes the database say what a ``DirectoryDocument`` says, in
one transaction (all or nothing).  It is idempotent, PIN hashes included, and
bumps the directory revision only when it changed something.

The document is checked as the loader checks a file (``document_problems``: its
values, and the names it gives twice), then against what only the database knows.
The rows are brought in line by one generic sync, run for each table of
``callrouter.directory.state``; the logins, which move people and are audited,
have their own two steps around it.  The write runs inside ``begin_write``
(serialised against all other writers) and bumps the revision in the same
transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.audit import AuditEntry, write_audit
from callrouter.directory.check import named_phones
from callrouter.directory.database import begin_read, begin_write
from callrouter.directory.document import DirectoryDocument, UserEntry
from callrouter.directory.errors import ImportRejected, integrity_problem
from callrouter.directory.loader import document_problems
from callrouter.directory.pins import hashes_to_store
from callrouter.directory.revisions import bump_revision, current_revision
from callrouter.directory.state import (
    PHONES,
    ROLES,
    USERS,
    WORKPLACES,
    Entity,
    State,
    read_state,
)

# SQLite's limit on bound parameters is 32766; stay well below it for IN (...) lists.
_CHUNK = 500
_PIN_HASH = USERS.columns.index("pin_hash")


@dataclass(slots=True)
class EntityCounts:
    created: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.deleted} deleted"


@dataclass(slots=True)
class ImportReport:
    """What an import changed, per kind of entry, and the revision it left."""

    roles: EntityCounts = field(default_factory=EntityCounts)
    users: EntityCounts = field(default_factory=EntityCounts)
    workplaces: EntityCounts = field(default_factory=EntityCounts)
    phones: EntityCounts = field(default_factory=EntityCounts)
    logins: EntityCounts = field(default_factory=EntityCounts)
    revision: int = 0  # the directory revision after the import

    @property
    def changed(self) -> bool:
        return any(counts.changed for _, counts in self.items())

    def items(self) -> list[tuple[str, EntityCounts]]:
        return [
            ("roles", self.roles),
            ("users", self.users),
            ("workplaces", self.workplaces),
            ("phones", self.phones),
            ("logins", self.logins),
        ]

    def __str__(self) -> str:
        if not self.changed:
            return f"no changes (revision {self.revision})"
        parts = [f"{name} {counts}" for name, counts in self.items() if counts.changed]
        return "; ".join(parts) + f" (revision {self.revision})"


async def import_document(
    engine: AsyncEngine,
    doc: DirectoryDocument,
    *,
    prune: bool,
    actor: str,
    source: str = "import",
    now: datetime | None = None,
) -> ImportReport:
    """Make the directory say what ``doc`` says, in one transaction.

    Entries the file names are created or brought in line with it (their phones,
    role and PIN included: a user without ``pin``/``pin_hash`` ends up without a
    PIN).  Entries it does not name are left alone, or deleted with ``prune``.
    Logins in the file are set (moving out whoever was at that workplace); with
    ``prune`` all other logins end.  Every login change is audited.

    Raises ImportRejected, with nothing written, for anything that cannot be
    imported, including what only the database knows (a code already used by a
    workplace the file does not name, a role the file does not define, ...).
    """
    problems = document_problems(doc)
    if problems:
        raise ImportRejected(problems)
    at = now or datetime.now(UTC)

    # Hash the plain PINs before taking the write lock: at a few ms each, a file
    # of thousands of users must not block logins on other routers meanwhile.
    with_pin = [user for user in doc.users if user.pin is not None]
    stored_before: dict[str, str | None] = {}
    if with_pin:
        async with begin_read(engine) as conn:
            u = s.users
            stored_before = dict(
                (await conn.execute(select(u.c.extension, u.c.pin_hash))).tuples().all()
            )
    pin_hashes = await _pin_hashes(with_pin, stored_before)

    try:
        async with begin_write(engine) as conn:
            state = await read_state(conn)
            # A PIN hash that changed since it was verified above: verify again.
            stale = [
                user
                for user in with_pin
                if _stored_pin(state, user.extension) != stored_before.get(user.extension)
            ]
            if stale:
                current = {user.extension: _stored_pin(state, user.extension) for user in stale}
                pin_hashes.update(await _pin_hashes(stale, current))
            importer = _Importer(conn, state, doc, prune=prune, pin_hashes=pin_hashes)
            importer.check_references()
            if importer.problems:
                raise ImportRejected(importer.problems)
            audit_entries = await importer.apply(at, source)
            report = importer.report
            if report.changed:
                await write_audit(conn, audit_entries, at=at, actor=actor, source=source)
                report.revision = await bump_revision(conn)
            else:
                report.revision = await current_revision(conn)
    except IntegrityError as error:
        raise ImportRejected([integrity_problem(error)]) from error
    return report


# --- PINs -----------------------------------------------------------------------------


async def _pin_hashes(
    users: Sequence[UserEntry], stored: Mapping[str, str | None]
) -> dict[str, str]:
    """extension -> the hash to store for each user's plain PIN (off the event loop)."""
    pairs = [(user.pin or "", stored.get(user.extension)) for user in users]
    hashes = await asyncio.to_thread(hashes_to_store, pairs)
    return {user.extension: hashed for user, hashed in zip(users, hashes, strict=True)}


def _stored_pin(state: State, extension: str) -> str | None:
    row = state.users.get(extension)
    return None if row is None else row[1][_PIN_HASH]


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- the difference between the database and the document -----------------------------


class _Importer:
    """Works out and applies the difference between the database and a document."""

    def __init__(
        self,
        conn: AsyncConnection,
        state: State,
        doc: DirectoryDocument,
        *,
        prune: bool,
        pin_hashes: Mapping[str, str],
    ) -> None:
        self.conn = conn
        self.state = state
        self.doc = doc
        self.prune = prune
        self.pin_hashes = pin_hashes
        self.problems: list[str] = []
        self.report = ImportReport()
        self.doc_roles = {role.name: role for role in doc.roles}
        self.doc_users = {user.extension: user for user in doc.users}
        self.doc_workplaces = {workplace.id: workplace for workplace in doc.workplaces}
        self.doc_phones = {endpoint for _, endpoint in named_phones(doc)}
        # Per table: what the file names (the rest goes with ``prune``), what it counts.
        self.named: dict[Entity, Container[str]] = {
            ROLES: self.doc_roles,
            WORKPLACES: self.doc_workplaces,
            USERS: self.doc_users,
            PHONES: self.doc_phones,
        }
        self.counts = {
            ROLES: self.report.roles,
            WORKPLACES: self.report.workplaces,
            USERS: self.report.users,
            PHONES: self.report.phones,
        }
        # Filled in as apply() goes along.
        self._inserted: set[Entity] = set()
        self._ids: dict[Entity, dict[str, int]] = {}  # key -> id, see _ids_of()
        self.current_logins: dict[str, str] = {}  # extension -> workplace, before
        self.final_logins: dict[str, str] = {}  # extension -> workplace, after

    # The entries that exist once the import is done.
    def _exists(self, entity: Entity, key: str) -> bool:
        return key in self.named[entity] or (not self.prune and key in self.state.rows[entity])

    def check_references(self) -> None:
        add = self.problems.append
        for role in self.doc.roles:
            for slug in role.workplaces or ():
                if not self._exists(WORKPLACES, slug):
                    add(f"role {role.name}: unknown workplace {slug}")
        for user in self.doc.users:
            if user.role is not None and not self._exists(ROLES, user.role):
                add(f"user {user.extension}: unknown role {user.role}")
        for extension, slug in self.doc.logins.items():
            if not self._exists(USERS, extension):
                add(f"logins: unknown extension {extension}")
            if not self._exists(WORKPLACES, slug):
                add(f"logins: {extension} at unknown workplace {slug}")
        if self.prune:
            return
        # Entries the file does not name stay, and keep their codes and extensions.
        codes = {w.code: w.id for w in self.doc.workplaces}
        remedy = "change one of them, or import with --prune to remove it"
        for slug, (_, (_, code)) in self.state.workplaces.items():
            if slug not in self.doc_workplaces and code in codes:
                add(
                    f"workplace {codes[code]}: code {code} is already the code of workplace "
                    f"{slug}, which the file does not name ({remedy})"
                )
            if slug not in self.doc_workplaces and code in self.doc_users:
                add(
                    f"user {code}: extension {code} is the dial code of workplace {slug}, "
                    f"which the file does not name ({remedy})"
                )
        for extension in self.state.users:
            if extension not in self.doc_users and extension in codes:
                add(
                    f"workplace {codes[extension]}: code {extension} is the extension of "
                    f"user {extension}, whom the file does not name ({remedy})"
                )

    async def apply(self, at: datetime, source: str) -> list[AuditEntry]:
        audit = await self._end_logins()
        if self.prune:
            # First, so that what they held (a workplace's code) is free for the file.
            for entity in (PHONES, USERS, WORKPLACES):
                await self._prune(entity)
        reflagged = await self._sync(ROLES, self._wanted_roles())
        await self._sync(WORKPLACES, self._wanted_workplaces())
        await self._sync_role_workplaces(counted=reflagged)
        await self._sync(USERS, await self._wanted_users())
        if self.prune:
            await self._prune(ROLES)  # only now that no user of the file has them
        await self._sync(PHONES, await self._wanted_phones())
        audit += await self._start_logins(at, source)
        return audit

    # -- the generic part: one table, the file's rows against the database's
    async def _prune(self, entity: Entity) -> None:
        """Delete the rows of ``entity`` the file does not name (cascading as the schema says)."""
        t, named = entity.table, self.named[entity]
        gone = [id_ for key, (id_, _) in self.state.rows[entity].items() if key not in named]
        for chunk in _chunks(sorted(gone)):
            await self.conn.execute(delete(t).where(t.c.id.in_(chunk)))
        self.counts[entity].deleted += len(gone)

    async def _sync(self, entity: Entity, wanted: Mapping[str, tuple[Any, ...]]) -> set[int]:
        """Insert or update ``entity``'s rows to ``wanted`` (key -> column values).

        Rows that are not wanted are left as they are.  Returns the ids of the
        rows updated.
        """
        t, have, columns = entity.table, self.state.rows[entity], entity.columns
        new: list[dict[str, Any]] = []
        changed: list[tuple[int, tuple[Any, ...], tuple[Any, ...]]] = []  # (id, old, new)
        for key, values in wanted.items():
            existing = have.get(key)
            if existing is None:
                new.append({entity.key: key, **dict(zip(columns, values, strict=True))})
            elif existing[1] != values:
                changed.append((existing[0], existing[1], values))
        by_id = t.c.id == bindparam("_id")
        for column in entity.parked:
            i = columns.index(column)
            # Move the values out of the way first, so that rows can swap them.
            moving = [{"_id": id_, "_v": f"~{id_}"} for id_, old, to in changed if old[i] != to[i]]
            if moving:
                await self.conn.execute(
                    update(t).where(by_id).values({column: bindparam("_v")}), moving
                )
        if changed:
            # One statement per row sets all its columns: a phone moving from a user
            # to a workplace never has two owners, even for a moment.
            await self.conn.execute(
                update(t).where(by_id).values({c: bindparam(f"_{c}") for c in columns}),
                [
                    {"_id": id_, **{f"_{c}": v for c, v in zip(columns, to, strict=True)}}
                    for id_, _, to in changed
                ],
            )
        if new:
            await self.conn.execute(insert(t), new)
            self._inserted.add(entity)
            self._ids.pop(entity, None)
        self.counts[entity].created += len(new)
        self.counts[entity].updated += len(changed)
        return {id_ for id_, _, _ in changed}

    async def _ids_of(self, entity: Entity) -> dict[str, int]:
        """key -> id of the rows of ``entity``; new rows too, once its ``_sync`` ran."""
        ids = self._ids.get(entity)
        if ids is None:
            t = entity.table
            if entity in self._inserted:  # new rows: only the database knows their ids
                rows = await self.conn.execute(select(t.c[entity.key], t.c.id))
                ids = dict(rows.tuples().all())
            else:
                ids = {key: id_ for key, (id_, _) in self.state.rows[entity].items()}
            self._ids[entity] = ids
        return ids

    # -- what the file wants, table by table, in the order of the entity's columns
    def _wanted_roles(self) -> dict[str, tuple[Any, ...]]:
        return {role.name: (role.workplaces is not None,) for role in self.doc.roles}

    def _wanted_workplaces(self) -> dict[str, tuple[Any, ...]]:
        return {w.id: (w.name, w.code) for w in self.doc.workplaces}

    async def _wanted_users(self) -> dict[str, tuple[Any, ...]]:
        role_ids = await self._ids_of(ROLES)
        return {
            user.extension: (
                user.name,
                None if user.role is None else role_ids[user.role],
                self.pin_hashes[user.extension] if user.pin is not None else user.pin_hash,
            )
            for user in self.doc.users
        }

    async def _wanted_phones(self) -> dict[str, tuple[Any, ...]]:
        """endpoint -> (user id, workplace id, node) for every phone whose owner the file
        decides; the file decides the node of each phone it names (none listed: NULL)."""
        user_ids, workplace_ids = await self._ids_of(USERS), await self._ids_of(WORKPLACES)
        node_of = {endpoint: node for node, phones in self.doc.nodes.items() for endpoint in phones}
        owners: dict[str, tuple[int | None, int | None, str | None]] = {}
        if not self.prune:  # with prune, the phones the file does not name are gone
            # Phones of entries the file names but no longer lists there: unassigned,
            # on the node they were on.
            doc_user_ids = {user_ids[ext] for ext in self.doc_users}
            doc_workplace_ids = {workplace_ids[slug] for slug in self.doc_workplaces}
            for endpoint, (_, (user_id, workplace_id, node)) in self.state.phones.items():
                if user_id in doc_user_ids or workplace_id in doc_workplace_ids:
                    owners[endpoint] = (None, None, node)
        for user in self.doc.users:
            for endpoint in user.phones:
                owners[endpoint] = (user_ids[user.extension], None, node_of.get(endpoint))
        for workplace in self.doc.workplaces:
            for endpoint in workplace.phones:
                owners[endpoint] = (None, workplace_ids[workplace.id], node_of.get(endpoint))
        for endpoint in self.doc.phones:
            owners[endpoint] = (None, None, node_of.get(endpoint))
        return dict(sorted(owners.items()))

    async def _sync_role_workplaces(self, *, counted: set[int]) -> None:
        """The workplaces each role of the file allows.

        A role is counted as updated once, whether its flag (``counted``, by
        ``_sync``) or its workplace list changed.
        """
        rw = s.role_workplaces
        role_ids, workplace_ids = await self._ids_of(ROLES), await self._ids_of(WORKPLACES)
        added: list[dict[str, Any]] = []
        removed: list[dict[str, Any]] = []
        relinked: set[int] = set()
        for role in self.doc.roles:
            role_id = role_ids[role.name]
            want = {workplace_ids[slug] for slug in role.workplaces or ()}
            existed = role.name in self.state.roles
            have = self.state.role_workplaces.get(role_id, set()) if existed else set()
            added += ({"role_id": role_id, "workplace_id": wid} for wid in sorted(want - have))
            removed += ({"_role": role_id, "_workplace": wid} for wid in sorted(have - want))
            if want != have and existed:
                relinked.add(role_id)
        if removed:
            await self.conn.execute(
                delete(rw).where(
                    rw.c.role_id == bindparam("_role"), rw.c.workplace_id == bindparam("_workplace")
                ),
                removed,
            )
        if added:
            await self.conn.execute(insert(rw), added)
        self.report.roles.updated += len(relinked - counted)

    # -- logins, part 1: work out the final state; end the logins that change
    def _final_logins(self) -> tuple[dict[str, str], dict[str, str]]:
        """(extension -> workplace after the import, extension -> who displaced them)."""
        displaced_by: dict[str, str] = {}
        if self.prune:
            final = dict(self.doc.logins)
        else:
            final = dict(self.current_logins)
            where = {slug: ext for ext, slug in final.items()}
            for extension, slug in self.doc.logins.items():
                occupant = where.get(slug)
                if occupant is not None and occupant != extension:
                    del final[occupant]
                    displaced_by[occupant] = extension
                previous = final.get(extension)
                if previous is not None:
                    del where[previous]
                final[extension] = slug
                where[slug] = extension
        return final, displaced_by

    async def _end_logins(self) -> list[AuditEntry]:
        user_ext = {id_: ext for ext, (id_, _) in self.state.users.items()}
        workplace_slug = {id_: slug for slug, (id_, _) in self.state.workplaces.items()}
        self.current_logins = {
            user_ext[user_id]: workplace_slug[workplace_id]
            for user_id, (workplace_id, _) in self.state.logins.items()
        }
        self.final_logins, displaced_by = self._final_logins()
        audit: list[AuditEntry] = []
        ended: list[int] = []
        counts = self.report.logins
        for extension, slug in sorted(self.current_logins.items()):
            new = self.final_logins.get(extension)
            if new == slug:
                continue
            ended.append(self.state.users[extension][0])
            if new is not None:
                continue  # a move: audited and counted when the new login starts
            counts.deleted += 1
            if extension in displaced_by:
                detail = f"displaced by {displaced_by[extension]}"
                audit.append(AuditEntry("displaced", extension, slug, None, detail))
            else:
                audit.append(AuditEntry("logout", extension, slug, None, "not in the import file"))
        for chunk in _chunks(sorted(ended)):
            await self.conn.execute(delete(s.logins).where(s.logins.c.user_id.in_(chunk)))
        return audit

    # -- logins, part 2: start the new ones
    async def _start_logins(self, at: datetime, source: str) -> list[AuditEntry]:
        user_ids, workplace_ids = await self._ids_of(USERS), await self._ids_of(WORKPLACES)
        rows: list[dict[str, Any]] = []
        audit: list[AuditEntry] = []
        counts = self.report.logins
        for extension, slug in sorted(self.final_logins.items()):
            old = self.current_logins.get(extension)
            if old == slug:
                continue
            rows.append(
                {
                    "user_id": user_ids[extension],
                    "workplace_id": workplace_ids[slug],
                    "since": at,
                    "source": source,
                }
            )
            audit.append(AuditEntry("login", extension, old, slug, "from the import file"))
            if old is None:
                counts.created += 1
            else:
                counts.updated += 1
        if rows:
            await self.conn.execute(insert(s.logins), rows)
        return audit
