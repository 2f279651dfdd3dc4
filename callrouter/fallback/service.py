"""The fallback kept current: computed and published together, one user at a time."""

from __future__ import annotations

import logging

from callrouter.ami.client import AmiClient
from callrouter.directory.live import LiveDirectory
from callrouter.fallback.astdb import FallbackPublisher
from callrouter.fallback.entries import FallbackEntry, fallback_entries
from callrouter.tasks import TaskSet

log = logging.getLogger(__name__)


class FallbackService:
    """Keeps AstDB's fallback dial strings in step with the live directory and rules."""

    def __init__(self, ami: AmiClient, live: LiveDirectory, *, node: str | None = None) -> None:
        self.live = live
        self.node = node
        self.publisher = FallbackPublisher(ami)
        self.tasks = TaskSet("fallback")

    async def on_ami_connected(self) -> None:
        """After every AMI login: read back what Asterisk has, then fix the differences."""
        await self.publisher.resync(
            fallback_entries(self.live.snapshot, self.live.rules, node=self.node)
        )

    def directory_changed(self, concerned: frozenset[str] | None) -> None:
        """Only the users a change concerns are worked out again (None: everyone)."""
        entries = fallback_entries(self.live.snapshot, self.live.rules, concerned, node=self.node)
        self.tasks.spawn(self._publish(entries, concerned), "fallback-publish")

    async def _publish(
        self, entries: dict[str, FallbackEntry], concerned: frozenset[str] | None
    ) -> None:
        try:
            await self.publisher.publish(entries, concerned)
        except Exception as exc:  # AMI down: the resync after the next connect catches up
            log.warning("AstDB fallback not updated: %s", exc)

    async def close(self) -> None:
        await self.tasks.close(grace=1.0)
