"""Alembic environment for callrouter, configured in code (there is no alembic.ini).

``callrouter.directory.database.upgrade`` builds the ``Config`` and hands over an
open connection (already in a transaction) through ``config.attributes["connection"]``.
Without one, a URL is taken from ``-x url=...``, the ``sqlalchemy.url`` option or
``CALLROUTER_DB`` and an async engine is used through ``run_sync``; offline mode
(``--sql``) prints the SQL instead.

SQLite cannot ALTER most things, so migrations run in batch mode there
(``render_as_batch``), which recreates tables as needed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from callrouter.directory.schema import UTCDateTime, metadata

config = context.config


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Keep generated scripts free of imports from the application: UTCDateTime is
    # stored as a plain timezone-aware timestamp.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
        compare_type=True,
    )


def _run_with_connection(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("CALLROUTER_DB")
    )
    if not url:
        raise RuntimeError(
            "no database: run migrations with `callrouter db upgrade`, "
            "or pass -x url=... to alembic"
        )
    return url


def run_migrations_offline() -> None:
    from callrouter.directory.database import database_url

    url = database_url(_url())
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online_with_url() -> None:
    from callrouter.directory.database import create_engine

    engine = create_engine(_url(), foreign_keys=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_with_connection)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with_connection(connection)
    else:
        asyncio.run(_run_online_with_url())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
