"""Reading and writing the directory in SQL.

* ``import_document`` / ``export_document``: the admin's file in and out.  An import
  is one transaction (all or nothing), idempotent, and bumps the directory revision
  only when it changed something.
* ``load_snapshot``: the whole directory as the immutable ``DirectorySnapshot`` the
  router resolves calls from.  Built with a few Core queries straight into tuples
  and dicts (no ORM objects), so 100,000 users load in a second or two.
* ``read_revision``: the cheap query routers poll to learn that they must reload.
* ``set_login`` / ``clear_login``: the login state, atomic and audited.

Every write runs inside ``begin_write`` (serialised against all other writers, on
SQLite and PostgreSQL alike) and bumps ``directory_revision`` in the same
transaction.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import begin_read, begin_write
from callrouter.directory.document import (
    DirectoryDocument,
    RoleEntry,
    UserEntry,
    WorkplaceEntry,
)
from callrouter.directory.pins import hash_pin, is_pin_hash, verify_pin
from callrouter.domain import identifiers as ids
from callrouter.domain.directory import DirectorySnapshot, Role, User, Workplace
from callrouter.domain.endpoint import endpoint_problem
from callrouter.domain.identifiers import PIN_PATTERN
from callrouter.logins.policy import OccupiedPolicy, Refusal, login_refusal

# SQLite's limit on bound parameters is 32766; stay well below it for IN (...) lists.
_CHUNK = 500


# --- errors and results ------------------------------------------------------------


class DirectoryError(Exception):
    """A directory change that cannot be made; the message says why."""


class ImportRejected(DirectoryError):
    """The import was refused and nothing was written; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"import refused, nothing was written: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {problem}" for problem in self.problems)
            message = f"import refused, nothing was written:\n{listed}"
        super().__init__(message)


class UnknownExtension(DirectoryError):
    def __init__(self, extension: str) -> None:
        self.extension = extension
        super().__init__(f"no user has extension {extension}")


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


class UnknownWorkplace(DirectoryError):
    def __init__(self, workplace_id: str) -> None:
        self.workplace_id = workplace_id
        super().__init__(f"no workplace has the id {workplace_id!r}")


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


# --- small helpers -----------------------------------------------------------------


