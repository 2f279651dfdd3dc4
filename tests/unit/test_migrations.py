"""The schema's migrations, the database URL handling and the schema check.

The tests taking ``url`` also run on PostgreSQL when ``CALLROUTER_TEST_POSTGRES``
names an empty database (wiped before each test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, String, inspect, text
from sqlalchemy.engine import make_url

from callrouter.directory import database, schema
from callrouter.directory.database import (
    DatabaseUnavailable,
    DatabaseUrlError,
    SchemaOutdated,
    alembic_config,
    check_schema,
    create_engine,
    database_url,
    head_revision,
    migrations_directory,
    safe_url,
    shown_url,
    upgrade,
)
from callrouter.directory.schema import metadata

TABLES = {
    "alembic_version",
    "audit",
    "client_statuses",
    "directory_revision",
    "logins",
    "phones",
    "pin_failures",
    "role_workplaces",
    "roles",
    "switches_off",
    "user_forwards",
    "users",
    "workplaces",
}


POSTGRES_URL = os.environ.get("CALLROUTER_TEST_POSTGRES")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'directory.db'}"
    assert POSTGRES_URL is not None
    await _run(
        POSTGRES_URL,
        lambda conn: (
            conn.execute(text("DROP SCHEMA public CASCADE")),
            conn.execute(text("CREATE SCHEMA public")),
        ),
    )
    return POSTGRES_URL


async def _run(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


# --- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///callrouter.db", "sqlite+aiosqlite:///callrouter.db"),
        (
            "sqlite:////var/lib/callrouter/db.sqlite",
            "sqlite+aiosqlite:////var/lib/callrouter/db.sqlite",
        ),
        ("sqlite://", "sqlite+aiosqlite://"),
        (
            "postgresql://router:s3cret@db.example/callrouter",
            "postgresql+asyncpg://router:s3cret@db.example/callrouter",
        ),
        (
            "postgres://router@db.example:5433/callrouter",
            "postgresql+asyncpg://router@db.example:5433/callrouter",
        ),
        # An explicit driver is the admin's choice.
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+psycopg://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
        ("mysql+aiomysql://u@h/d", "mysql+aiomysql://u@h/d"),
    ],
)
def test_database_url_fills_in_the_async_driver(given: str, expected: str) -> None:
    assert database_url(given) == expected


def test_a_password_with_special_characters_survives() -> None:
    assert database_url("postgresql://u:p%40ss@h/d") == "postgresql+asyncpg://u:p%40ss@h/d"


def test_not_a_url_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(DatabaseUrlError, match="not a database URL") as caught:
        database_url("callrouter.db")
    assert "sqlite:///" in str(caught.value)
    with pytest.raises(DatabaseUrlError) as caught:
        database_url("://user:hunter2@host")
    assert "hunter2" not in str(caught.value)


def test_safe_url_hides_the_password() -> None:
    shown = safe_url("postgresql+asyncpg://router:s3cret@db.example/callrouter")
    assert "s3cret" not in shown
    assert shown == "postgresql+asyncpg://router:***@db.example/callrouter"


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("postgres://router:s3cret@db/cr", "postgresql://router:***@db/cr"),
        ("postgresql+psycopg://router:s3cret@db/cr", "postgresql+psycopg://router:***@db/cr"),
    ],
)
def test_messages_show_the_url_as_the_admin_wrote_it(given: str, shown: str) -> None:
    assert shown_url(make_url(database_url(given))) == shown


# --- upgrade ------------------------------------------------------------------------


def test_the_migrations_are_found_with_one_head() -> None:
    directory = migrations_directory()
    assert (directory / "env.py").is_file()
    assert (directory / "versions").is_dir()
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [head_revision()]


async def test_upgrade_creates_the_schema(url: str) -> None:
    before, after = await upgrade(url)
    assert (before, after) == (None, head_revision())
    names = await _run(url, lambda conn: set(inspect(conn).get_table_names()))
    assert names == TABLES
    revision = await _run(url, lambda c: c.execute(text("SELECT * FROM directory_revision")).all())
    assert revision == [(1, 0, 0)]  # id, revision, content_revision


async def test_upgrade_of_a_current_database_changes_nothing(url: str) -> None:
    await upgrade(url)
    await _run(
        url,
        lambda conn: conn.execute(
            text("INSERT INTO roles (name, restricted) VALUES ('staff', false)")
        ),
    )
    assert await upgrade(url) == (head_revision(), head_revision())
    rows = await _run(url, lambda conn: conn.execute(text("SELECT name FROM roles")).all())
    assert rows == [("staff",)]


async def test_the_migrations_match_the_models(url: str) -> None:
    await upgrade(url)

    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    assert await _run(url, differences) == []


async def test_downgrade_to_nothing_and_up_again(url: str) -> None:
    await upgrade(url)

    def downgrade(conn: Connection) -> None:
        command.downgrade(alembic_config(conn), "base")

    await _run(url, downgrade)
    names = await _run(url, lambda conn: set(inspect(conn).get_table_names()))
    assert names == {"alembic_version"}
    assert await upgrade(url) == (None, head_revision())


async def test_0002_starts_content_revision_at_the_current_revision(url: str) -> None:
    def to_0001(conn: Connection) -> None:
        command.upgrade(alembic_config(conn), "0001")

    await _run(url, to_0001)
    await _run(url, lambda c: c.execute(text("UPDATE directory_revision SET revision = 7")))
    assert await upgrade(url) == ("0001", head_revision())
    rows = await _run(
        url,
        lambda c: c.execute(
            text("SELECT revision, content_revision FROM directory_revision")
        ).all(),
    )
    assert rows == [(7, 7)]  # a router at revision 7 need not reload everything


async def test_upgrade_into_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"directory .*nowhere does not exist"):
        await upgrade(f"sqlite:///{tmp_path / 'nowhere' / 'directory.db'}")


async def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'directory.db'}"
    await upgrade(url)
    pragmas = await _run(
        url,
        lambda conn: (
            conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
            conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            conn.exec_driver_sql("PRAGMA busy_timeout").scalar(),
        ),
    )
    assert pragmas == (1, "wal", database.SQLITE_BUSY_TIMEOUT_MS)


# --- check_schema ---------------------------------------------------------------------


async def test_a_current_schema_passes(url: str) -> None:
    await upgrade(url)
    engine = create_engine(url)
    try:
        assert await check_schema(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_a_missing_database_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(SchemaOutdated) as caught:
            await check_schema(engine)
    finally:
        await engine.dispose()
    assert str(caught.value) == (
        f"database sqlite:///{path} has no callrouter schema: run `callrouter db upgrade`"
    )
    assert caught.value.current is None
    assert not path.exists()


async def test_an_empty_database_is_refused(url: str) -> None:
    await _run(url, lambda conn: conn.execute(text("CREATE TABLE unrelated (x INTEGER)")))
    engine = create_engine(url)
    try:
        with pytest.raises(SchemaOutdated, match="has no callrouter schema: run `callrouter db"):
            await check_schema(engine)
    finally:
        await engine.dispose()


async def test_an_outdated_schema_is_refused_naming_the_fix(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade(url)
    current = head_revision()
    monkeypatch.setattr(database, "head_revision", lambda: "0099")  # a newer callrouter
    engine = create_engine(url)
    try:
        with pytest.raises(SchemaOutdated) as caught:
            await check_schema(engine)
    finally:
        await engine.dispose()
    assert str(caught.value) == (
        f"database {shown_url(engine.url)} is at revision {current}, this callrouter needs 0099: "
        "run `callrouter db upgrade`"
    )
    assert (caught.value.current, caught.value.needed) == (current, "0099")


async def test_a_schema_from_a_newer_callrouter_is_refused(url: str) -> None:
    await upgrade(url)
    await _run(
        url, lambda conn: conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    )
    engine = create_engine(url)
    try:
        with pytest.raises(SchemaOutdated, match="revision 9999, which this callrouter does not"):
            await check_schema(engine)
    finally:
        await engine.dispose()


async def test_an_unreachable_server_is_reported_without_the_password() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    engine = create_engine("postgresql://router:s3cret@127.0.0.1:1/callrouter")
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await check_schema(engine)
    finally:
        await engine.dispose()
    message = str(caught.value)
    assert message.startswith("cannot open database postgresql://router:***@127.0.0.1:1/")
    assert "s3cret" not in message


def test_every_identifier_fits_its_column() -> None:
    from callrouter.domain import identifiers as ids

    fits = {
        (schema.UserRow.__table__.c.extension, ids.EXTENSION_LENGTH),
        (schema.AuditRow.__table__.c.extension, ids.EXTENSION_LENGTH),
        (schema.WorkplaceRow.__table__.c.code, ids.WORKPLACE_CODE_LENGTH),
        (schema.WorkplaceRow.__table__.c.slug, ids.WORKPLACE_ID_LENGTH),
        (schema.RoleRow.__table__.c.name, ids.ROLE_NAME_LENGTH),
        (schema.UserRow.__table__.c.name, ids.NAME_LENGTH),
        (schema.PhoneRow.__table__.c.endpoint, ids.ENDPOINT_LENGTH),
        (schema.ClientStatusRow.__table__.c.extension, ids.EXTENSION_LENGTH),
        (schema.ClientStatusRow.__table__.c.client_id, ids.CLIENT_ID_LENGTH),
    }
    for column, length in fits:
        assert isinstance(column.type, String)
        assert column.type.length is not None and column.type.length >= length, column
