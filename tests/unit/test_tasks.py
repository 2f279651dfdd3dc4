"""TaskSet, the one owner of background tasks, and the graceful shutdown built on it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from callrouter.app import StopSignals
from callrouter.calls.intake import CallIntake
from callrouter.domain.directory import DirectorySnapshot
from callrouter.rules.model import RingRules
from callrouter.tasks import TaskSet


async def test_a_task_is_kept_until_it_ends_and_then_forgotten() -> None:
    tasks = TaskSet("test")
    gate = asyncio.Event()
    task = tasks.spawn(gate.wait(), "waiter")
    assert task in tasks and len(tasks) == 1
    gate.set()
    await task
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert task not in tasks and len(tasks) == 0


async def test_a_failure_is_logged_at_once_with_its_owner_and_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    tasks = TaskSet("presence")
    task = tasks.spawn(fails(), "expirer")
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    (record,) = [r for r in caplog.records if r.name == "callrouter.tasks"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "presence: task expirer failed"
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_a_cancelled_task_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("test")
    tasks.spawn(asyncio.Event().wait())
    await tasks.close()
    assert len(tasks) == 0
    assert not [r for r in caplog.records if r.name == "callrouter.tasks"]


async def test_close_lets_tasks_finish_within_the_grace_then_cancels_the_rest() -> None:
    tasks = TaskSet("test")
    quick = tasks.spawn(asyncio.sleep(0.01, "done"))
    stuck = tasks.spawn(asyncio.Event().wait())
    await tasks.close(grace=0.5)
    assert quick.result() == "done"
    assert stuck.cancelled()
    assert len(tasks) == 0


async def test_wait_ends_early_when_the_event_is_set() -> None:
    tasks = TaskSet("test")
    stuck = tasks.spawn(asyncio.Event().wait())
    force = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, force.set)
    async with asyncio.timeout(5):  # far less than the 3,600 s asked for
        pending = await tasks.wait(3600, until=force)
    assert pending == {stuck}
    await tasks.close()


async def test_a_task_may_close_the_set_it_belongs_to() -> None:
    tasks = TaskSet("test")
    other = tasks.spawn(asyncio.Event().wait())

    async def closer() -> None:
        await tasks.close(grace=0.01)

    await tasks.spawn(closer())
    assert other.cancelled()


def test_the_second_stop_signal_ends_the_grace() -> None:
    signals = StopSignals()
    signals.received()
    assert signals.stop.is_set() and not signals.force.is_set()
    signals.received()
    assert signals.force.is_set()


async def test_a_forced_shutdown_does_not_wait_out_the_grace() -> None:
    class NoAri:
        app = "callrouter"

    intake = CallIntake(NoAri(), lambda: (DirectorySnapshot(), RingRules()))  # type: ignore[arg-type]
    ringing = intake.tasks.spawn(asyncio.Event().wait(), "a ringing call")
    force = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, force.set)
    async with asyncio.timeout(10):  # the grace asked for is an hour
        await intake.stop(3600, force=force)
    assert not intake.accepting
    assert ringing.cancelled()