def _natural_key(value: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort "office-2" before "office-10" and "201" before "1000"."""
    parts = tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"([0-9]+)", value)
        if part
    )
    return parts, value


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _delete_ids(conn: AsyncConnection, table: Table, ids: Sequence[int]) -> None:
    for chunk in _chunks(sorted(ids)):
        await conn.execute(delete(table).where(table.c.id.in_(chunk)))


async def bump_revision(conn: AsyncConnection, *, content: bool = True) -> int:
    """Count one change of the directory, inside the caller's write transaction.

    ``content=False`` for changes to the logins alone.
    """
    rev = s.directory_revision
    values: dict[str, Any] = {"revision": rev.c.revision + 1}
    if content:
        values["content_revision"] = rev.c.revision + 1
    await conn.execute(update(rev).where(rev.c.id == 1).values(**values))
    return await _revision(conn)


async def _revisions(conn: AsyncConnection) -> tuple[int, int]:
    rev = s.directory_revision
    row = (
        await conn.execute(select(rev.c.revision, rev.c.content_revision).where(rev.c.id == 1))
    ).one()
    return int(row.revision), int(row.content_revision)


async def read_revisions(engine: AsyncEngine) -> tuple[int, int]:
    """(revision, content_revision): what a router polls to know what to reload."""
    async with engine.connect() as conn:
        return await _revisions(conn)


async def load_logins(engine: AsyncEngine) -> tuple[dict[str, str], int, int]:
    """Only the logins (extension -> workplace id), with the revisions they belong to."""
    lg, u, w = s.logins, s.users, s.workplaces
    async with begin_read(engine) as conn:
        revision, content_revision = await _revisions(conn)
        rows = (
            await conn.execute(
                select(u.c.extension, w.c.slug)
                .join_from(lg, u, lg.c.user_id == u.c.id)
                .join(w, lg.c.workplace_id == w.c.id)
            )
        ).all()
    return {str(e): sys.intern(str(slug)) for e, slug in rows}, revision, content_revision


async def _revision(conn: AsyncConnection) -> int:
    rev = s.directory_revision
    value = (await conn.execute(select(rev.c.revision).where(rev.c.id == 1))).scalar_one()
    return int(value)


async def read_revision(engine: AsyncEngine) -> int:
    """The directory's change counter: when it moves, the snapshot is stale."""
    async with engine.connect() as conn:
        return await _revision(conn)


# --- the state of the database, as plain values ------------------------------------


@dataclass(slots=True)
class _State:
    roles: dict[str, tuple[int, bool]]  # name -> (id, restricted)
    role_workplaces: dict[int, set[int]]  # role id -> workplace ids
    workplaces: dict[str, tuple[int, str, str]]  # slug -> (id, name, code)
    users: dict[str, tuple[int, str, int | None, str | None]]  # ext -> (id, name, role, pin)
    phones: dict[str, tuple[int, int | None, int | None]]  # endpoint -> (id, user, workplace)
    logins: dict[int, tuple[int, datetime]]  # user id -> (workplace id, since)


async def _read_state(conn: AsyncConnection) -> _State:
    roles = {
        name: (id_, bool(restricted))
        for id_, name, restricted in await conn.execute(
            select(s.roles.c.id, s.roles.c.name, s.roles.c.restricted)
        )
    }
    role_workplaces: dict[int, set[int]] = {}
    for role_id, workplace_id in await conn.execute(
        select(s.role_workplaces.c.role_id, s.role_workplaces.c.workplace_id)
    ):
        role_workplaces.setdefault(role_id, set()).add(workplace_id)
    w = s.workplaces
    workplaces = {
        slug: (id_, name, code)
        for id_, slug, name, code in await conn.execute(
            select(w.c.id, w.c.slug, w.c.name, w.c.code)
        )
    }
    u = s.users
    users = {
        extension: (id_, name, role_id, pin_hash)
        for id_, extension, name, role_id, pin_hash in await conn.execute(
            select(u.c.id, u.c.extension, u.c.name, u.c.role_id, u.c.pin_hash)
        )
    }
    p = s.phones
    phones = {
        endpoint: (id_, user_id, workplace_id)
        for id_, endpoint, user_id, workplace_id in await conn.execute(
            select(p.c.id, p.c.endpoint, p.c.user_id, p.c.workplace_id)
        )
    }
    lg = s.logins
    logins = {
        user_id: (workplace_id, since)
        for user_id, workplace_id, since in await conn.execute(
            select(lg.c.user_id, lg.c.workplace_id, lg.c.since)
        )
    }
    return _State(roles, role_workplaces, workplaces, users, phones, logins)


# --- import --------------------------------------------------------------------------


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


def _resolve_pins(pairs: Sequence[tuple[str, str | None]]) -> list[str]:
    """The hash to store for each (plain PIN, stored hash): the stored one if it matches.

    Keeping a matching hash makes re-importing the same file a no-op.  scrypt
    releases the GIL, so the work is spread over the CPUs.
    """

    def one(pair: tuple[str, str | None]) -> str:
        pin, stored = pair
        if stored is not None and verify_pin(pin, stored):
            return stored
        return hash_pin(pin)

    if len(pairs) < 4:
        return [one(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, pairs))


Owner = tuple[Literal["user", "workplace"], str] | None


@dataclass(slots=True)
class _Audit:
    action: str
    extension: str
    old_workplace: str | None
    new_workplace: str | None
    detail: str | None = None


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
            state = await _read_state(conn)
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
            audit_rows = await importer.apply(at, source)
            report = importer.report
            if report.changed:
                await _write_audit(conn, audit_rows, at=at, actor=actor, source=source)
                report.revision = await bump_revision(conn)
            else:
                report.revision = await _revision(conn)
    except IntegrityError as error:
        raise ImportRejected([_integrity_problem(error)]) from error
    return report


def _stored_pin(state: _State, extension: str) -> str | None:
    row = state.users.get(extension)
    return None if row is None else row[3]


async def _pin_hashes(
    users: Sequence[UserEntry], stored: Mapping[str, str | None]
) -> dict[str, str]:
    pairs = [(user.pin or "", stored.get(user.extension)) for user in users]
    hashes = await asyncio.to_thread(_resolve_pins, pairs)
    return {user.extension: hashed for user, hashed in zip(users, hashes, strict=True)}


_CONSTRAINT_MESSAGES = {
    "uq_users_extension": "an extension is already in use",
    "users.extension": "an extension is already in use",
    "uq_workplaces_code": "a workplace code is already used by another workplace",
    "workplaces.code": "a workplace code is already used by another workplace",
    "uq_workplaces_slug": "a workplace id is already in use",
    "workplaces.slug": "a workplace id is already in use",
    "uq_phones_endpoint": "a phone is already in the directory",
    "phones.endpoint": "a phone is already in the directory",
    "uq_logins_workplace_id": "a workplace would hold two users",
    "logins.workplace_id": "a workplace would hold two users",
    "uq_roles_name": "a role name is already in use",
    "roles.name": "a role name is already in use",
    "ck_phones_one_owner": "a phone would belong to a user and a workplace at once",
    "fk_users_role_id_roles": "a role that is removed is still some user's role",
    "foreign key": "an entry refers to something that is removed or does not exist",
}


def _integrity_problem(error: IntegrityError) -> str:
    text = str(error.orig).lower()
    for key, message in _CONSTRAINT_MESSAGES.items():
        if key.lower() in text:
            return f"{message} (the directory was probably changed meanwhile; try again)"
    return f"the database refused the change: {error.orig}"


class _Importer:
    """Works out and applies the difference between the database and a document."""

    def __init__(
        self,
        conn: AsyncConnection,
        state: _State,
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

    async def apply(self, at: datetime, source: str) -> list[_Audit]:
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

    async def _end_logins(self) -> list[_Audit]:
        self.final_logins, displaced_by = self._final_logins()
        user_ext = {row[0]: ext for ext, row in self.state.users.items()}
        workplace_slug = {row[0]: slug for slug, row in self.state.workplaces.items()}
        self.current_logins = {
            user_ext[user_id]: workplace_slug[workplace_id]
            for user_id, (workplace_id, _) in self.state.logins.items()
        }
        audit: list[_Audit] = []
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
                    _Audit(
                        "displaced",
                        extension,
                        slug,
                        None,
                        f"displaced by {displaced_by[extension]}",
                    )
                )
            else:
                audit.append(_Audit("logout", extension, slug, None, "not in the import file"))
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
    async def _start_logins(self, at: datetime, source: str) -> list[_Audit]:
        rows: list[dict[str, Any]] = []
        audit: list[_Audit] = []
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
            audit.append(_Audit("login", extension, old, slug, "from the import file"))
            if old is None:
                counts.created += 1
            else:
                counts.updated += 1
        if rows:
            await self.conn.execute(insert(s.logins), rows)
        return audit


async def _write_audit(
    conn: AsyncConnection, entries: Sequence[_Audit], *, at: datetime, actor: str, source: str
) -> None:
    if not entries:
        return
    await conn.execute(
        insert(s.audit),
        [
            {
                "at": at,
                "actor": actor,
                "source": source,
                "action": entry.action,
                "extension": entry.extension,
                "old_workplace": entry.old_workplace,
                "new_workplace": entry.new_workplace,
                "detail": entry.detail,
            }
            for entry in entries
        ],
    )


# --- export --------------------------------------------------------------------------


async def export_document(engine: AsyncEngine) -> DirectoryDocument:
    """The whole directory in the import format, sorted (the same database, the same file).

    PINs appear only as ``pin_hash``; importing the result changes nothing.
    """
    async with begin_read(engine) as conn:
        state = await _read_state(conn)
    role_name = {row[0]: name for name, row in state.roles.items()}
    slug_of = {row[0]: slug for slug, row in state.workplaces.items()}
    ext_of = {row[0]: ext for ext, row in state.users.items()}

    user_phones: dict[int, list[str]] = {}
    workplace_phones: dict[int, list[str]] = {}
    unassigned: list[str] = []
    for endpoint, (_, user_id, workplace_id) in state.phones.items():
        if user_id is not None:
            user_phones.setdefault(user_id, []).append(endpoint)
        elif workplace_id is not None:
            workplace_phones.setdefault(workplace_id, []).append(endpoint)
        else:
            unassigned.append(endpoint)

    def sorted_names(values: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(values, key=_natural_key))

    roles = [
        RoleEntry(
            name=name,
            workplaces=(
                sorted_names(slug_of[w] for w in state.role_workplaces.get(id_, ()))
                if restricted
                else None
            ),
        )
        for name, (id_, restricted) in sorted(state.roles.items(), key=lambda i: _natural_key(i[0]))
    ]
    users = [
        UserEntry(
            extension=ext,
            name=name,
            role=None if role_id is None else role_name[role_id],
            pin_hash=pin_hash,
            phones=sorted_names(user_phones.get(id_, ())),
        )
        for ext, (id_, name, role_id, pin_hash) in sorted(
            state.users.items(), key=lambda i: _natural_key(i[0])
        )
    ]
    workplaces = [
        WorkplaceEntry(
            id=slug, name=name, code=code, phones=sorted_names(workplace_phones.get(id_, ()))
        )
        for slug, (id_, name, code) in sorted(
            state.workplaces.items(), key=lambda i: _natural_key(i[0])
        )
    ]
    logins = {
        ext_of[user_id]: slug_of[workplace_id]
        for user_id, (workplace_id, _) in state.logins.items()
    }
    return DirectoryDocument(
        roles=tuple(roles),
        users=tuple(users),
        workplaces=tuple(workplaces),
        phones=sorted_names(unassigned),
        logins={ext: logins[ext] for ext in sorted(logins, key=_natural_key)},
    )


# --- the router's snapshot ------------------------------------------------------------


async def load_snapshot(engine: AsyncEngine) -> DirectorySnapshot:
    """The whole directory, read in one consistent transaction, as an immutable snapshot.

    Plain column tuples from Core queries (no ORM objects), shared string objects
    (a workplace's id is the same object in ``workplaces`` and ``logins``, role
    names are interned): 100,000 users with 300,000 phones load in a couple of
    seconds and take a few tens of MB.
    """
    intern = sys.intern
    r, rw, w, u, p, lg = s.roles, s.role_workplaces, s.workplaces, s.users, s.phones, s.logins
    async with begin_read(engine) as conn:
        revision, content_revision = await _revisions(conn)
        role_rows = (await conn.execute(select(r.c.id, r.c.name, r.c.restricted))).all()
        role_workplace_rows = (await conn.execute(select(rw.c.role_id, rw.c.workplace_id))).all()
        workplace_rows = (await conn.execute(select(w.c.id, w.c.slug, w.c.name, w.c.code))).all()
        user_rows = (
            await conn.execute(select(u.c.id, u.c.extension, u.c.name, u.c.role_id, u.c.pin_hash))
        ).all()
        phone_rows = (await conn.execute(select(p.c.endpoint, p.c.user_id, p.c.workplace_id))).all()
        login_rows = (await conn.execute(select(lg.c.user_id, lg.c.workplace_id))).all()

    user_phones: dict[int, list[str]] = {}
    workplace_phones: dict[int, list[str]] = {}
    unassigned: list[str] = []
    for endpoint, user_id, workplace_id in phone_rows:
        if user_id is not None:
            user_phones.setdefault(user_id, []).append(endpoint)
        elif workplace_id is not None:
            workplace_phones.setdefault(workplace_id, []).append(endpoint)
        else:
            unassigned.append(endpoint)
    del phone_rows
    no_phones: tuple[str, ...] = ()

    slug_of: dict[int, str] = {}
    workplaces: dict[str, Workplace] = {}
    for id_, slug, name, code in workplace_rows:
        phones = workplace_phones.get(id_)
        slug_of[id_] = slug
        workplaces[slug] = Workplace(
            slug, name, code, tuple(sorted(phones)) if phones else no_phones
        )

    allowed: dict[int, list[str]] = {}
    for role_id, workplace_id in role_workplace_rows:
        allowed.setdefault(role_id, []).append(slug_of[workplace_id])
    role_name: dict[int, str] = {}
    roles: dict[str, Role] = {}
    for id_, name, restricted in role_rows:
        name = intern(name)
        role_name[id_] = name
        roles[name] = Role(name, frozenset(allowed.get(id_, ())) if restricted else None)

    ext_of: dict[int, str] = {}
    users: dict[str, User] = {}
    for id_, extension, name, role_id, pin_hash in user_rows:
        phones = user_phones.get(id_)
        ext_of[id_] = extension
        users[extension] = User(
            extension,
            name,
            None if role_id is None else role_name[role_id],
            tuple(sorted(phones)) if phones else no_phones,
            pin_hash,
        )
    logins = {ext_of[user_id]: slug_of[workplace_id] for user_id, workplace_id in login_rows}
    return DirectorySnapshot(
        users=users,
        workplaces=workplaces,
        roles=roles,
        logins=logins,
        unassigned_phones=tuple(sorted(unassigned)),
        revision=revision,
        content_revision=content_revision,
    )


# --- the login state ---------------------------------------------------------------


async def _user_id(conn: AsyncConnection, extension: str) -> int:
    u = s.users
    found = (await conn.execute(select(u.c.id).where(u.c.extension == extension))).scalar()
    if found is None:
        raise UnknownExtension(extension)
    return int(found)


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
            user_id = await _user_id(conn, extension)
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
                return LoginChange(extension, old, old, None, await _revision(conn))
            entries: list[_Audit] = []
            displaced: str | None = None
            if occupant is not None:
                displaced = occupant.extension
                await conn.execute(delete(lg).where(lg.c.user_id == occupant.id))
                entries.append(
                    _Audit(
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
            entries.append(_Audit("login", extension, old, workplace_id))
            await _write_audit(conn, entries, at=at, actor=actor, source=source)
            revision = await bump_revision(conn, content=False)
    except IntegrityError as error:  # cannot happen while writers are serialised
        raise DirectoryError(_integrity_problem(error)) from error
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
        user_id = await _user_id(conn, extension)
        old = await _login_of(conn, user_id)
        if old is None:
            return LoginChange(extension, None, None, None, await _revision(conn))
        await conn.execute(delete(lg).where(lg.c.user_id == user_id))
        await _write_audit(
            conn, [_Audit("logout", extension, old, None)], at=at, actor=actor, source=source
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
        await _write_audit(
            conn,
            [_Audit("logout", occupant.extension, workplace_id, None)],
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
        entries: list[_Audit] = []
        for row in (await conn.execute(query)).all():  # again, under the lock
            cutoff = cutoffs.get(row.slug)
            if cutoff is None or row.since >= cutoff:
                continue
            await conn.execute(delete(lg).where(lg.c.user_id == row.user_id))
            entries.append(
                _Audit(
                    "logout",
                    row.extension,
                    row.slug,
                    None,
                    f"automatic logout (login before {cutoff.isoformat()})",
                )
            )
        if not entries:
            return []
        await _write_audit(conn, entries, at=at, actor=actor, source=source)
        revision = await bump_revision(conn, content=False)
    for entry in entries:
        changes.append(
            LoginChange(entry.extension or "", entry.old_workplace, None, None, revision)
        )
    return changes
