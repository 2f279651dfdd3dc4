"""Importing the admin's directory file (``callrouter directory import FILE``).

``import_document`` makes the database say what a ``DirectoryDocument`` says, in
one transaction (all or nothing).  It is idempotent, PIN hashes included, and
bumps the directory revision only when it changed something.  The write runs
inside ``begin_write`` (serialised against all other writers) and bumps the
revision in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.audit import AuditEntry, write_audit
from callrouter.directory.database import begin_read, begin_write
from callrouter.directory.document import DirectoryDocument, UserEntry
from callrouter.directory.errors import ImportRejected, integrity_problem
from callrouter.directory.pins import hashes_to_store, is_pin_hash
from callrouter.directory.revisions import bump_revision, current_revision
from callrouter.directory.state import State, read_state
from callrouter.domain import identifiers as ids
from callrouter.domain.endpoint import endpoint_problem
from callrouter.domain.identifiers import PIN_PATTERN

# SQLite's limit on bound parameters is 32766; stay well below it for IN (...) lists.
_CHUNK = 500


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
    problems = _document_problems(doc)
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


# --- the document on its own ----------------------------------------------------------


def _document_problems(doc: DirectoryDocument) -> list[str]:
    """What makes ``doc`` unusable on its own.

    ``DirectoryDocument`` and ``check_document`` catch all of this with file
    positions first; this is the store's own guard, so that a document built in
    code cannot put the database into a state the schema cannot express.
    """
    problems: list[str] = []

    def once(kind: str, values: Iterable[str]) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                problems.append(f"{kind} {value} appears twice")
            seen.add(value)

    once("role", (r.name for r in doc.roles))
    once("extension", (u.extension for u in doc.users))
    once("workplace", (w.id for w in doc.workplaces))
    once("workplace code", (w.code for w in doc.workplaces))
    once("phone", _named_phones(doc))
    once("login workplace", doc.logins.values())
    for endpoint in _named_phones(doc):
        problem = endpoint_problem(endpoint)
        if problem is not None:
            problems.append(problem)
    for user in doc.users:
        if user.pin is not None and user.pin_hash is not None:
            problems.append(f"user {user.extension}: give either pin or pin_hash, not both")
        elif user.pin is not None and not PIN_PATTERN.fullmatch(user.pin):
            problems.append(f"user {user.extension}: the PIN must be 4 to 12 digits")
        elif user.pin_hash is not None and not is_pin_hash(user.pin_hash):
            problems.append(f"user {user.extension}: pin_hash is not a callrouter PIN hash")
    lengths = [
        *(
            (f"user {u.extension}", "extension", u.extension, ids.EXTENSION_LENGTH)
            for u in doc.users
        ),
        *((f"user {u.extension}", "name", u.name, ids.NAME_LENGTH) for u in doc.users),
        *((f"role {r.name}", "name", r.name, ids.ROLE_NAME_LENGTH) for r in doc.roles),
        *((f"workplace {w.id}", "id", w.id, ids.WORKPLACE_ID_LENGTH) for w in doc.workplaces),
        *((f"workplace {w.id}", "name", w.name, ids.NAME_LENGTH) for w in doc.workplaces),
        *((f"workplace {w.id}", "code", w.code, ids.WORKPLACE_CODE_LENGTH) for w in doc.workplaces),
        *(("phone", "endpoint", e, ids.ENDPOINT_LENGTH) for e in _named_phones(doc)),
    ]
    for owner, what, value, limit in lengths:
        if len(value) > limit:
            problems.append(f"{owner}: the {what} is longer than {limit} characters")
    return problems


def _named_phones(doc: DirectoryDocument) -> Iterable[str]:
    for user in doc.users:
        yield from user.phones
    for workplace in doc.workplaces:
        yield from workplace.phones
    yield from doc.phones


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
    return None if row is None else row[3]


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _delete_ids(conn: AsyncConnection, table: Table, ids: Sequence[int]) -> None:
    for chunk in _chunks(sorted(ids)):
        await conn.execute(delete(table).where(table.c.id.in_(chunk)))


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
        # Filled in as apply() goes along.
        self.role_ids: dict[str, int] = {}
        self.workplace_ids: dict[str, int] = {}
        self.user_ids: dict[str, int] = {}
        self.updated_roles: set[int] = set()
        self.current_logins: dict[str, str] = {}  # extension -> workplace, before
        self.final_logins: dict[str, str] = {}  # extension -> workplace, after

    # The entries that exist once the import is done.
    def _role_exists(self, name: str) -> bool:
        return name in self.doc_roles or (not self.prune and name in self.state.roles)

    def _workplace_exists(self, slug: str) -> bool:
        return slug in self.doc_workplaces or (not self.prune and slug in self.state.workplaces)

    def _user_exists(self, extension: str) -> bool:
        return extension in self.doc_users or (not self.prune and extension in self.state.users)

    def check_references(self) -> None:
        add = self.problems.append
        for role in self.doc.roles:
            for slug in role.workplaces or ():
                if not self._workplace_exists(slug):
                    add(f"role {role.name}: unknown workplace {slug}")
        for user in self.doc.users:
            if user.role is not None and not self._role_exists(user.role):
                add(f"user {user.extension}: unknown role {user.role}")
        for extension, slug in self.doc.logins.items():
            if not self._user_exists(extension):
                add(f"logins: unknown extension {extension}")
            if not self._workplace_exists(slug):
                add(f"logins: {extension} at unknown workplace {slug}")
        if self.prune:
            return
        # Entries the file does not name stay, and keep their codes and extensions.
        codes = {w.code: w.id for w in self.doc.workplaces}
        remedy = "change one of them, or import with --prune to remove it"
        for slug, (_, _, code) in self.state.workplaces.items():
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
        await self._prune_phones_users_workplaces()
        await self._upsert_roles()
        await self._upsert_workplaces()
        await self._set_role_workplaces()
        await self._upsert_users()
        await self._prune_roles()
        await self._set_phones()
        audit += await self._start_logins(at, source)
        return audit

    # -- logins, part 1: work out the final state; end the logins that change
    def _final_logins(self) -> tuple[dict[str, str], dict[str, str]]:
        """(extension -> workplace after the import, extension -> who displaced them)."""
        user_ext = {row[0]: ext for ext, row in self.state.users.items()}
        workplace_slug = {row[0]: slug for slug, row in self.state.workplaces.items()}
        displaced_by: dict[str, str] = {}
        if self.prune:
            final = dict(self.doc.logins)
        else:
            final = {
                user_ext[user_id]: workplace_slug[workplace_id]
                for user_id, (workplace_id, _) in self.state.logins.items()
            }
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
        self.final_logins, displaced_by = self._final_logins()
        user_ext = {row[0]: ext for ext, row in self.state.users.items()}
        workplace_slug = {row[0]: slug for slug, row in self.state.workplaces.items()}
        self.current_logins = {
            user_ext[user_id]: workplace_slug[workplace_id]
            for user_id, (workplace_id, _) in self.state.logins.items()
        }
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
                audit.append(
                    AuditEntry(
                        "displaced",
                        extension,
                        slug,
                        None,
                        f"displaced by {displaced_by[extension]}",
                    )
                )
            else:
                audit.append(AuditEntry("logout", extension, slug, None, "not in the import file"))
        for chunk in _chunks(sorted(ended)):
            await self.conn.execute(delete(s.logins).where(s.logins.c.user_id.in_(chunk)))
        return audit

    # -- deletions (--prune) of entries the file does not name
    async def _prune_phones_users_workplaces(self) -> None:
        if not self.prune:
            return
        named = set(_named_phones(self.doc))
        gone_phones = [row[0] for ep, row in self.state.phones.items() if ep not in named]
        gone_users = [row[0] for ext, row in self.state.users.items() if ext not in self.doc_users]
        gone_workplaces = [
            row[0] for slug, row in self.state.workplaces.items() if slug not in self.doc_workplaces
        ]
        await _delete_ids(self.conn, s.phones, gone_phones)
        await _delete_ids(self.conn, s.users, gone_users)
        await _delete_ids(self.conn, s.workplaces, gone_workplaces)
        self.report.phones.deleted += len(gone_phones)
        self.report.users.deleted += len(gone_users)
        self.report.workplaces.deleted += len(gone_workplaces)

    async def _prune_roles(self) -> None:
        if not self.prune:
            return
        gone = [row[0] for name, row in self.state.roles.items() if name not in self.doc_roles]
        await _delete_ids(self.conn, s.roles, gone)  # role_workplaces cascade
        self.report.roles.deleted += len(gone)

    # -- roles
    async def _upsert_roles(self) -> None:
        r = s.roles
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for role in self.doc.roles:
            restricted = role.workplaces is not None
            existing = self.state.roles.get(role.name)
            if existing is None:
                new.append({"name": role.name, "restricted": restricted})
            elif existing[1] != restricted:
                changed.append({"_id": existing[0], "_restricted": restricted})
        if changed:
            await self.conn.execute(
                update(r)
                .where(r.c.id == bindparam("_id"))
                .values(restricted=bindparam("_restricted")),
                changed,
            )
        if new:
            await self.conn.execute(insert(r), new)
        self.report.roles.created += len(new)
        self.role_ids = {name: row[0] for name, row in self.state.roles.items()}
        if new:
            self.role_ids = dict((await self.conn.execute(select(r.c.name, r.c.id))).tuples().all())
        # Counted as updated once, whether the flag or the workplace list changed.
        self.updated_roles = {row["_id"] for row in changed}

    # -- workplaces
    async def _upsert_workplaces(self) -> None:
        w = s.workplaces
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        recoded: list[dict[str, Any]] = []
        for workplace in self.doc.workplaces:
            existing = self.state.workplaces.get(workplace.id)
            if existing is None:
                new.append({"slug": workplace.id, "name": workplace.name, "code": workplace.code})
                continue
            id_, name, code = existing
            if (name, code) != (workplace.name, workplace.code):
                changed.append({"_id": id_, "_name": workplace.name, "_code": workplace.code})
            if code != workplace.code:
                # Codes may swap between workplaces: move them out of the way first.
                recoded.append({"_id": id_, "_code": f"~{id_}"})
        if recoded:
            await self.conn.execute(
                update(w).where(w.c.id == bindparam("_id")).values(code=bindparam("_code")),
                recoded,
            )
        if changed:
            await self.conn.execute(
                update(w)
                .where(w.c.id == bindparam("_id"))
                .values(name=bindparam("_name"), code=bindparam("_code")),
                changed,
            )
        if new:
            await self.conn.execute(insert(w), new)
        self.report.workplaces.created += len(new)
        self.report.workplaces.updated += len(changed)
        self.workplace_ids = {slug: row[0] for slug, row in self.state.workplaces.items()}
        if new:
            self.workplace_ids = dict(
                (await self.conn.execute(select(w.c.slug, w.c.id))).tuples().all()
            )

    async def _set_role_workplaces(self) -> None:
        rw = s.role_workplaces
        added: list[dict[str, Any]] = []
        removed: list[dict[str, Any]] = []
        for role in self.doc.roles:
            role_id = self.role_ids[role.name]
            want = {self.workplace_ids[slug] for slug in role.workplaces or ()}
            have = self.state.role_workplaces.get(role_id, set())
            if role.name not in self.state.roles:
                have = set()
            added += ({"role_id": role_id, "workplace_id": wid} for wid in sorted(want - have))
            removed += ({"_role": role_id, "_workplace": wid} for wid in sorted(have - want))
            if want != have and role.name in self.state.roles:
                self.updated_roles.add(role_id)
        if removed:
            await self.conn.execute(
                delete(rw).where(
                    rw.c.role_id == bindparam("_role"), rw.c.workplace_id == bindparam("_workplace")
                ),
                removed,
            )
        if added:
            await self.conn.execute(insert(rw), added)
        self.report.roles.updated += len(self.updated_roles)

    # -- users
    def _pin_hash(self, user: UserEntry) -> str | None:
        if user.pin is not None:
            return self.pin_hashes[user.extension]
        return user.pin_hash

    async def _upsert_users(self) -> None:
        u = s.users
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for user in self.doc.users:
            role_id = None if user.role is None else self.role_ids[user.role]
            pin_hash = self._pin_hash(user)
            existing = self.state.users.get(user.extension)
            if existing is None:
                new.append(
                    {
                        "extension": user.extension,
                        "name": user.name,
                        "role_id": role_id,
                        "pin_hash": pin_hash,
                    }
                )
            elif existing[1:] != (user.name, role_id, pin_hash):
                changed.append(
                    {"_id": existing[0], "_name": user.name, "_role": role_id, "_pin": pin_hash}
                )
        if changed:
            await self.conn.execute(
                update(u)
                .where(u.c.id == bindparam("_id"))
                .values(
                    name=bindparam("_name"),
                    role_id=bindparam("_role"),
                    pin_hash=bindparam("_pin"),
                ),
                changed,
            )
        if new:
            await self.conn.execute(insert(u), new)
        self.report.users.created += len(new)
        self.report.users.updated += len(changed)
        self.user_ids = {ext: row[0] for ext, row in self.state.users.items()}
        if new:
            self.user_ids = dict(
                (await self.conn.execute(select(u.c.extension, u.c.id))).tuples().all()
            )

    # -- phones
    def _final_owners(self) -> dict[str, tuple[int | None, int | None]]:
        """endpoint -> (user id, workplace id) for every phone whose owner the file decides."""
        owners: dict[str, tuple[int | None, int | None]] = {}
        # Phones of entries the file names but no longer lists there become unassigned.
        doc_user_ids = {self.user_ids[ext] for ext in self.doc_users}
        doc_workplace_ids = {self.workplace_ids[slug] for slug in self.doc_workplaces}
        for endpoint, (_, user_id, workplace_id) in self.state.phones.items():
            if user_id in doc_user_ids or workplace_id in doc_workplace_ids:
                owners[endpoint] = (None, None)
        for user in self.doc.users:
            for endpoint in user.phones:
                owners[endpoint] = (self.user_ids[user.extension], None)
        for workplace in self.doc.workplaces:
            for endpoint in workplace.phones:
                owners[endpoint] = (None, self.workplace_ids[workplace.id])
        for endpoint in self.doc.phones:
            owners[endpoint] = (None, None)
        return owners

    async def _set_phones(self) -> None:
        p = s.phones
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        named = set(_named_phones(self.doc))
        for endpoint, (user_id, workplace_id) in sorted(self._final_owners().items()):
            existing = self.state.phones.get(endpoint)
            if existing is None:
                new.append({"endpoint": endpoint, "user_id": user_id, "workplace_id": workplace_id})
            elif self.prune and endpoint not in named:
                continue  # deleted already
            elif existing[1:] != (user_id, workplace_id):
                changed.append({"_id": existing[0], "_user": user_id, "_workplace": workplace_id})
        if changed:
            # One statement per phone sets both columns: a phone moving from a user to
            # a workplace never has two owners, even for a moment.
            await self.conn.execute(
                update(p)
                .where(p.c.id == bindparam("_id"))
                .values(user_id=bindparam("_user"), workplace_id=bindparam("_workplace")),
                changed,
            )
        if new:
            await self.conn.execute(insert(p), new)
        self.report.phones.created += len(new)
        self.report.phones.updated += len(changed)

    # -- logins, part 2: start the new ones
    async def _start_logins(self, at: datetime, source: str) -> list[AuditEntry]:
        rows: list[dict[str, Any]] = []
        audit: list[AuditEntry] = []
        counts = self.report.logins
        for extension, slug in sorted(self.final_logins.items()):
            old = self.current_logins.get(extension)
            if old == slug:
                continue
            rows.append(
                {
                    "user_id": self.user_ids[extension],
                    "workplace_id": self.workplace_ids[slug],
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
