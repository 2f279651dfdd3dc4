"""Fixtures shared by the unit tests of logins, the API and presence."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory.importer import import_document
from callrouter.directory.snapshot import load_snapshot
from callrouter.domain.directory import DirectorySnapshot
from tests.unit.test_directory_store import document, engine  # noqa: F401 (fixture)


class Live:
    """The router's snapshot, reloaded when a service reports a change."""

    def __init__(self, database: AsyncEngine) -> None:
        self.engine = database
        self.snapshot = DirectorySnapshot()
        self.changes = 0

    async def refresh(self) -> None:
        self.changes += 1
        self.snapshot = await load_snapshot(self.engine)


@pytest.fixture
async def live(engine: AsyncEngine) -> Live:  # noqa: F811
    """The example directory of test_directory_store, imported, as a router sees it."""
    await import_document(engine, document(), prune=False, actor="test")
    live = Live(engine)
    live.snapshot = await load_snapshot(engine)
    return live
