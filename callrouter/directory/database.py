"""Connecting to the directory database, and keeping its schema current.

Any SQLAlchemy URL works; the short forms admins type are mapped to the async
drivers (``sqlite:///x.db`` → aiosqlite, ``postgresql://`` → asyncpg).  The schema
is created and changed only by the Alembic migrations in ``migrations/``
(``upgrade``); everything else calls ``check_schema`` first and refuses a
database whose schema is not the one this callrouter was built for.

Passwords in URLs never appear in messages: every URL shown goes through
``safe_url``.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, exc, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from callrouter.directory.schema import directory_revision

MIGRATIONS_PACKAGE = "callrouter.migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000
# Any constant will do: it only has to be the same in every callrouter process.
_PG_UPGRADE_LOCK = 0x63616C6C  # "call"

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


class DatabaseError(Exception):
    """A problem with the directory database; the message says what to do."""


class DatabaseUrlError(DatabaseError, ValueError):
    """A string that is not a usable database URL."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be opened or reached."""


class SchemaOutdated(DatabaseError):
    """The database's schema is not the one this callrouter needs."""

    def __init__(self, url: str, current: str | None, needed: str, *, known: bool = True):
        self.url = url  # already without password
        self.current = current  # None: no callrouter schema at all
        self.needed = needed
        if current is None:
            message = f"database {url} has no callrouter schema: run `callrouter db upgrade`"
        elif not known:
            message = (
                f"database {url} is at revision {current}, which this callrouter does not know "
                f"(it needs {needed}): a newer callrouter has upgraded it; update callrouter"
            )
        else:
            message = (
                f"database {url} is at revision {current}, this callrouter needs {needed}: "
                "run `callrouter db upgrade`"
            )
        super().__init__(message)


class UpgradeResult(NamedTuple):
    """The schema revision before and after ``upgrade`` (equal: nothing to do)."""

    before: str | None  # None: the database had no callrouter schema
    after: str


