"""Keeps Asterisk's AstDB fallback entries in step with the directory and rules.

What the router believes is in AstDB is kept in ``published``; after every AMI
(re)connect it is read back from Asterisk (DBGetTree), because Asterisk may have
restarted or someone may have edited it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from callrouter.ami import AmiError
from callrouter.ami.client import AmiClient
from callrouter.fallback.entries import DIAL_FAMILY, TIMEOUT_FAMILY, FallbackEntry

log = logging.getLogger(__name__)


class FallbackPublisher:
    def __init__(self, ami: AmiClient) -> None:
        self.ami = ami
        self.published: dict[str, FallbackEntry] | None = None  # None: unknown

    async def resync(self, wanted: Mapping[str, FallbackEntry]) -> None:
        """After a (re)connect: read what Asterisk has, then fix the differences."""
        self.published = await self._read_back()
        await self.publish(wanted)

    async def publish(
        self, wanted: Mapping[str, FallbackEntry], only: Iterable[str] | None = None
    ) -> None:
        """Write only what changed since the last publish.

        ``wanted`` is every entry, or with ``only`` the entries of those extensions
        (the others are left as they are).
        """
        if self.published is None:
            return  # not connected yet; resync() follows the connection
        published = self.published
        changed = [ext for ext, entry in wanted.items() if published.get(ext) != entry]
        scope = published if only is None else [ext for ext in only if ext in published]
        removed = [ext for ext in scope if ext not in wanted]
        for extension in changed:
            entry = wanted[extension]
            await self.ami.db_put(DIAL_FAMILY, extension, entry.dial)
            await self.ami.db_put(TIMEOUT_FAMILY, extension, str(entry.timeout))
            published[extension] = entry
        for extension in removed:
            await self.ami.db_del(DIAL_FAMILY, extension)
            await self.ami.db_del(TIMEOUT_FAMILY, extension)
            del published[extension]
        if changed or removed:
            log.info(
                "AstDB fallback: %d entr%s written, %d removed",
                len(changed),
                "y" if len(changed) == 1 else "ies",
                len(removed),
            )

    async def _read_back(self) -> dict[str, FallbackEntry]:
        dials = await self._tree(DIAL_FAMILY)
        timeouts = await self._tree(TIMEOUT_FAMILY)
        entries: dict[str, FallbackEntry] = {}
        for extension, dial in dials.items():
            timeout = timeouts.get(extension, "")
            entries[extension] = FallbackEntry(dial, int(timeout) if timeout.isdigit() else -1)
        # An extension with only a timeout left over is removed by the next publish.
        for extension in timeouts.keys() - dials.keys():
            entries[extension] = FallbackEntry("", -1)
        return entries

    async def _tree(self, family: str) -> dict[str, str]:
        try:
            messages = await self.ami.send_list_action("DBGetTree", Family=family)
        except AmiError as exc:
            if "not found" in str(exc).lower():
                return {}
            raise
        tree: dict[str, str] = {}
        prefix = f"/{family}/"
        for message in messages:
            key, value = message.get("Key"), message.get("Val")
            if key and key.startswith(prefix) and value is not None:
                tree[key[len(prefix) :]] = value
        return tree
