"""Wires call intake: new callers from ARI, routed by the live directory and presence."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from callrouter.ari.client import AriClient
from callrouter.calls.intake import CallIntake
from callrouter.calls.overload import OverloadLimits
from callrouter.directory.live import LiveDirectory
from callrouter.metrics import Metrics
from callrouter.routing.resolver import PresenceView


def build(
    ari: AriClient,
    live: LiveDirectory,
    presence: PresenceView | None,
    *,
    metrics: Metrics | None = None,
    overload: OverloadLimits | None = None,
    timezone: str | None = None,
    node: str | None = None,
) -> CallIntake:
    """``timezone``: the IANA zone that schedules (when:/unless:) are read in; None: the
    machine's."""
    zone = ZoneInfo(timezone) if timezone is not None else None
    intake = CallIntake(
        ari,
        lambda: (live.snapshot, live.rules),
        presence,
        metrics=metrics,
        overload=overload,
        local_time=lambda: datetime.now(zone).astimezone(zone),
        node=node,
    )
    ari.on_event = intake.on_event
    ari.on_connected = intake.on_connected
    return intake
