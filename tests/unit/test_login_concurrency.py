"""Logins and logouts from two routers at once, on one shared directory.

200 operations (a random but fixed mix of logins of random users at random workplaces,
logouts, and a few with an unknown extension or workplace) run at the same time, spread
over two engines on the same database, as two routers sharing one directory would.
Which operation wins a workplace is up to the scheduler; the checks are the
invariants that must hold whatever the order:

* a user is at one workplace at most, a workplace holds one user at most (in the
  ``logins`` table and in ``load_snapshot`` from either engine);
* every operation returned a ``LoginChange`` or raised a ``DirectoryError`` (an
  unknown extension or workplace exactly when it named one), none went missing;
* the audit log accounts for every change: replayed in id order from the initial
  state (nobody logged in), each row starts from the state the previous rows left and
  together they reproduce the final ``logins`` table; its rows are exactly the
  changes the operations reported (``changed``, ``displaced``), with their actors;
* the directory revision went up by exactly the number of operations that changed
  something, each of them with a revision of its own.

Runs on SQLite in a temporary file, and on PostgreSQL as well when
``CALLROUTER_TEST_POSTGRES`` names an empty database (wiped before the test).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.document import DirectoryDocument
from callrouter.directory.errors import DirectoryError, UnknownExtension, UnknownWorkplace
from callrouter.directory.importer import import_document
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins.store import LoginChange, clear_login, set_login

POSTGRES_URL = os.environ.get("CALLROUTER_TEST_POSTGRES")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])

SEED = 20261128
USERS = [str(300 + n) for n in range(50)]
WORKPLACES = [f"desk-{n}" for n in range(1, 21)]
OPERATIONS = 200
ROUTERS = ("router-a", "router-b")
UNKNOWN_EXTENSION = "999"
UNKNOWN_WORKPLACE = "desk-404"


@dataclass(frozen=True, slots=True)
class Operation:
    kind: Literal["login", "logout"]
    extension: str
    workplace: str | None  # for logins
    router: int  # which engine (0 or 1) runs it

    @property
    def actor(self) -> str:
        return ROUTERS[self.router]

    @property
    def expected_error(self) -> type[DirectoryError] | None:
        if self.extension == UNKNOWN_EXTENSION:
            return UnknownExtension
        if self.workplace == UNKNOWN_WORKPLACE:
            return UnknownWorkplace
        return None


def operations() -> list[Operation]:
    """The fixed random mix: ~70 % logins, ~25 % logouts, ~5 % naming unknown things."""
    rng = random.Random(SEED)
    ops: list[Operation] = []
    for _ in range(OPERATIONS):
        router = rng.randrange(len(ROUTERS))
        roll = rng.random()
        if roll < 0.70:
            ops.append(Operation("login", rng.choice(USERS), rng.choice(WORKPLACES), router))
        elif roll < 0.95:
            ops.append(Operation("logout", rng.choice(USERS), None, router))
        elif roll < 0.975:
            ops.append(Operation("login", rng.choice(USERS), UNKNOWN_WORKPLACE, router))
        else:
            kind: Literal["login", "logout"] = rng.choice(("login", "logout"))
            workplace = rng.choice(WORKPLACES) if kind == "login" else None
            ops.append(Operation(kind, UNKNOWN_EXTENSION, workplace, router))
    return ops


def directory() -> DirectoryDocument:
    """50 users and 20 workplaces with one phone each; nobody logged in."""
    return DirectoryDocument.model_validate(
        {
            "users": [
                {"extension": ext, "name": f"User {ext}", "phones": [f"PJSIP/user-{ext}"]}
                for ext in USERS
            ],
            "workplaces": [
                {
                    "id": slug,
                    "name": f"Desk {slug}",
                    "code": f"8{n:02}",
                    "phones": [f"PJSIP/{slug}"],
                }
                for n, slug in enumerate(WORKPLACES, start=1)
            ],
        }
    )


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a directory database at the newest schema, empty."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'directory.db'}"
    else:
        assert POSTGRES_URL is not None
        url = POSTGRES_URL
        wipe = create_engine(url)
        try:
            async with wipe.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
        finally:
            await wipe.dispose()
    await upgrade(url)
    return url


@pytest.fixture
async def routers(url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines (two routers' connection pools) on the same database."""
    engines = (create_engine(url), create_engine(url))
    try:
        yield engines
    finally:
        for engine in engines:
            await engine.dispose()


