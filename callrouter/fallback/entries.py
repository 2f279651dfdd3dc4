"""The dial strings Asterisk falls back to when the router is down.

``Stasis()`` fails at once when the app is not connected; the shipped dialplan then
dials ``${DB(callrouter/EXTENSION)}`` for ``${DB(callrouter-timeout/EXTENSION)}``
seconds.  This module computes those entries (pure); ``callrouter.fallback.astdb`` keeps
AstDB in step with them.

Phones that a rule entry rings with ``confirm: true`` are left out: ``Dial()`` has no
way to confirm one leg while the others ring (its ``U()`` gosub runs on the answered
channel after every other leg was cancelled, so a voicemail that answers would take
the call, or a refusal would end it for everyone), and the fallback cannot tell which
of an entry's conditions (``calls:``, ``when:``) hold, so one confirm entry is enough.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.endpoint import is_endpoint
from callrouter.routing.resolver import resolve_plan
from callrouter.rules.model import RingEntry, RingRules

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
    (direct and current workplace) that ``node``'s Asterisk can dial, except those
    rung only after confirming (see above), for as long as their ring plan would ring."""
    entries: dict[str, FallbackEntry] = {}
    extensions = snapshot.users if only is None else (e for e in only if e in snapshot.users)
    for extension in extensions:
        confirmed = _confirmed_phones(rules, extension, snapshot.logins.get(extension))
        # Validated on the way in; checked again because this ends up in Dial().
        phones = [
            p
            for p in snapshot.phones_of(extension)
            if is_endpoint(p) and snapshot.on_node(p, node) and p not in confirmed
        ]
        if not phones:
            continue
        plan = resolve_plan(snapshot, rules, extension)
        timeout = max(plan.stop, rules.defaults.timeout)
        entries[extension] = FallbackEntry("&".join(phones), math.ceil(timeout))
    return entries


def _confirmed_phones(rules: RingRules, extension: str, workplace_id: str | None) -> set[str]:
    """The phones a ``confirm: true`` entry of the user's FollowMe, or of the rule of
    the workplace they are logged in at, rings."""
    entries: list[RingEntry] = []
    user_rule = rules.users.get(extension)
    if user_rule is not None:
        entries += user_rule.followme or ()
    workplace_rule = rules.workplaces.get(workplace_id) if workplace_id is not None else None
    if workplace_rule is not None:
        entries += workplace_rule.ring or ()
    return {target for entry in entries if entry.confirm for target in entry.ring}
