"""Wires presence: the tracker follows the live directory, AMI feeds and publishes."""

from __future__ import annotations

from callrouter.ami.client import AmiClient
from callrouter.directory.live import LiveDirectory
from callrouter.presence.live import PresenceService
from callrouter.presence.tracker import PresenceTracker


def build(ami: AmiClient, live: LiveDirectory, *, heartbeat_timeout: float) -> PresenceService:
    service = PresenceService(
        PresenceTracker(live.snapshot, heartbeat_timeout=heartbeat_timeout), ami
    )
    live.subscribe(lambda concerned: service.set_snapshot(live.snapshot, concerned))
    return service
