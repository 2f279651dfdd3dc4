"""The SQL directory: import, export, the router's snapshot and the login state.

Runs on SQLite in a temporary file.  Set ``CALLROUTER_TEST_POSTGRES`` to the URL of
an empty PostgreSQL database (it is wiped before every test) to run every test on
PostgreSQL as well.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import importer
from callrouter.directory import schema as s
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.document import DirectoryDocument
from callrouter.directory.errors import ImportRejected, UnknownExtension, UnknownWorkplace
from callrouter.directory.export import export_document
from callrouter.directory.importer import import_document
from callrouter.directory.pins import hash_pin, is_pin_hash, verify_pin
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.domain.directory import Role, User, Workplace
from callrouter.logins.store import clear_login, set_login

POSTGRES_URL = os.environ.get("CALLROUTER_TEST_POSTGRES")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A directory database at the newest schema, empty."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'directory.db'}"
    else:
        assert POSTGRES_URL is not None
        url = POSTGRES_URL
        wipe = create_engine(url)
        async with wipe.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await wipe.dispose()
    await upgrade(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


def document(**changes: Any) -> DirectoryDocument:
    """A small directory like the issue's example; ``changes`` replace whole sections."""
    data: dict[str, Any] = {
        "roles": [
            {"name": "staff"},
            {"name": "intern", "workplaces": ["hotdesk-1"]},
            {"name": "visitor", "workplaces": []},
        ],
        "users": [
            {
                "extension": "201",
                "name": "Anna Berger",
                "role": "staff",
                "pin": "4711",
                "phones": ["PJSIP/anna-soft", "PJSIP/anna-desk"],
            },
            {
                "extension": "202",
                "name": "Boris Chen",
                "role": "intern",
                "pin": "0815",
                "phones": ["PJSIP/boris-desk"],
            },
            {"extension": "203", "name": "Clara Diaz"},
        ],
        "workplaces": [
            {
                "id": "office-1",
                "name": "Office 1, second floor",
                "code": "801",
                "phones": ["PJSIP/office1-desk", "PJSIP/office1-dect"],
            },
            {
                "id": "hotdesk-1",
                "name": "Hot desk 1",
                "code": "811",
                "phones": ["PJSIP/hotdesk1-desk"],
            },
        ],
        "phones": ["PJSIP/spare-1"],
        "logins": {"201": "office-1"},
    }
    data.update(changes)
    return DirectoryDocument.model_validate(data)


