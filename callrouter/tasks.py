"""One way to own background tasks, for every component of the router.

A bare ``asyncio.create_task`` is easy to lose: the loop keeps only a weak reference,
an exception in it is reported only when it is garbage collected, and nothing waits
for it at shutdown.  A ``TaskSet`` keeps its tasks until they end, logs a failure
as soon as it happens, and closes them all together: within a grace period, then
cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskSet:
    def __init__(self, owner: str) -> None:
        self.owner = owner  # for log lines: whose task failed
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s: task %s failed",
                self.owner,
                task.get_name(),
                exc_info=task.exception(),
            )

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._tasks))

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    async def wait(
        self, timeout: float | None, *, until: asyncio.Event | None = None
    ) -> set[asyncio.Task[Any]]:
        """Wait up to ``timeout`` seconds (or until ``until`` is set) for the running
        tasks to end; return those still running.

        The caller's own task is left out, so a task may close the set it belongs to.
        """
        running = self._others()
        if not running or (until is not None and until.is_set()):
            return running
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(running))}
        if until is not None:
            waiters.add(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:  # cancels the waiting, not the tasks waited for
                waiter.cancel()
        return {t for t in running if not t.done()}

    async def close(self, grace: float = 0.0, *, until: asyncio.Event | None = None) -> None:
        """Let the tasks run for ``grace`` seconds (or until ``until`` is set), then
        cancel the rest and await them."""
        pending = await self.wait(grace, until=until) if grace > 0 else self._others()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _others(self) -> set[asyncio.Task[Any]]:
        return {t for t in self._tasks if t is not asyncio.current_task()}
