"""The lease on the real backends: one holder at a time, released the moment its
holder's session ends, and two routers racing for it never both active.

On PostgreSQL the routers of one Asterisk share an advisory lock; on SQLite a second
router for the same database is refused at start.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from callrouter.cluster.election import Election, Role
from callrouter.cluster.lease import (
    FileLease,
    Lease,
    LeaseRefused,
    PostgresLease,
    key_halves,
    lease_key,
)

POSTGRES_URL = os.environ.get("CALLROUTER_TEST_POSTGRES")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
WAIT = 10.0

LeaseFactory = Callable[[], Lease]


@pytest.fixture(params=BACKENDS)
def new_lease(request: pytest.FixtureRequest, tmp_path: Path) -> LeaseFactory:
    """Leases of one group: on PostgreSQL a fresh name per test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        return lambda: FileLease(tmp_path / "directory.db")
    assert POSTGRES_URL is not None
    return lambda: PostgresLease(POSTGRES_URL, name)


async def _backend_pid(lease: PostgresLease) -> int:
    assert POSTGRES_URL is not None
    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid::text::bigint = $1 AND objid::text::bigint = $2 AND objsubid = 1",
            *key_halves(lease.key),
        )
        assert isinstance(pid, int)
        return pid
    finally:
        await conn.close()


async def _terminate(pid: int) -> None:
    assert POSTGRES_URL is not None
    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


def test_the_key_is_the_same_everywhere_and_differs_by_name() -> None:
    assert lease_key("callrouter@pbx1:8088") == lease_key("callrouter@pbx1:8088")
    assert lease_key("callrouter@pbx1:8088") != lease_key("callrouter@pbx2:8088")
    assert -(2**63) <= lease_key("x") < 2**63


async def test_one_holder_at_a_time(new_lease: LeaseFactory) -> None:
    first, second = new_lease(), new_lease()
    await first.acquire()
    assert await first.confirm() is True
    if not second.shared:
        with pytest.raises(LeaseRefused, match=r"one router per database.*PostgreSQL") as info:
            await second.acquire()
        assert f"pid {os.getpid()}" in str(info.value)
        await first.release()
        await second.acquire()  # free again once the first let go
        await second.release()
        return
    waiting = asyncio.ensure_future(second.acquire())
    await asyncio.sleep(0.3)
    assert not waiting.done()  # held: the second waits inside PostgreSQL
    await first.release()
    await asyncio.wait_for(waiting, WAIT)
    assert await second.confirm() is True
    assert await first.confirm() is False  # the first sees another holds it now
    await second.release()


async def test_a_holder_whose_session_ends_frees_the_lease_at_once(
    new_lease: LeaseFactory,
) -> None:
    first, second = new_lease(), new_lease()
    if not isinstance(first, PostgresLease) or not isinstance(second, PostgresLease):
        # SQLite: the process holding the file lock is the only router; its exit
        # (any exit) closes the file and frees it.
        await first.acquire()
        await first.release()
        await second.acquire()
        await second.release()
        return
    await first.acquire()
    waiting = asyncio.ensure_future(second.acquire())
    await asyncio.sleep(0.2)
    # What kill -9 of the holder, or its lost connection, looks like to PostgreSQL.
    await _terminate(await _backend_pid(first))
    await asyncio.wait_for(waiting, WAIT)  # no expiry to wait for
    assert await first.confirm() is False  # and the old holder learns it lost
    await second.release()


async def test_a_holder_that_stops_confirming_is_taken_for_gone(
    new_lease: LeaseFactory,
) -> None:
    """Its host gone or its process frozen: the connection stays open, but the
    holder's session shows no query for longer than stale_after."""
    frozen = new_lease()
    await frozen.acquire()
    if not isinstance(frozen, PostgresLease):
        with pytest.raises(LeaseRefused):  # SQLite: the one router's, frozen or not
            await new_lease().acquire()
        await frozen.release()
        return
    alive = PostgresLease(POSTGRES_URL or "", frozen.name, stale_after=0.5)
    # While the holder confirms, the standby waits (and ends nobody's session).
    waiting = asyncio.ensure_future(alive.acquire())
    for _ in range(8):
        assert await frozen.confirm() is True
        await asyncio.sleep(0.2)
    assert not waiting.done()
    # Then it goes silent: the standby ends its session and takes the lease.
    await asyncio.wait_for(waiting, WAIT)
    assert await alive.confirm() is True
    assert await frozen.confirm() is False  # back from the dead: it lost the lease
    await alive.release()


async def test_confirm_cannot_tell_while_the_database_is_unreachable(
    new_lease: LeaseFactory,
) -> None:
    lease = new_lease()
    await lease.acquire()
    if not isinstance(lease, PostgresLease):
        assert await lease.confirm() is True  # a local file lock: nothing to lose
        await lease.release()
        return
    pid = await _backend_pid(lease)
    lease._dsn = "postgresql://nobody@127.0.0.1:9/none"  # the database goes away
    await _terminate(pid)
    assert await lease.confirm() is None
    await lease.release()


async def test_two_routers_racing_for_the_lease_100_times_never_both_active(
    new_lease: LeaseFactory,
) -> None:
    active: set[int] = set()
    overlaps: list[set[int]] = []

    def contender(number: int, lease: Lease) -> Election:
        async def promote() -> None:
            active.add(number)
            if len(active) > 1:
                overlaps.append(set(active))

        async def demote(reason: str) -> None:
            active.discard(number)

        return Election(lease, promote=promote, demote=demote, check_interval=0.01)

    for _ in range(100):
        elections = [contender(n, new_lease()) for n in (1, 2)]
        tasks = [asyncio.ensure_future(e.run()) for e in elections]
        async with asyncio.timeout(WAIT):
            while not any(e.role is Role.ACTIVE for e in elections):
                await asyncio.sleep(0.005)
        roles = sorted(e.role.value for e in elections)
        assert roles == ["active", "standby"]
        # The winner goes (as at a shutdown): the other takes over, never both.
        winner = next(i for i, e in enumerate(elections) if e.role is Role.ACTIVE)
        tasks[winner].cancel()
        await asyncio.gather(tasks[winner], return_exceptions=True)
        active.discard(winner + 1)
        await elections[winner].lease.release()
        other = elections[1 - winner]
        refused = tasks[1 - winner].done()  # SQLite: the loser was refused at once
        if refused:
            assert isinstance(tasks[1 - winner].exception(), LeaseRefused)
        else:
            async with asyncio.timeout(WAIT):
                while other.role is not Role.ACTIVE:
                    await asyncio.sleep(0.005)
        tasks[1 - winner].cancel()
        await asyncio.gather(tasks[1 - winner], return_exceptions=True)
        await other.lease.release()
        active.clear()
    assert overlaps == []


@pytest.mark.parametrize("name", ["", "x" * 201])
def test_a_lease_name_must_be_1_to_200_characters(name: str) -> None:
    from pydantic import ValidationError

    from callrouter.config import Settings

    with pytest.raises(ValidationError, match="lease_name"):
        Settings(lease_name=name)
