"""PIN lockout: after 5 wrong PINs within 15 minutes, stop asking.

Counted per user and per source (a phone, a client address), so that neither
guessing one user's PIN from many places nor many users' PINs from one place
works.  Unknown extensions count like known ones, so a lockout says nothing about
whether an extension exists.  The clock is injected for tests.

``PinLockout`` counts in memory (one router, and the tests);
``DatabaseLockout`` counts in the directory database, so that every router sharing
it counts the same tries.  Both apply ``retry_after_of``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import begin_read, begin_write

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
# Bound memory under a flood of distinct keys: forget the oldest keys first.
MAX_KEYS = 100_000


def user_key(extension: str) -> str:
    return f"user:{extension}"


def source_key(source: str) -> str:
    return f"source:{source}"


def retry_after_of(
    times: Sequence[float],
    now: float,
    *,
    max_failures: int = MAX_FAILURES,
    window: float = WINDOW_SECONDS,
) -> float | None:
    """Seconds until one more try is allowed, given the failure times of one key
    (sorted, any age); None when it is allowed now."""
    recent = [t for t in times if t > now - window]
    if len(recent) < max_failures:
        return None
    wait = recent[-max_failures] + window - now
    return wait if wait > 0 else None


class Lockout(Protocol):
    """What LoginService needs of a lockout."""

    async def retry_after(self, *keys: str) -> float | None: ...

    async def failed(self, *keys: str) -> None: ...

    async def succeeded(self, *keys: str) -> None: ...


class DatabaseLockout:
    """Failures counted in the directory database (table ``pin_failures``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.window = window
        self._clock = clock

    async def retry_after(self, *keys: str) -> float | None:
        now = self._clock()
        since = now - timedelta(seconds=self.window)
        f = s.pin_failures
        async with begin_read(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(f.c.key, f.c.at)
                    .where(f.c.key.in_(keys), f.c.at > since)
                    .order_by(f.c.at)
                )
            ).all()
        waits = [
            retry_after_of(
                [(row.at - now).total_seconds() for row in rows if row.key == key],
                0.0,
                max_failures=self.max_failures,
                window=self.window,
            )
            for key in keys
        ]
        return max((w for w in waits if w is not None), default=None)

    async def failed(self, *keys: str) -> None:
        now = self._clock()
        f = s.pin_failures
        async with begin_write(self.engine) as conn:
            await conn.execute(insert(f), [{"key": key, "at": now} for key in keys])
            # Keep the table small: what left the window no longer counts.
            await conn.execute(delete(f).where(f.c.at <= now - timedelta(seconds=self.window)))

    async def succeeded(self, *keys: str) -> None:
        f = s.pin_failures
        async with begin_write(self.engine) as conn:
            await conn.execute(delete(f).where(f.c.key.in_(keys)))


class MemoryLockout:
    """``PinLockout`` behind the async ``Lockout`` interface."""

    def __init__(self, counts: PinLockout | None = None) -> None:
        self.counts = counts or PinLockout()

    async def retry_after(self, *keys: str) -> float | None:
        return self.counts.retry_after(*keys)

    async def failed(self, *keys: str) -> None:
        self.counts.failed(*keys)

    async def succeeded(self, *keys: str) -> None:
        self.counts.succeeded(*keys)


class PinLockout:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, *keys: str) -> float | None:
        """Seconds until any of ``keys`` may try again; None if none is locked."""
        now = self._clock()
        waits = [
            retry_after_of(
                list(self._recent(key, now) or ()),
                now,
                max_failures=self.max_failures,
                window=self.window,
            )
            for key in keys
        ]
        return max((w for w in waits if w is not None), default=None)

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= MAX_KEYS:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque(maxlen=self.max_failures)
            times.append(now)

    def succeeded(self, *keys: str) -> None:
        """A right PIN clears the user's count (not the source's: one good PIN from a
        source must not reset its tries against other users)."""
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times