async def rows(engine: AsyncEngine, table: Any, *columns: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        selected = [table.c[name] for name in columns]
        result = await conn.execute(select(*selected).order_by(*selected))
        return [tuple(row) for row in result]


async def audit_entries(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    a = s.audit
    async with engine.connect() as conn:
        result = await conn.execute(
            select(
                a.c.action,
                a.c.extension,
                a.c.old_workplace,
                a.c.new_workplace,
                a.c.actor,
                a.c.source,
            ).order_by(a.c.id)
        )
        return [tuple(row) for row in result]


async def pin_hashes(engine: AsyncEngine) -> dict[str, str | None]:
    return dict(await rows(engine, s.users, "extension", "pin_hash"))


# --- import and export ------------------------------------------------------------


async def test_import_creates_everything_and_counts_it(engine: AsyncEngine) -> None:
    report = await import_document(engine, document(), prune=False, actor="test")
    assert (
        report.roles.created,
        report.users.created,
        report.workplaces.created,
        report.phones.created,
        report.logins.created,
    ) == (3, 3, 2, 7, 1)
    assert report.revision == 1
    assert await read_revision(engine) == 1
    assert "users 3 created" in str(report)


async def test_export_returns_what_was_imported_sorted(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    exported = await export_document(engine)
    hashes = await pin_hashes(engine)
    assert exported == DirectoryDocument.model_validate(
        {
            "roles": [
                {"name": "intern", "workplaces": ["hotdesk-1"]},
                {"name": "staff"},
                {"name": "visitor", "workplaces": []},
            ],
            "users": [
                {
                    "extension": "201",
                    "name": "Anna Berger",
                    "role": "staff",
                    "pin_hash": hashes["201"],
                    "phones": ["PJSIP/anna-desk", "PJSIP/anna-soft"],
                },
                {
                    "extension": "202",
                    "name": "Boris Chen",
                    "role": "intern",
                    "pin_hash": hashes["202"],
                    "phones": ["PJSIP/boris-desk"],
                },
                {"extension": "203", "name": "Clara Diaz"},
            ],
            "workplaces": [
                {
                    "id": "hotdesk-1",
                    "name": "Hot desk 1",
                    "code": "811",
                    "phones": ["PJSIP/hotdesk1-desk"],
                },
                {
                    "id": "office-1",
                    "name": "Office 1, second floor",
                    "code": "801",
                    "phones": ["PJSIP/office1-dect", "PJSIP/office1-desk"],
                },
            ],
            "phones": ["PJSIP/spare-1"],
            "logins": {"201": "office-1"},
        }
    )


async def test_export_round_trips_through_import_unchanged(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    exported = await export_document(engine)
    for prune in (False, True):
        report = await import_document(engine, exported, prune=prune, actor="test")
        assert not report.changed, report
        assert report.revision == 1
    assert await export_document(engine) == exported


async def test_export_sorts_numbers_naturally(engine: AsyncEngine) -> None:
    users = [{"extension": ext, "name": f"User {ext}"} for ext in ("1000", "201", "99")]
    workplaces = [{"id": f"desk-{n}", "name": f"Desk {n}", "code": f"8{n:02}"} for n in (10, 2, 1)]
    doc = document(roles=[], users=users, workplaces=workplaces, phones=[], logins={})
    await import_document(engine, doc, prune=True, actor="test")
    exported = await export_document(engine)
    assert [u.extension for u in exported.users] == ["99", "201", "1000"]
    assert [w.id for w in exported.workplaces] == ["desk-1", "desk-2", "desk-10"]


async def test_importing_the_same_file_twice_changes_nothing(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    hashes = await pin_hashes(engine)
    report = await import_document(engine, document(), prune=False, actor="test")
    assert not report.changed
    assert str(report) == "no changes (revision 1)"
    assert await read_revision(engine) == 1
    assert await pin_hashes(engine) == hashes  # the plain PIN verified, the hash kept
    assert len(await audit_entries(engine)) == 1  # only the first import's login


async def test_pins_are_stored_only_as_salted_hashes(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    hashes = await pin_hashes(engine)
    assert hashes["203"] is None
    for extension, pin in (("201", "4711"), ("202", "0815")):
        stored = hashes[extension]
        assert stored is not None and is_pin_hash(stored)
        assert pin not in stored.split("$", 4)[4]
        assert verify_pin(pin, stored)
    snapshot = await load_snapshot(engine)
    assert snapshot.users["201"].pin_hash == hashes["201"]


async def test_a_new_pin_replaces_the_hash(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    before = await pin_hashes(engine)
    users = [dict(u.model_dump(exclude_none=True)) for u in document().users]
    users[0]["pin"] = "1234"
    report = await import_document(engine, document(users=users), prune=False, actor="test")
    assert (report.users.updated, report.revision) == (1, 2)
    after = await pin_hashes(engine)
    assert after["202"] == before["202"]
    assert after["201"] is not None and verify_pin("1234", after["201"])
    assert not verify_pin("4711", after["201"])


async def test_a_pin_hash_is_taken_as_is(engine: AsyncEngine) -> None:
    stored = hash_pin("2468")
    users = [{"extension": "201", "name": "Anna Berger", "pin_hash": stored}]
    await import_document(engine, document(users=users, logins={}), prune=False, actor="test")
    assert (await pin_hashes(engine))["201"] == stored


async def test_a_user_without_pin_in_the_file_loses_the_pin(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    users = [dict(u.model_dump(exclude_none=True)) for u in document().users]
    del users[0]["pin"]
    await import_document(engine, document(users=users), prune=False, actor="test")
    assert (await pin_hashes(engine))["201"] is None


async def test_a_phone_moves_from_a_user_to_a_workplace(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    users = [dict(u.model_dump(exclude_none=True)) for u in document().users]
    users[0]["phones"] = ["PJSIP/anna-soft"]
    workplaces = [dict(w.model_dump()) for w in document().workplaces]
    workplaces[0]["phones"] = ["PJSIP/office1-desk", "PJSIP/office1-dect", "PJSIP/anna-desk"]
    report = await import_document(
        engine, document(users=users, workplaces=workplaces), prune=False, actor="test"
    )
    assert (report.phones.created, report.phones.updated, report.phones.deleted) == (0, 1, 0)
    snapshot = await load_snapshot(engine)
    assert snapshot.users["201"].phones == ("PJSIP/anna-soft",)
    assert "PJSIP/anna-desk" in snapshot.workplaces["office-1"].phones
    owner = await rows(engine, s.phones, "endpoint", "user_id", "workplace_id")
    (anna_desk,) = [row for row in owner if row[0] == "PJSIP/anna-desk"]
    assert anna_desk[1] is None and anna_desk[2] is not None


async def test_a_phone_a_user_no_longer_lists_becomes_unassigned(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    users = [dict(u.model_dump(exclude_none=True)) for u in document().users]
    users[0]["phones"] = ["PJSIP/anna-soft"]
    await import_document(engine, document(users=users), prune=False, actor="test")
    snapshot = await load_snapshot(engine)
    assert snapshot.unassigned_phones == ("PJSIP/anna-desk", "PJSIP/spare-1")


async def test_workplaces_can_swap_their_codes(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    workplaces = [dict(w.model_dump()) for w in document().workplaces]
    workplaces[0]["code"], workplaces[1]["code"] = workplaces[1]["code"], workplaces[0]["code"]
    report = await import_document(
        engine, document(workplaces=workplaces), prune=False, actor="test"
    )
    assert report.workplaces.updated == 2
    snapshot = await load_snapshot(engine)
    assert (snapshot.workplaces["office-1"].code, snapshot.workplaces["hotdesk-1"].code) == (
        "811",
        "801",
    )


async def test_a_role_restriction_changes(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    roles = [
        {"name": "staff", "workplaces": ["office-1"]},
        {"name": "intern"},
        {"name": "visitor", "workplaces": []},
    ]
    report = await import_document(engine, document(roles=roles), prune=False, actor="test")
    assert (report.roles.created, report.roles.updated) == (0, 2)
    snapshot = await load_snapshot(engine)
    assert snapshot.roles == {
        "staff": Role("staff", frozenset({"office-1"})),
        "intern": Role("intern", None),
        "visitor": Role("visitor", frozenset()),
    }


# --- prune ----------------------------------------------------------------------------


def smaller_document() -> DirectoryDocument:
    return document(
        roles=[{"name": "staff"}],
        users=[
            {
                "extension": "201",
                "name": "Anna Berger",
                "role": "staff",
                "pin": "4711",
                "phones": ["PJSIP/anna-desk"],
            }
        ],
        workplaces=[
            {
                "id": "office-1",
                "name": "Office 1, second floor",
                "code": "801",
                "phones": ["PJSIP/office1-desk"],
            }
        ],
        phones=[],
        logins={},
    )


async def test_without_prune_what_the_file_does_not_name_stays(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    report = await import_document(engine, smaller_document(), prune=False, actor="test")
    assert not any(counts.deleted for _, counts in report.items())
    snapshot = await load_snapshot(engine)
    assert set(snapshot.users) == {"201", "202", "203"}
    assert set(snapshot.roles) == {"staff", "intern", "visitor"}
    assert snapshot.logins == {"201": "office-1"}
    # Anna's and office-1's phones follow the file; the phones they lost stay, unassigned.
    assert snapshot.users["201"].phones == ("PJSIP/anna-desk",)
    assert set(snapshot.unassigned_phones) == {
        "PJSIP/anna-soft",
        "PJSIP/office1-dect",
        "PJSIP/spare-1",
    }


async def test_prune_deletes_what_the_file_does_not_name(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    report = await import_document(engine, smaller_document(), prune=True, actor="admin")
    assert report.roles.deleted == 2
    assert report.users.deleted == 2
    assert report.workplaces.deleted == 1
    assert report.phones.deleted == 5
    assert report.logins.deleted == 1
    exported = await export_document(engine)
    hashes = await pin_hashes(engine)
    expected = smaller_document().model_dump()
    expected["users"][0].update(pin=None, pin_hash=hashes["201"])
    assert exported == DirectoryDocument.model_validate(expected)
    assert (await audit_entries(engine))[-1] == (
        "logout",
        "201",
        "office-1",
        None,
        "admin",
        "import",
    )
    # And pruning again finds nothing more to do.
    again = await import_document(engine, smaller_document(), prune=True, actor="admin")
    assert not again.changed


async def test_prune_removes_a_role_a_remaining_user_leaves(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    doc = document(
        roles=[{"name": "staff"}],
        users=[{"extension": "202", "name": "Boris Chen", "role": "staff"}],
        logins={},
    )
    report = await import_document(engine, doc, prune=True, actor="test")
    assert report.roles.deleted == 2
    assert (await load_snapshot(engine)).users["202"].role == "staff"


# --- logins ---------------------------------------------------------------------------


async def test_a_login_in_the_file_moves_out_the_previous_occupant(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    report = await import_document(
        engine, document(logins={"202": "office-1"}), prune=False, actor="admin"
    )
    assert (report.logins.created, report.logins.updated, report.logins.deleted) == (1, 0, 1)
    assert (await load_snapshot(engine)).logins == {"202": "office-1"}
    assert (await audit_entries(engine))[1:] == [
        ("displaced", "201", "office-1", None, "admin", "import"),
        ("login", "202", None, "office-1", "admin", "import"),
    ]


async def test_logins_can_swap_workplaces(engine: AsyncEngine) -> None:
    await import_document(
        engine, document(logins={"201": "office-1", "202": "hotdesk-1"}), prune=False, actor="test"
    )
    report = await import_document(
        engine,
        document(logins={"201": "hotdesk-1", "202": "office-1"}),
        prune=False,
        actor="test",
    )
    assert report.logins.updated == 2
    assert (await load_snapshot(engine)).logins == {"201": "hotdesk-1", "202": "office-1"}


async def test_set_login_displaces_and_audits(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    at = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    change = await set_login(engine, "203", "office-1", actor="admin", source="cli", now=at)
    assert (change.old_workplace, change.new_workplace, change.displaced) == (
        None,
        "office-1",
        "201",
    )
    assert change.revision == 2 == await read_revision(engine)
    assert (await load_snapshot(engine)).logins == {"203": "office-1"}
    moved = await set_login(engine, "203", "hotdesk-1", actor="203", source="api")
    assert (moved.old_workplace, moved.new_workplace, moved.displaced) == (
        "office-1",
        "hotdesk-1",
        None,
    )
    assert (await audit_entries(engine))[1:] == [
        ("displaced", "201", "office-1", None, "admin", "cli"),
        ("login", "203", None, "office-1", "admin", "cli"),
        ("login", "203", "office-1", "hotdesk-1", "203", "api"),
    ]
    async with engine.connect() as conn:
        since = (await conn.execute(select(s.logins.c.since))).scalar_one()
    assert since.tzinfo is not None


async def test_set_login_where_the_user_already_is_changes_nothing(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    change = await set_login(engine, "201", "office-1", actor="admin", source="cli")
    assert not change.changed
    assert await read_revision(engine) == 1


async def test_clear_login(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    change = await clear_login(engine, "201", actor="admin", source="cli")
    assert (change.old_workplace, change.new_workplace, change.revision) == ("office-1", None, 2)
    assert (await load_snapshot(engine)).logins == {}
    again = await clear_login(engine, "201", actor="admin", source="cli")
    assert not again.changed and again.revision == 2
    assert (await audit_entries(engine))[-1] == (
        "logout",
        "201",
        "office-1",
        None,
        "admin",
        "cli",
    )


async def test_logins_of_unknown_users_or_workplaces_are_refused(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    with pytest.raises(UnknownExtension, match="no user has extension 299"):
        await set_login(engine, "299", "office-1", actor="admin", source="cli")
    with pytest.raises(UnknownWorkplace, match="'office-9'"):
        await set_login(engine, "201", "office-9", actor="admin", source="cli")
    with pytest.raises(UnknownExtension):
        await clear_login(engine, "299", actor="admin", source="cli")
    assert await read_revision(engine) == 1


async def test_the_database_refuses_two_users_at_one_workplace(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    async with engine.connect() as conn:
        workplace = (
            await conn.execute(select(s.workplaces.c.id).where(s.workplaces.c.slug == "office-1"))
        ).scalar_one()
        user = (
            await conn.execute(select(s.users.c.id).where(s.users.c.extension == "202"))
        ).scalar_one()
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with engine.begin() as conn:
            await conn.execute(
                s.logins.insert().values(
                    user_id=user, workplace_id=workplace, since=datetime.now(UTC), source="x"
                )
            )


# --- bad input: nothing written -----------------------------------------------------


async def state_of(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        counts = [
            (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (s.roles, s.users, s.workplaces, s.phones, s.logins, s.audit)
        ]
    return (await export_document(engine), counts, await read_revision(engine))


async def test_an_error_half_way_leaves_the_database_untouched(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    before = await state_of(engine)

    async def fail(self: Any, at: Any, source: str) -> Any:
        raise RuntimeError("disk on fire")

    # Everything but the new logins has been written when this fails.
    monkeypatch.setattr(importer._Importer, "_start_logins", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await import_document(engine, smaller_document(), prune=True, actor="test")
    assert await state_of(engine) == before


async def test_a_database_error_half_way_is_reported_and_rolled_back(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("the trigger below is SQLite's dialect")
    await import_document(engine, document(logins={}), prune=False, actor="test")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER no_logins BEFORE INSERT ON logins "
                "BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: logins.workplace_id'); END"
            )
        )
    before = await state_of(engine)
    # Deletes, updates and inserts come first; the new login is written last.
    doc = smaller_document().model_copy(update={"logins": {"201": "office-1"}})
    with pytest.raises(ImportRejected, match="a workplace would hold two users") as caught:
        await import_document(engine, doc, prune=True, actor="test")
    assert str(caught.value).startswith("import refused, nothing was written: ")
    assert await state_of(engine) == before
    # The first import did write its users and phones: the rollback undid the second's.
    assert len(before[0].users) == 3


async def test_a_code_of_a_workplace_the_file_does_not_name_is_refused(
    engine: AsyncEngine,
) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    before = await state_of(engine)
    doc = document(
        roles=[{"name": "staff"}],
        users=[{"extension": "204", "name": "David Eck"}],
        workplaces=[{"id": "office-2", "name": "Office 2", "code": "811"}],
        phones=[],
        logins={},
    )
    with pytest.raises(ImportRejected) as caught:
        await import_document(engine, doc, prune=False, actor="test")
    assert caught.value.problems == (
        "workplace office-2: code 811 is already the code of workplace hotdesk-1, which the "
        "file does not name (change one of them, or import with --prune to remove it)",
    )
    assert await state_of(engine) == before
    # With --prune, hotdesk-1 goes and office-2 may take its code.
    report = await import_document(engine, doc, prune=True, actor="test")
    assert report.workplaces.created == 1


async def test_references_are_resolved_against_the_database_too(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    doc = document(
        roles=[],
        users=[{"extension": "204", "name": "David Eck", "role": "intern"}],
        workplaces=[],
        phones=[],
        logins={"204": "hotdesk-1"},
    )
    # Without --prune the role and the workplace stay in the database, so this is fine ...
    report = await import_document(engine, doc, prune=False, actor="test")
    assert report.users.created == 1
    assert (await load_snapshot(engine)).logins == {"201": "office-1", "204": "hotdesk-1"}
    # ... with --prune they would go, so it is not.
    before = await state_of(engine)
    with pytest.raises(ImportRejected) as caught:
        await import_document(engine, doc, prune=True, actor="test")
    assert caught.value.problems == (
        "user 204: unknown role intern",
        "logins: 204 at unknown workplace hotdesk-1",
    )
    assert await state_of(engine) == before


async def test_a_document_the_checks_would_refuse_is_refused_here_too(
    engine: AsyncEngine,
) -> None:
    doc = DirectoryDocument.model_construct(
        roles=(),
        users=tuple(
            DirectoryDocument.model_validate(
                {
                    "users": [
                        {"extension": "201", "name": "A", "phones": ["PJSIP/x"]},
                        {"extension": "201", "name": "B", "phones": ["PJSIP/x"]},
                    ]
                }
            ).users
        ),
        workplaces=(),
        phones=(),
        logins={},
    )
    with pytest.raises(ImportRejected) as caught:
        await import_document(engine, doc, prune=False, actor="test")
    assert caught.value.problems == ("extension 201 appears twice", "phone PJSIP/x appears twice")
    assert await read_revision(engine) == 0


# --- the snapshot ---------------------------------------------------------------------


async def test_the_snapshot_holds_what_was_imported(engine: AsyncEngine) -> None:
    await import_document(engine, document(), prune=False, actor="test")
    snapshot = await load_snapshot(engine)
    hashes = await pin_hashes(engine)
    assert snapshot.revision == 1
    assert snapshot.users == {
        "201": User(
            "201", "Anna Berger", "staff", ("PJSIP/anna-desk", "PJSIP/anna-soft"), hashes["201"]
        ),
        "202": User("202", "Boris Chen", "intern", ("PJSIP/boris-desk",), hashes["202"]),
        "203": User("203", "Clara Diaz", None, (), None),
    }
    assert snapshot.workplaces == {
        "office-1": Workplace(
            "office-1",
            "Office 1, second floor",
            "801",
            ("PJSIP/office1-dect", "PJSIP/office1-desk"),
        ),
        "hotdesk-1": Workplace("hotdesk-1", "Hot desk 1", "811", ("PJSIP/hotdesk1-desk",)),
    }
    assert snapshot.roles == {
        "staff": Role("staff", None),
        "intern": Role("intern", frozenset({"hotdesk-1"})),
        "visitor": Role("visitor", frozenset()),
    }
    assert snapshot.logins == {"201": "office-1"}
    assert snapshot.unassigned_phones == ("PJSIP/spare-1",)
    assert snapshot.workplace_of("201") == snapshot.workplaces["office-1"]
    # One string object per workplace id, shared by the workplace and the logins.
    (login_slug,) = snapshot.logins.values()
    assert login_slug is snapshot.workplaces["office-1"].id


async def test_an_empty_directory_gives_an_empty_snapshot(engine: AsyncEngine) -> None:
    snapshot = await load_snapshot(engine)
    assert (snapshot.users, snapshot.workplaces, snapshot.roles, snapshot.logins) == (
        {},
        {},
        {},
        {},
    )
    assert snapshot.revision == 0