async def run(engine: AsyncEngine, op: Operation) -> LoginChange:
    if op.kind == "login":
        assert op.workplace is not None
        return await set_login(
            engine, op.extension, op.workplace, actor=op.actor, source="concurrency test"
        )
    return await clear_login(engine, op.extension, actor=op.actor, source="concurrency test")


async def logins_table(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(extension, workplace) for every row of ``logins``, read directly."""
    lg, u, w = s.logins, s.users, s.workplaces
    async with engine.connect() as conn:
        result = await conn.execute(
            select(u.c.extension, w.c.slug)
            .join_from(lg, u, lg.c.user_id == u.c.id)
            .join_from(lg, w, lg.c.workplace_id == w.c.id)
            .order_by(u.c.extension)
        )
        return [(str(ext), str(slug)) for ext, slug in result]


async def audit_rows(engine: AsyncEngine, after_id: int) -> list[tuple[Any, ...]]:
    a = s.audit
    async with engine.connect() as conn:
        result = await conn.execute(
            select(
                a.c.id, a.c.action, a.c.extension, a.c.old_workplace, a.c.new_workplace, a.c.actor
            )
            .where(a.c.id > after_id)
            .order_by(a.c.id)
        )
        return [tuple(row) for row in result]


async def last_audit_id(engine: AsyncEngine) -> int:
    a = s.audit
    async with engine.connect() as conn:
        found = (await conn.execute(select(a.c.id).order_by(a.c.id.desc()).limit(1))).scalar()
        return 0 if found is None else int(found)


def expected_outcome(op: Operation) -> str:
    return "a LoginChange" if op.expected_error is None else op.expected_error.__name__


def duplicates(values: list[str]) -> dict[str, int]:
    return {value: count for value, count in Counter(values).items() if count > 1}


async def test_two_routers_logging_in_and_out_at_once_keep_the_directory_consistent(
    routers: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first = routers[0]
    await import_document(first, directory(), prune=True, actor="test")
    assert await logins_table(first) == [], "the directory must start with nobody logged in"
    start_revision = await read_revision(first)
    start_audit = await last_audit_id(first)
    ops = operations()

    results = await asyncio.gather(
        *(run(routers[op.router], op) for op in ops), return_exceptions=True
    )

    # -- every operation accounted for: a LoginChange, or the DirectoryError it earned
    assert len(results) == len(ops), "asyncio.gather lost operations"
    unexpected = [
        f"{op}: {type(result).__name__}: {result}"
        for op, result in zip(ops, results, strict=True)
        if not isinstance(result, LoginChange | DirectoryError)
    ]
    assert not unexpected, (
        f"{len(unexpected)} of {len(ops)} operations raised something other than a "
        "DirectoryError:\n" + "\n".join(unexpected[:10])
    )
    wrong_errors = [
        f"{op}: got {result!r}, expected {expected_outcome(op)}"
        for op, result in zip(ops, results, strict=True)
        if (op.expected_error is None and not isinstance(result, LoginChange))
        or (op.expected_error is not None and type(result) is not op.expected_error)
    ]
    assert not wrong_errors, "operations with the wrong outcome:\n" + "\n".join(wrong_errors)
    changes = [
        (op, result)
        for op, result in zip(ops, results, strict=True)
        if isinstance(result, LoginChange)
    ]
    for op, change in changes:
        assert change.extension == op.extension, f"{op}: {change}"
        if op.kind == "login":
            assert change.new_workplace == op.workplace, f"{op} left the user elsewhere: {change}"
        else:
            assert change.new_workplace is None, f"{op} left the user logged in: {change}"
            assert change.displaced is None, f"{op} displaced someone: {change}"
        if change.displaced is not None:
            assert change.changed, f"{op} displaced someone without a change: {change}"
            assert change.displaced != op.extension, f"{op} displaced the user itself: {change}"

    # -- one workplace per user, one user per workplace: in the table ...
    table = await logins_table(first)
    extensions = [ext for ext, _ in table]
    workplaces = [slug for _, slug in table]
    assert not duplicates(extensions), f"users at several workplaces: {duplicates(extensions)}"
    assert not duplicates(workplaces), f"workplaces with several users: {duplicates(workplaces)}"
    final = dict(table)
    # ... and in the snapshot either router loads
    for name, engine in zip(ROUTERS, routers, strict=True):
        snapshot = await load_snapshot(engine)
        assert dict(snapshot.logins) == final, f"{name}'s snapshot disagrees with the table"
        held = list(snapshot.logins.values())
        assert not duplicates(held), f"{name}'s snapshot: shared workplaces {duplicates(held)}"

    # -- the audit log, replayed from nobody logged in, gives the final table
    audit = await audit_rows(first, start_audit)
    state: dict[str, str] = {}
    for id_, action, ext, old, new, _actor in audit:
        row = f"audit row {id_} ({action} {ext}: {old} -> {new})"
        assert state.get(ext) == old, f"{row} starts from {state.get(ext)}, not {old}"
        if action == "login":
            assert new is not None, f"{row}: a login to nowhere"
            occupant = [other for other, slug in state.items() if slug == new and other != ext]
            assert not occupant, f"{row}: {occupant} still at {new} (no displaced row first)"
            state[ext] = new
        elif action in ("logout", "displaced"):
            assert new is None, f"{row}: a {action} to a workplace"
            del state[ext]
        else:
            pytest.fail(f"{row}: unknown action {action!r}")
    assert state == final, (
        f"replaying {len(audit)} audit rows does not give the logins table: "
        f"only replayed {sorted(state.items() - final.items())}, "
        f"only in the table {sorted(final.items() - state.items())}"
    )

    # -- ... and holds exactly the changes the operations reported, with their actors
    reported: Counter[tuple[str, str, str | None, str | None, str]] = Counter()
    for op, change in changes:
        if change.displaced is not None:
            reported[("displaced", change.displaced, change.new_workplace, None, op.actor)] += 1
        if change.changed:
            action = "login" if change.new_workplace is not None else "logout"
            reported[
                (action, op.extension, change.old_workplace, change.new_workplace, op.actor)
            ] += 1
    logged = Counter(tuple(row[1:]) for row in audit)
    assert logged == reported, (
        f"audit rows not reported by any operation: {dict(logged - reported)}; "
        f"reported changes missing from the audit: {dict(reported - logged)}"
    )
    by_action = Counter(row[1] for row in audit)
    changed = [change for _, change in changes if change.changed]
    assert by_action["login"] == sum(c.new_workplace is not None for c in changed)
    assert by_action["logout"] == sum(c.new_workplace is None for c in changed)
    assert by_action["displaced"] == sum(c.displaced is not None for _, c in changes)

    # -- one revision per change, each change its own
    end_revision = await read_revision(first)
    assert end_revision - start_revision == len(changed), (
        f"the revision went from {start_revision} to {end_revision}, "
        f"but {len(changed)} operations changed something"
    )
    assert sorted(c.revision for c in changed) == list(
        range(start_revision + 1, end_revision + 1)
    ), "the changes did not get one revision each"
    unchanged = [c for _, c in changes if not c.changed]
    assert all(start_revision <= c.revision <= end_revision for c in unchanged), (
        "a no-op reported a revision outside the test's range"
    )
    # The mix must really have contended: otherwise the test proves little.
    assert len(changed) > len(ops) // 2, f"only {len(changed)} of {len(ops)} changed anything"
    assert by_action["displaced"] > 0, "no login ever displaced anyone"
