"""The automatic logout, run: every interval, end the logins past their cut-off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from callrouter.logins.service import LoginService
from callrouter.rules.model import RingRules
from callrouter.tasks import TaskSet

log = logging.getLogger(__name__)


def time_zone(name: str | None) -> tzinfo:
    """The named IANA zone, or the machine's own (asked each time: it follows DST)."""
    if name is not None:
        return ZoneInfo(name)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


class AutoLogout:
    def __init__(
        self,
        service: LoginService,
        rules: Callable[[], RingRules],
        *,
        timezone: str | None,
        interval: float,
    ) -> None:
        self.service = service
        self.rules = rules
        self.timezone = timezone
        self.interval = interval
        self.tasks = TaskSet("auto-logout")

    def start(self) -> None:
        self.tasks.spawn(self._sweep(), "auto-logout")

    async def close(self) -> None:
        await self.tasks.close()

    async def _sweep(self) -> None:
        """Now and every interval: idempotent, so any router may sweep at any time."""
        while True:
            try:
                await self.service.expire(self.rules(), time_zone(self.timezone))
            except Exception:
                log.exception("automatic logout failed; trying again next interval")
            await asyncio.sleep(self.interval)
