"""Wires presence: the tracker follows the live directory, AMI feeds and publishes."""

from __future__ import annotations

from callrouter.ami.client import AmiClient
from callrouter.ami.protocol import AmiMessage
from callrouter.directory.live import LiveDirectory
from callrouter.metrics import Metrics
from callrouter.presence.live import PresenceService
from callrouter.presence.tracker import PresenceTracker

# The AMI events that carry presence (FullyBooted, the third one, only starts a resync).
_STATE_EVENTS = frozenset({"DeviceStateChange", "ContactStatus"})


def build(
    ami: AmiClient,
    live: LiveDirectory,
    *,
    heartbeat_timeout: float,
    metrics: Metrics | None = None,
) -> PresenceService:
    service = PresenceService(
        PresenceTracker(live.snapshot, heartbeat_timeout=heartbeat_timeout), ami
    )
    live.subscribe(lambda concerned: service.set_snapshot(live.snapshot, concerned))
    if metrics is not None:
        counted = metrics

        def count(event: AmiMessage) -> None:
            if event.event in _STATE_EVENTS:
                counted.presence_event()

        ami.subscribe(count)
    return service
