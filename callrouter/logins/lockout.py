"""PIN lockout: after 5 wrong PINs within 15 minutes, stop asking.

Counted per user and per source (a phone, a client address), so that neither
guessing one user's PIN from many places nor many users' PINs from one place
works.  Unknown extensions count like known ones, so a lockout says nothing about
whether an extension exists.  The clock is injected for tests.

The counters live in the router's memory: with several routers, each one counts
on its own (an attacker gets 5 tries per router and window).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
# Bound memory under a flood of distinct keys: forget the oldest keys first.
MAX_KEYS = 100_000


def user_key(extension: str) -> str:
    return f"user:{extension}"


def source_key(source: str) -> str:
    return f"source:{source}"


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
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.max_failures:
                wait = max(wait, times[-self.max_failures] + self.window - now)
        return wait if wait > 0 else None

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
