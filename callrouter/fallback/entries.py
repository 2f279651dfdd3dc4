"""The dial strings Asterisk falls back to when the router is down.

``Stasis()`` fails at once when the app is not connected; the shipped dialplan then
dials ``${DB(callrouter/EXTENSION)}`` for ``${DB(callrouter-timeout/EXTENSION)}``
seconds.  This module computes those entries (pure); ``callrouter.fallback.astdb`` keeps
AstDB in step with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.endpoint import is_endpoint
from callrouter.routing.resolver import resolve_plan
from callrouter.rules.model import RingRules

DIAL_FAMILY = "callrouter"
TIMEOUT_FAMILY = "callrouter-timeout"


@dataclass(frozen=True, slots=True)
class FallbackEntry:
    dial: str  # e.g. "PJSIP/anna-desk&PJSIP/office1-desk"
    timeout: int  # seconds


def fallback_entries(
    snapshot: DirectorySnapshot,
    rules: RingRules,
    only: Iterable[str] | None = None,
    *,
    node: str | None = None,
) -> dict[str, FallbackEntry]:
    """For every user with a phone (or those in ``only``): all their phones at once
    (direct and current workplace) that ``node``'s Asterisk can dial, for as long as
    their ring plan would ring."""
    entries: dict[str, FallbackEntry] = {}
    extensions = snapshot.users if only is None else (e for e in only if e in snapshot.users)
    for extension in extensions:
        # Validated on the way in; checked again because this ends up in Dial().
        phones = [
            p for p in snapshot.phones_of(extension) if is_endpoint(p) and snapshot.on_node(p, node)
        ]
        if not phones:
            continue
        plan = resolve_plan(snapshot, rules, extension)
        timeout = max(plan.stop, rules.defaults.timeout)
        entries[extension] = FallbackEntry("&".join(phones), math.ceil(timeout))
    return entries
