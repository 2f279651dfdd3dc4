"""Wires the election: the lease the directory's database offers, and the router's
promote/demote."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from callrouter.cluster.election import Election
from callrouter.cluster.lease import FileLease, Lease, PostgresLease
from callrouter.config import Settings
from callrouter.directory.database import sqlite_path


def lease_name(settings: Settings) -> str:
    """One name per Asterisk and app: the routers that share it are one group.

    ``lease_name`` when set (routers that reach one Asterisk at different addresses),
    else the app and the ARI address, e.g. ``callrouter@127.0.0.1:8088``."""
    if settings.lease_name is not None:
        return settings.lease_name
    return f"{settings.ari_app}@{urlsplit(settings.ari_url).netloc}"


def build_lease(settings: Settings) -> Lease | None:
    """PostgreSQL: an advisory lock; an SQLite file: a file lock beside it (one router
    per database); in-memory or other backends: None (no lease, always active)."""
    url = make_url(settings.db)
    if url.get_backend_name() == "postgresql":
        # A holder silent for three confirmations (1.5 s at least) is taken for gone.
        stale = max(1.5, 3 * settings.lease_check_interval)
        return PostgresLease(settings.db, lease_name(settings), stale_after=stale)
    path = sqlite_path(url)
    if path is not None:
        return FileLease(path.resolve())
    return None


def build(
    lease: Lease,
    settings: Settings,
    *,
    promote: Callable[[], Awaitable[None]],
    demote: Callable[[str], Awaitable[None]],
) -> Election:
    return Election(
        lease, promote=promote, demote=demote, check_interval=settings.lease_check_interval
    )
