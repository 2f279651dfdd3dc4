"""PIN lockout: every PIN check is counted before it happens.

The policy (``LockoutPolicy``), per source and per user:

* **a source** (a phone endpoint, a client address) that got 5 PINs wrong within 15
  minutes is locked until the oldest of them leaves the window: one place cannot
  guess many users' PINs, nor one user's quickly;
* **a user** is never locked out by wrong PINs (anyone can type them, from anywhere):
  they slow the checks down instead.  From the 5th wrong PIN within the last hour on,
  each further check for that user waits 1, 2, 4, ... seconds after the previous
  one, at most ``user_delay_cap`` (180 s).  In the long run that is 20 checks per
  user per hour from all sources together, as many as the old "5 in 15 minutes"
  lockout allowed, but a stranger's wrong PINs cost the real user seconds, at most
  3 minutes, instead of 15 minutes.

Atomic: ``reserve`` counts the recent tries of both keys and records this one in one
step (the database: one write transaction; in memory: no await between), before the
PIN is checked.  A try in flight counts like a wrong PIN, so however many requests
race, no more PINs are checked than the policy allows.  A wrong PIN leaves its
reservation as the failure; a right one removes it and clears the user's count (not
the source's: one good PIN from a place must not reset its tries against others).

Keys have a bounded size whatever a client sends: ``user:<extension>`` for a valid
extension, a SHA-256 digest for anything else and for every source.  Unknown
extensions count like known ones, so a lockout says nothing about whether an
extension exists.  Clocks are injected for tests.

``PinLockout`` counts in memory (one router, and the tests); ``DatabaseLockout``
counts in the directory database (table ``pin_failures``), so that every router
sharing it counts the same tries.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import begin_write
from callrouter.domain.identifiers import EXTENSION_PATTERN

# Bound memory under a flood of distinct keys: forget the oldest keys first.
MAX_KEYS = 100_000


def _digest(text: str) -> str:
    # surrogatepass: any str encodes, so no client input can make counting fail.
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def user_key(extension: str) -> str:
    """The lockout key of an extension: readable when valid, a digest otherwise."""
    if EXTENSION_PATTERN.fullmatch(extension):
        return f"user:{extension}"
    return f"user:{_digest(extension)}"


def source_key(source: str) -> str:
    """The lockout key of a source: always a digest (78 characters)."""
    return f"source:{_digest(source)}"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    source_failures: int = 5  # wrong PINs from one source ...
    source_window: float = 15 * 60  # ... within this many seconds lock the source
    user_free: int = 5  # wrong PINs for one user before checks slow down
    user_window: float = 60 * 60  # how long a user's wrong PINs count
    user_delay_cap: float = 180.0  # the longest wait between two checks of one user

    @property
    def horizon(self) -> float:
        """How long a try matters for any key."""
        return max(self.source_window, self.user_window)

    def source_wait(self, times: Iterable[float], now: float) -> float | None:
        """Seconds until a source with failures at ``times`` may try again; None: now."""
        recent = sorted(min(t, now) for t in times if t > now - self.source_window)
        if len(recent) < self.source_failures:
            return None
        wait = recent[-self.source_failures] + self.source_window - now
        return wait if wait > 0 else None

    def user_delay(self, failures: int) -> float:
        """The wait after the previous check once a user has ``failures`` recent ones."""
        if failures < self.user_free:
            return 0.0
        doublings = failures - self.user_free
        return self.user_delay_cap if doublings >= 64 else min(2.0**doublings, self.user_delay_cap)

    def user_wait(self, times: Iterable[float], now: float) -> float | None:
        """Seconds until a user with failures at ``times`` may be checked; None: now."""
        recent = [min(t, now) for t in times if t > now - self.user_window]
        if len(recent) < self.user_free:
            return None
        wait = max(recent) + self.user_delay(len(recent)) - now
        return wait if wait > 0 else None

    def wait(
        self, user_times: Iterable[float], source_times: Iterable[float], now: float
    ) -> float | None:
        """Seconds until a check for this user from this source may happen; None: now."""
        waits = [self.user_wait(user_times, now), self.source_wait(source_times, now)]
        return max((w for w in waits if w is not None), default=None)


DEFAULT_POLICY = LockoutPolicy()


class Locked(Exception):
    """No PIN may be checked for this user from this source for ``retry_after`` s."""

    def __init__(self, retry_after: float, *, source_locked: bool) -> None:
        super().__init__(f"locked for {retry_after:.0f} s")
        self.retry_after = retry_after
        self.source_locked = source_locked  # False: the user's checks are slowed down


@dataclass(frozen=True, slots=True)
class Reservation:
    """A counted try: the right to check one PIN for ``user`` from ``source``."""

    user: str  # keys
    source: str
    handles: tuple[int, ...]  # the rows (or in-memory entries) that count it


class Lockout(Protocol):
    """What LoginService needs of a lockout."""

    async def reserve(self, extension: str, source: str) -> Reservation:
        """Count a try before its PIN is checked; ``Locked`` when none may happen now."""
        ...

    async def succeeded(self, reservation: Reservation) -> None:
        """The PIN was right: forget this try and the user's wrong ones."""
        ...


