"""Wires call intake: new callers from ARI, routed by the live directory and presence."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from callrouter.ari.client import AriClient
from callrouter.calls.intake import CallIntake
from callrouter.calls.overload import OverloadLimits
from callrouter.directory.live import LiveDirectory
from callrouter.domain.directory import DirectorySnapshot
from callrouter.metrics import Metrics
from callrouter.routing.resolver import PresenceView

log = logging.getLogger(__name__)


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
    if node is not None:
        # A misspelt node would silently leave out every phone that has a node.
        def check_node(concerned: frozenset[str] | None) -> None:
            if concerned is None:  # a full reload (a login changes no phone's node)
                warn_if_unknown_node(live.snapshot, node)

        warn_if_unknown_node(live.snapshot, node)
        live.subscribe(check_node)
    ari.on_event = intake.on_event
    ari.on_connected = intake.on_connected
    return intake


def warn_if_unknown_node(snapshot: DirectorySnapshot, node: str) -> bool:
    """Log a warning when the directory has nodes and ``node`` is none of them."""
    nodes = snapshot.nodes()
    if not nodes or node in nodes:
        return False
    log.warning(
        "node %s has no phone in the directory (its nodes: %s): this router dials only "
        "the phones without a node",
        node,
        ", ".join(sorted(nodes)),
    )
    return True
