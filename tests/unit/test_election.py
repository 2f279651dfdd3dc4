"""The election on a lease the test controls: who is active, when, and in which order
a router stops taking calls and lets the lease go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from callrouter.cluster.election import Election, Role

WAIT = 5.0


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


class ScriptedLease:
    """A lease the test hands out (``grant``) and whose confirmations it scripts."""

    name = "callrouter@test"
    shared = True

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.granted = asyncio.Event()
        self.answers: asyncio.Queue[bool | None] = asyncio.Queue()

    def grant(self) -> None:
        self.granted.set()

    async def acquire(self) -> None:
        await self.granted.wait()
        self.granted.clear()
        self.log.append("acquired")

    async def confirm(self) -> bool | None:
        answer = await self.answers.get()
        self.log.append(f"confirm:{answer}")
        return answer

    async def release(self) -> None:
        self.log.append("released")

    async def standby_waiting(self) -> bool:
        return False


class Harness:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.lease = ScriptedLease(self.log)
        self.changed = asyncio.Event()
        self.election = Election(
            self.lease, promote=self.promote, demote=self.demote, check_interval=0.01
        )

    async def promote(self) -> None:
        self.log.append("promote")
        self.changed.set()

    async def demote(self, reason: str) -> None:
        self.log.append(f"demote:{reason}")
        self.changed.set()

    async def next_change(self) -> None:
        await asyncio.wait_for(self.changed.wait(), WAIT)
        self.changed.clear()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    task = asyncio.ensure_future(h.election.run())
    yield h
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_standby_until_the_lease_is_held_then_active(harness: Harness) -> None:
    await asyncio.sleep(0.05)
    assert harness.election.role is Role.STANDBY and harness.log == []
    harness.lease.grant()
    await harness.next_change()
    assert harness.election.role is Role.ACTIVE and harness.log == ["acquired", "promote"]
    assert harness.election.terms == 1 and harness.election.takeover_seconds is not None


async def test_a_lost_lease_stops_the_calls_before_it_is_let_go(harness: Harness) -> None:
    harness.lease.grant()
    await harness.next_change()
    harness.lease.answers.put_nowait(True)
    harness.lease.answers.put_nowait(False)  # another router holds it now
    await harness.next_change()
    await asyncio.sleep(0.05)
    assert harness.election.role is Role.STANDBY
    assert harness.log[-2].startswith("demote:lease callrouter@test is held by another")
    assert harness.log[-1] == "released"  # only after the router stopped taking calls
    # And it waits for the lease again.
    harness.lease.grant()
    await harness.next_change()
    assert harness.election.role is Role.ACTIVE and harness.election.terms == 2


async def test_application_replaced_demotes_at_once_without_asking_the_database(
    harness: Harness,
) -> None:
    harness.lease.grant()
    await harness.next_change()
    harness.election.replaced()  # no confirmation is ever answered
    await harness.next_change()
    assert harness.election.role is Role.STANDBY
    assert [e for e in harness.log if e.startswith("confirm")] == []
    demotions = [e for e in harness.log if e.startswith("demote:")]
    assert len(demotions) == 1 and "(ApplicationReplaced)" in demotions[0]


async def test_an_unreachable_database_keeps_the_active_router_routing(
    harness: Harness,
) -> None:
    harness.lease.grant()
    await harness.next_change()
    harness.lease.answers.put_nowait(None)
    await until(lambda: harness.election.unconfirmed is not None)
    assert harness.election.role is Role.ACTIVE
    assert "cannot be confirmed" in harness.election.unconfirmed
    harness.lease.answers.put_nowait(True)  # reachable again
    await until(lambda: harness.election.unconfirmed is None)
    assert harness.election.role is Role.ACTIVE
    assert not [e for e in harness.log if e.startswith("demote")]
