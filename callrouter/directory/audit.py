"""The audit log of login changes and of the users' own forwardings and switches,
written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.directory import schema as s


@dataclass(slots=True)
class AuditEntry:
    # "login", "logout", "displaced"; "forward", "unforward", "switch_on", "switch_off"
    # (callrouter.personal: what changed is in ``detail``, the workplaces are None)
    action: str
    extension: str
    old_workplace: str | None
    new_workplace: str | None
    detail: str | None = None


async def write_audit(
    conn: AsyncConnection,
    entries: Sequence[AuditEntry],
    *,
    at: datetime,
    actor: str,
    source: str,
) -> None:
    """Add ``entries`` to the audit log, inside the caller's write transaction."""
    if not entries:
        return
    await conn.execute(
        insert(s.audit),
        [
            {
                "at": at,
                "actor": actor,
                "source": source,
                "action": entry.action,
                "extension": entry.extension,
                "old_workplace": entry.old_workplace,
                "new_workplace": entry.new_workplace,
                "detail": entry.detail,
            }
            for entry in entries
        ],
    )