_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def safe_url(url: str | URL) -> str:
    """``url`` fit for messages and logs: the password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return _PASSWORD_IN_TEXT.sub(r"\1***@", url)


def shown_url(url: URL) -> str:
    """``url`` as an admin would write it: no password, no driver they did not name.

    ``sqlite+aiosqlite:///x.db`` is shown as ``sqlite:///x.db``, ``postgresql+asyncpg``
    as ``postgresql``; other drivers stay.
    """
    plain = {driver: name for name, driver in _ASYNC_DRIVERS.items() if name != "postgres"}
    if url.drivername in plain:
        url = url.set(drivername=plain[url.drivername])
    return safe_url(url)


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except exc.ArgumentError:
        raise DatabaseUrlError(
            f"not a database URL: {safe_url(url)!r} "
            "(expected e.g. sqlite:///./callrouter.db or postgresql://user@host/dbname)"
        ) from None


def database_url(url: str) -> str:
    """``url`` with the async driver filled in where the admin left it out.

    ``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``; ``postgresql://`` and
    ``postgres://`` → ``postgresql+asyncpg://``.  A URL naming its driver is
    returned unchanged.
    """
    parsed = _parse_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        return url
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> Path | None:
    """The file of an SQLite URL; None for in-memory databases and other backends."""
    if not _is_sqlite(url):
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None  # in memory, or a URI form we do not second-guess
    return Path(database)


def create_engine(url: str, *, foreign_keys: bool = True) -> AsyncEngine:
    """An async engine for ``url`` (short forms accepted, see ``database_url``).

    SQLite connections get foreign keys enforced, WAL (readers do not block the
    writer, which matters when a router reloads while an admin imports) and a busy
    time-out.  SQLAlchemy, not the sqlite3 module, issues BEGIN, so transactions
    cover SELECTs and DDL too, and a connection marked by ``begin_write`` starts with
    ``BEGIN IMMEDIATE``: writers queue for the lock up front instead of failing
    half-way.  ``foreign_keys=False`` is for migrations only (SQLite's batch mode
    recreates tables, which must not cascade).
    """
    engine = create_async_engine(database_url(url), pool_pre_ping=True)
    if _is_sqlite(engine.url):
        _configure_sqlite(engine, foreign_keys=foreign_keys)
    return engine


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
        # SQLAlchemy's begin hook below issues BEGIN; the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("callrouter_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# SQLite writers of one process queue here, first come first served, before they
# ask SQLite for its write lock: SQLite itself only lets waiters poll until
# busy_timeout, so under a burst of logins an unlucky writer could time out while
# others got in.  Per event loop, per database file (locks belong to one loop).
_sqlite_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _sqlite_write_queue(url: URL) -> asyncio.Lock:
    locks = _sqlite_writers.setdefault(asyncio.get_running_loop(), {})
    key = str(sqlite_path(url) or url)
    return locks.setdefault(key, asyncio.Lock())


@asynccontextmanager
async def begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that changes the directory, serialised against all other writers.

    SQLite: writers of this process queue in turn, then ``BEGIN IMMEDIATE`` takes
    the database's write lock (other processes wait up to busy_timeout for it).
    PostgreSQL (and others): the single ``directory_revision`` row is locked
    ``FOR UPDATE`` before anything is read, so every process changing the directory
    reads the state it changes.  Commits on normal exit, rolls back on error.
    """
    if not _is_sqlite(engine.url):
        async with _reachable(engine.url), engine.connect() as conn:
            await conn.execution_options(callrouter_write=True)
            async with conn.begin():
                await conn.execute(
                    select(directory_revision.c.revision)
                    .where(directory_revision.c.id == 1)
                    .with_for_update()
                )
                yield conn
        return
    async with _sqlite_write_queue(engine.url):
        try:
            async with engine.connect() as conn:
                await conn.execution_options(callrouter_write=True)
                async with conn.begin():
                    yield conn
        except exc.OperationalError as error:
            if "database is locked" not in str(error.orig):
                raise
            raise DatabaseError(
                f"the directory database is locked by another process for more than "
                f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; try again (with several routers, "
                "use PostgreSQL)"
            ) from None


@asynccontextmanager
async def begin_read(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction in which every query sees the same committed state.

    SQLite gives that to any transaction; PostgreSQL needs REPEATABLE READ.
    """
    async with _reachable(engine.url), engine.connect() as conn:
        if not _is_sqlite(engine.url):
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        async with conn.begin():
            yield conn


@asynccontextmanager
async def _reachable(url: URL) -> AsyncIterator[None]:
    """A database server that cannot be reached (refused, reset, timed out, its
    connection lost mid-transaction) raises :class:`DatabaseUnavailable`, which says
    so; the transaction was not committed, so nothing of it was written. (SQLite is a
    file: its errors say what they are.)"""
    if _is_sqlite(url):
        yield
        return
    try:
        yield
    except (OSError, TimeoutError, exc.OperationalError, exc.InterfaceError) as error:
        raise _unreachable(url, error) from None
    except exc.DBAPIError as error:
        if not error.connection_invalidated:
            raise
        raise _unreachable(url, error) from None


def _unreachable(url: URL, error: BaseException) -> DatabaseUnavailable:
    reason = getattr(error, "orig", None) or error
    return DatabaseUnavailable(
        f"the directory database {shown_url(url)} cannot be reached "
        f"({type(reason).__name__}: {reason}); nothing was changed, try again"
    )


def migrations_directory() -> Path:
    """Where Alembic's env.py and versions/ are: the ``callrouter.migrations`` package
    (``migrations/``, mapped into the package by setup.py; no fallback to the checkout,
    which once hid a wheel without them)."""
    try:
        package = importlib.import_module(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError:
        raise RuntimeError(
            f"cannot find the migration scripts (package {MIGRATIONS_PACKAGE}); "
            "reinstall callrouter"
        ) from None
    assert package.__file__ is not None
    return Path(package.__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration built in code (no alembic.ini).

    ``connection`` (a sync connection, e.g. inside ``AsyncConnection.run_sync``) is
    handed to env.py through ``config.attributes``.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this callrouter needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migration scripts define no revision")
    return head


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _is_known_revision(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown id
        return False


def _unavailable(url: URL, error: BaseException) -> DatabaseUnavailable:
    reason = getattr(error, "orig", None) or error
    return DatabaseUnavailable(f"cannot open database {shown_url(url)}: {reason}")


def _check_sqlite_directory(url: URL) -> None:
    path = sqlite_path(url)
    if path is None:
        return
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise DatabaseUnavailable(
            f"cannot create database {shown_url(url)}: directory {directory} does not exist"
        )
    if path.exists() and not path.is_file():
        raise DatabaseUnavailable(f"cannot open database {shown_url(url)}: {path} is not a file")


def _run_upgrade(connection: Connection) -> tuple[str | None, str | None]:
    before = _current_revision(connection)
    command.upgrade(alembic_config(connection), "head")
    if connection.dialect.name == "sqlite":
        # Foreign keys are off while migrating (see create_engine); prove the data
        # still honours them before committing.
        problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if problems:
            shown = ", ".join(f"{row[0]} row {row[1]} -> {row[2]}" for row in problems[:5])
            raise DatabaseError(f"migration left dangling references ({shown}); rolled back")
    return before, _current_revision(connection)


async def upgrade(url: str) -> UpgradeResult:
    """Create the schema in the database at ``url``, or upgrade it to the newest revision.

    Idempotent: on a current database nothing changes.  The whole upgrade is one
    transaction where the database supports transactional DDL (SQLite, PostgreSQL).
    """
    parsed = _parse_url(database_url(url))
    _check_sqlite_directory(parsed)
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(callrouter_write=True)
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Two routers upgrading at once: the second waits, then finds
                    # nothing left to do.
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK}
                    )
                before, after = await conn.run_sync(_run_upgrade)
    except (exc.OperationalError, exc.InterfaceError, OSError) as error:
        raise _unavailable(parsed, error) from error
    finally:
        await engine.dispose()
    assert after is not None
    return UpgradeResult(before, after)


async def check_schema(engine: AsyncEngine) -> str:
    """The database's schema revision; raises SchemaOutdated unless it is the one needed."""
    needed = head_revision()
    shown = shown_url(engine.url)
    path = sqlite_path(engine.url)
    if path is not None and not path.exists():
        # Do not let the check create an empty database file as a side effect.
        raise SchemaOutdated(shown, None, needed)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(_current_revision)
    except (exc.OperationalError, exc.InterfaceError, OSError) as error:
        raise _unavailable(engine.url, error) from error
    if current == needed:
        return current
    known = current is None or _is_known_revision(current)
    raise SchemaOutdated(shown, current, needed, known=known)
