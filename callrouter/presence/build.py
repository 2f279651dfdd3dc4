"""Wires presence: the tracker follows the live directory, AMI feeds and publishes, and
client statuses are shared with the other routers through the directory database."""

from __future__ import annotations

from callrouter.ami.client import AmiClient
from callrouter.ami.protocol import AmiMessage
from callrouter.directory.changes import CLIENT_STATUS_CHANNEL, ChangeFeed
from callrouter.directory.live import LiveDirectory
from callrouter.metrics import Metrics
from callrouter.presence.live import PresenceService
from callrouter.presence.shared import ClientStatusStore
from callrouter.presence.tracker import PresenceTracker

# The AMI events that carry presence (FullyBooted, the third one, only starts a resync).
_STATE_EVENTS = frozenset({"DeviceStateChange", "ContactStatus"})
# While PostgreSQL announces client status changes, the poll is only a safety net.
CLIENT_POLL_WHILE_LISTENING = 30.0


def build(
    ami: AmiClient,
    live: LiveDirectory,
    *,
    heartbeat_timeout: float,
    poll_interval: float,
    changes: ChangeFeed | None = None,
    metrics: Metrics | None = None,
) -> PresenceService:
    def poll_delay() -> float:
        if changes is not None and changes.connected:
            return max(poll_interval, CLIENT_POLL_WHILE_LISTENING)
        return poll_interval

    service = PresenceService(
        PresenceTracker(live.snapshot, heartbeat_timeout=heartbeat_timeout),
        ami,
        store=ClientStatusStore(live.engine, heartbeat_timeout=heartbeat_timeout),
        poll_delay=poll_delay,
    )
    live.subscribe(lambda concerned: service.set_snapshot(live.snapshot, concerned))
    if changes is not None:
        listen_for_client_statuses(service, changes)
    if metrics is not None:
        counted = metrics

        def count(event: AmiMessage) -> None:
            if event.event in _STATE_EVENTS:
                counted.presence_event()

        ami.subscribe(count)
    return service


def listen_for_client_statuses(service: PresenceService, changes: ChangeFeed) -> None:
    """Re-read a user's client statuses when PostgreSQL announces a change to them
    (the payload is the extension), everyone's after every (re)connect; a burst is
    read in one go."""
    pending: set[str] | None = set()  # None: everyone

    async def reload() -> None:
        nonlocal pending
        wanted, pending = pending, set()
        await service.reload_clients(wanted)

    coalesced = changes.coalesce("client status", reload)

    def changed(extension: str) -> None:
        if pending is not None:
            pending.add(extension)
        coalesced.request()

    def everyone() -> None:
        nonlocal pending
        pending = None
        coalesced.request()

    changes.on(CLIENT_STATUS_CHANNEL, changed)
    changes.on_connect(everyone)