def _locked(
    policy: LockoutPolicy, user_times: list[float], source_times: list[float], now: float
) -> Locked | None:
    wait = policy.wait(user_times, source_times, now)
    if wait is None:
        return None
    return Locked(wait, source_locked=policy.source_wait(source_times, now) is not None)


class DatabaseLockout:
    """Tries counted in the directory database (table ``pin_failures``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: LockoutPolicy = DEFAULT_POLICY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.policy = policy
        self._clock = clock

    async def reserve(self, extension: str, source: str) -> Reservation:
        user, src = user_key(extension), source_key(source)
        now = self._clock()
        horizon = now - timedelta(seconds=self.policy.horizon)
        f = s.pin_failures
        # One write transaction: writers are serialised (begin_write), so no other
        # router counts these keys between this count and this insert.
        async with begin_write(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(f.c.key, f.c.at).where(f.c.key.in_((user, src)), f.c.at > horizon)
                )
            ).all()
            ago: dict[str, list[float]] = {user: [], src: []}
            for row in rows:
                ago[row.key].append((row.at - now).total_seconds())
            locked = _locked(self.policy, ago[user], ago[src], 0.0)
            if locked is not None:
                raise locked
            handles = (
                await conn.execute(
                    insert(f).returning(f.c.id),
                    [{"key": user, "at": now}, {"key": src, "at": now}],
                )
            ).scalars()
            reservation = Reservation(user, src, tuple(handles))
            # Keep the table small: what left every window no longer counts.
            await conn.execute(delete(f).where(f.c.at <= horizon))
        return reservation

    async def succeeded(self, reservation: Reservation) -> None:
        f = s.pin_failures
        async with begin_write(self.engine) as conn:
            await conn.execute(
                delete(f).where(or_(f.c.id.in_(reservation.handles), f.c.key == reservation.user))
            )


class MemoryLockout:
    """``PinLockout`` behind the async ``Lockout`` interface."""

    def __init__(self, counts: PinLockout | None = None) -> None:
        self.counts = counts or PinLockout()

    async def reserve(self, extension: str, source: str) -> Reservation:
        return self.counts.reserve(extension, source)

    async def succeeded(self, reservation: Reservation) -> None:
        self.counts.succeeded(reservation)


class PinLockout:
    """Tries counted in memory: the same policy and semantics as ``DatabaseLockout``."""

    def __init__(
        self,
        *,
        policy: LockoutPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._clock = clock
        # Per key: (time, handle) of each counted try, oldest first.
        self._tries: dict[str, deque[tuple[float, int]]] = {}
        self._handles = itertools.count(1)

    def retry_after(self, extension: str, source: str) -> float | None:
        """Seconds until a PIN for ``extension`` from ``source`` may be checked."""
        now = self._clock()
        return self.policy.wait(
            self._times(user_key(extension), now), self._times(source_key(source), now), now
        )

    def reserve(self, extension: str, source: str) -> Reservation:
        user, src = user_key(extension), source_key(source)
        now = self._clock()
        locked = _locked(self.policy, self._times(user, now), self._times(src, now), now)
        if locked is not None:
            raise locked
        handle = next(self._handles)
        for key in (user, src):
            tries = self._tries.get(key)
            if tries is None:
                if len(self._tries) >= MAX_KEYS:
                    del self._tries[next(iter(self._tries))]
                tries = self._tries[key] = deque()
            tries.append((now, handle))
        return Reservation(user, src, (handle,))

    def succeeded(self, reservation: Reservation) -> None:
        self._tries.pop(reservation.user, None)
        tries = self._tries.get(reservation.source)
        if tries is not None:
            kept = deque(t for t in tries if t[1] not in reservation.handles)
            if kept:
                self._tries[reservation.source] = kept
            else:
                del self._tries[reservation.source]

    def _times(self, key: str, now: float) -> list[float]:
        tries = self._tries.get(key)
        if tries is None:
            return []
        while tries and tries[0][0] <= now - self.policy.horizon:
            tries.popleft()
        if not tries:
            del self._tries[key]
            return []
        return [at for at, _ in tries]
