"""Automatic logout: forgotten logins end at a time of day per workplace.

``auto_logout: "03:00"`` in the rules means: a login that began before the most
recent 03:00 (in the router's time zone) is over.  Stated as a cut-off rather than
as a timer, it is idempotent: any router may sweep at any time, as often as it
likes, and a login made after 03:00 is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta, tzinfo

from callrouter.rules.model import RingRules


def latest_cutoff(now: datetime, at: time, zone: tzinfo) -> datetime:
    """The most recent moment at or before ``now`` when the local clock read ``at``."""
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate > local:
        candidate = datetime.combine(local.date() - timedelta(days=1), at, tzinfo=zone)
    return candidate


def logout_cutoffs(
    rules: RingRules, workplace_ids: Iterable[str], now: datetime, zone: tzinfo
) -> Mapping[str, datetime]:
    """Per workplace with an automatic logout: logins that began before this end."""
    cutoffs: dict[str, datetime] = {}
    for workplace_id in workplace_ids:
        rule = rules.workplaces.get(workplace_id)
        at = (
            rule.auto_logout
            if rule is not None and rule.auto_logout is not None
            else (rules.defaults.auto_logout)
        )
        if at is not None:
            cutoffs[workplace_id] = latest_cutoff(now, at, zone)
    return cutoffs
