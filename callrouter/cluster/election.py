"""Active or standby: which of the routers of one Asterisk runs its Stasis app.

Every router of one Asterisk runs an ``Election`` on the same lease (``lease.py``). The
one holding it is *active*: it connects the ARI websocket and routes the calls. The
others are *standby*: their snapshot, presence, FastAGI and HTTP API run as usual
(logins are database transactions, safe from any router); they wait for the lease.

Two guards keep two routers from taking calls at once:

* the lease: a router becomes active only once it holds it, and an active router that
  learns another holds it now stops taking calls first, then lets go;
* Asterisk: an app's events go to one websocket, the newest. When another router
  connects the app, the old one gets ``ApplicationReplaced`` and stops at once
  (``replaced``), whatever it believes about the lease.

So an active router that cannot reach the database (``confirm`` says None) goes on
routing from its snapshot: if another router could take the lease, its websocket
takes the app over, and this one hears of it from Asterisk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from callrouter.cluster.lease import Lease

log = logging.getLogger(__name__)

__all__ = ["Election", "Role"]


class Role(StrEnum):
    ACTIVE = "active"
    STANDBY = "standby"


class Election:
    """Holds the lease while it can, and says so through ``promote``/``demote``.

    ``promote()`` starts taking calls (connect ARI, resync, take over waiting
    callers) and returns once that is done; ``demote(reason)`` stops taking calls and
    leaves every channel as it is, for the next active router to take over.
    """

    def __init__(
        self,
        lease: Lease,
        *,
        promote: Callable[[], Awaitable[None]],
        demote: Callable[[str], Awaitable[None]],
        check_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease = lease
        self._promote = promote
        self._demote = demote
        self.check_interval = check_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self.role = Role.STANDBY
        self.since = wall_clock()  # when the current role began (Unix time)
        # Why the lease could not be confirmed lately (active, database unreachable).
        self.unconfirmed: str | None = None
        self.takeover_seconds: float | None = None  # the last promotion: lease to routing
        self.terms = 0  # how often this router became active
        self._replaced = asyncio.Event()

    def replaced(self) -> None:
        """Asterisk gave the app to another connection (``ApplicationReplaced``)."""
        self._replaced.set()

    async def run(self) -> None:
        """Forever: wait for the lease, be active while it holds, then standby again."""
        while True:
            await self.lease.acquire()
            self._replaced.clear()
            started = self._clock()
            self._set(Role.ACTIVE)
            self.terms += 1
            reason = await self._promote_confirming()
            if reason is None:
                self.takeover_seconds = self._clock() - started
                log.info(
                    "active: lease %s held; routing after %.3f s (term %d)",
                    self.lease.name,
                    self.takeover_seconds,
                    self.terms,
                )
                reason = await self._hold()
            # Stop taking calls before the lease is let go: never two routers at once.
            self._set(Role.STANDBY)
            log.warning("standby: %s", reason)
            try:
                await self._demote(reason)
            finally:
                await self.lease.release()

    async def _promote_confirming(self) -> str | None:
        """``promote()``, confirming the lease meanwhile (a standby takes a holder that
        stays silent for long for gone); why it must stop, if it must."""
        promoting = asyncio.ensure_future(self._promote())
        try:
            while True:
                done, _ = await asyncio.wait({promoting}, timeout=self.check_interval)
                if done:
                    promoting.result()
                    return None
                if self._replaced.is_set():
                    return "another router took the ARI app over (ApplicationReplaced)"
                if await self.lease.confirm() is False:
                    return f"lease {self.lease.name} is held by another router"
        finally:
            if not promoting.done():
                promoting.cancel()
                await asyncio.gather(promoting, return_exceptions=True)

    async def _hold(self) -> str:
        """While active: returns why this router must stop."""
        while True:
            try:
                async with asyncio.timeout(self.check_interval):
                    await self._replaced.wait()
            except TimeoutError:
                pass
            else:
                return "another router took the ARI app over (ApplicationReplaced)"
            held = await self.lease.confirm()
            if held is False:
                return f"lease {self.lease.name} is held by another router"
            if held is None and self.unconfirmed is None:
                self.unconfirmed = "the database is unreachable: the lease cannot be confirmed"
                log.warning("active: %s; routing on from the snapshot", self.unconfirmed)
            elif held and self.unconfirmed is not None:
                self.unconfirmed = None
                log.info("active: lease %s confirmed again", self.lease.name)

    def _set(self, role: Role) -> None:
        self.role = role
        self.since = self._wall_clock()
        self.unconfirmed = None
