"""resolve_plan(): from (directory snapshot, ring rules, presence, caller) to a RingPlan.

Pure: no database, network, clock or logging.  Targets a rule may not ring (a
phone that is not the user's or the workplace's) are skipped and reported in
``RingPlan.warnings`` for the caller of this function to log.

Entries that do not apply to the call (``calls: internal|external``, ``when:``/
``unless:`` a schedule at the call's local time, both from ``CallContext``) are left
out, and so is the silence they would have left: later entries move earlier.

With presence: do-not-disturb and busy (call waiting off) end the plan before any
phone rings; unreachable phones are left out, and where that leaves the caller in
silence (an entry whose phones are all unreachable), later legs move earlier.
With several Asterisks on one directory, phones on another ``node`` than the
router's are left out the same way: this router's Asterisk cannot dial them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.domain.endpoint import expand_external, is_external_number
from callrouter.domain.forwarding import MAX_FORWARD_HOPS, RUN_TIME_KINDS
from callrouter.domain.presence import ClientStatus, UserPresence
from callrouter.routing.plan import (
    CallContext,
    ForwardHop,
    Leg,
    LegSource,
    PlanStatus,
    RingPlan,
)
from callrouter.rules.model import (
    WORKPLACE_TARGET,
    ForwardStep,
    RingEntry,
    RingRules,
    Schedule,
    call_waiting,
    user_forwarding,
)


class PresenceView(Protocol):
    """What routing needs to know of presence (``PresenceTracker`` is one)."""

    def user(self, extension: str) -> UserPresence | None: ...

    def reachable(self, endpoint: str) -> bool: ...


def resolve_plan(
    snapshot: DirectorySnapshot,
    rules: RingRules,
    extension: str,
    caller: str | None = None,
    presence: PresenceView | None = None,
    call: CallContext | None = None,
    node: str | None = None,
    forwarded: tuple[ForwardHop, ...] = (),
) -> RingPlan:
    """The plan for a call to ``extension``, reached through ``forwarded`` (hops
    already followed, for a forwarded call)."""
    user = snapshot.users.get(extension)
    if user is None:
        return RingPlan(extension, None, None, PlanStatus.UNKNOWN_EXTENSION, forwarded=forwarded)
    context = call if call is not None else CallContext()
    warnings: list[str] = []
    skipped: list[str] = []
    forwards = _forwardings(snapshot, rules, extension, context, skipped, warnings)

    def follow_hop(hop: ForwardHop) -> RingPlan:
        plan = resolve_forward(snapshot, rules, hop, forwarded, caller, presence, context, node)
        return replace(
            plan, warnings=(*warnings, *plan.warnings), skipped=(*skipped, *plan.skipped)
        )

    def follow(kind: str) -> RingPlan | None:
        hop = forwards.get(kind)
        if hop is None or not _may_follow(hop, forwarded, warnings):
            return None
        return follow_hop(hop)

    workplace_id = snapshot.logins.get(extension)

    def nothing_rings(status: PlanStatus) -> RingPlan:
        return RingPlan(
            extension,
            user.name,
            workplace_id,
            status,
            warnings=tuple(warnings),
            skipped=tuple(skipped),
            forwarded=forwarded,
        )

    state = presence.user(extension) if presence is not None else None
    # Do not disturb beats every forwarding but one made for it.
    if state is not None and state.client is ClientStatus.DND:
        return follow("dnd") or nothing_rings(PlanStatus.DND)
    if (always := follow("always")) is not None:
        return always
    if state is not None and state.phone.on_call and not call_waiting(rules, extension):
        return follow("busy") or nothing_rings(PlanStatus.BUSY)
    # Busy and no answer are known only once the phones rang, unreachable also when
    # every phone failed to be reached: the driver follows them.
    later = (
        tuple(
            hop
            for kind in RUN_TIME_KINDS
            if (hop := forwards.get(kind)) is not None and _may_follow(hop, forwarded, warnings)
        )
        if forwards
        else ()
    )
    plan = _ring_plan(
        snapshot, rules, user, extension, caller, presence, context, node, warnings, skipped
    )
    if plan.status in (PlanStatus.UNREACHABLE, PlanStatus.NO_PHONES):
        # Nothing can ring now: the unreachable forwarding, if any, is followed now.
        elsewhere = next((hop for hop in later if hop.kind == "unreachable"), None)
        if elsewhere is not None:
            return follow_hop(elsewhere)
    if forwarded or later:
        return replace(plan, warnings=tuple(warnings), forwarded=forwarded, forward_on=later)
    return plan


def resolve_forward(
    snapshot: DirectorySnapshot,
    rules: RingRules,
    hop: ForwardHop,
    forwarded: tuple[ForwardHop, ...] = (),
    caller: str | None = None,
    presence: PresenceView | None = None,
    call: CallContext | None = None,
    node: str | None = None,
) -> RingPlan:
    """The plan of a call that ``hop`` forwards, after ``forwarded``: the target
    user's own plan (their forwardings too), or the external number alone."""
    chain = (*forwarded, hop)
    if not is_external_number(hop.target):
        return resolve_plan(snapshot, rules, hop.target, caller, presence, call, node, chain)
    user = snapshot.users.get(hop.extension)
    name = user.name if user is not None else None
    workplace_id = snapshot.logins.get(hop.extension)
    template = rules.defaults.external_endpoint
    if template is None:  # a user's own forwarding; the rules refuse theirs
        problem = f"{hop}: external numbers need defaults.external_endpoint"
        return RingPlan(
            hop.extension, name, workplace_id, PlanStatus.NO_PHONES, (), (problem,), forwarded=chain
        )
    leg = Leg(expand_external(template, hop.target), 0.0, rules.defaults.timeout, LegSource.FORWARD)
    return RingPlan(hop.extension, name, workplace_id, PlanStatus.OK, (leg,), forwarded=chain)


def _may_follow(hop: ForwardHop, forwarded: tuple[ForwardHop, ...], warnings: list[str]) -> bool:
    """A chain stops after MAX_FORWARD_HOPS, and where it would come back to a user
    it passed: that user's own phones ring instead."""
    if len(forwarded) >= MAX_FORWARD_HOPS:
        warnings.append(f"forwarding stopped after {MAX_FORWARD_HOPS} hops: {hop}")
        return False
    passed = {h.extension for h in forwarded} | {hop.extension}
    if hop.target in passed:
        warnings.append(f"forwarding stopped, it would loop: {hop}")
        return False
    return True


def _forwardings(
    snapshot: DirectorySnapshot,
    rules: RingRules,
    extension: str,
    call: CallContext,
    skipped: list[str],
    warnings: list[str],
) -> dict[str, ForwardHop]:
    """``extension``'s forwardings in force for ``call``, by kind: the user's own,
    where the admin lets them, else the first step of the rules that applies."""
    own = snapshot.forwards.get(extension)
    rule = rules.users.get(extension)
    steps = rule.forward if rule is not None else None
    if not own and (steps is None or not steps.any()):
        return {}  # most users, on every call: nothing to work out
    found: dict[str, ForwardHop] = {}
    if own:
        policy = user_forwarding(rules, extension)
        for kind, target in own.items():
            if policy == "off" or (is_external_number(target) and policy != "anywhere"):
                warnings.append(
                    f"user {extension}: own forwarding {kind} to {target} ignored "
                    f"(user_forwarding: {policy})"
                )
                continue
            found[kind] = ForwardHop(extension, kind, target, "user")
    for kind, index, step in steps.steps() if steps is not None else ():
        if kind in found:
            continue
        why = _not_applying(step, call, rules.schedules)
        if why is not None:
            skipped.append(f"user {extension} forward.{kind}[{index}]: {why}")
            continue
        found[kind] = ForwardHop(extension, kind, step.to, "admin")
    return found


def _ring_plan(
    snapshot: DirectorySnapshot,
    rules: RingRules,
    user: User,
    extension: str,
    caller: str | None,
    presence: PresenceView | None,
    context: CallContext,
    node: str | None,
    warnings: list[str],
    skipped: list[str],
) -> RingPlan:
    """The user's own phones and workplace, by their rules (no forwarding)."""
    default_timeout = rules.defaults.timeout
    template = rules.defaults.external_endpoint
    legs: list[Leg] = []
    skipped_legs: list[Leg] = []  # what entries that do not apply would have rung
    workplace_applies = True

    # The user's own timeline: FollowMe over the direct phones.
    workplace_start = 0.0
    workplace_stop: float | None = None  # an explicit timeout on the 'workplace' entry
    user_rule = rules.users.get(extension)
    followme = user_rule.followme if user_rule is not None else None
    if followme is None:
        legs.extend(Leg(p, 0.0, default_timeout, LegSource.FOLLOWME) for p in user.phones)
    else:
        switched_off = snapshot.switched_off.get(extension, frozenset())
        for index, entry in enumerate(followme):
            why = _not_applying(entry, context, rules.schedules)
            if why is None and entry.switch is not None and entry.switch in switched_off:
                why = f"switched off by the user ({entry.switch})"
            if why is not None:
                skipped.append(f"user {extension} followme[{index}]: {why}")
            if entry.names_workplace:
                workplace_start = entry.delay
                if entry.timeout is not None:
                    workplace_stop = entry.delay + entry.timeout
                workplace_applies = why is None
            _entry_legs(
                entry,
                0.0,
                default_timeout,
                user.phones,
                template,
                LegSource.FOLLOWME,
                f"user {extension}",
                legs if why is None else skipped_legs,
                warnings,
            )

    # The workplace's timeline, only while the user is logged in there.
    workplace = snapshot.workplace_of(extension)
    if workplace is not None:
        workplace_legs: list[Leg] = []
        workplace_rule = rules.workplaces.get(workplace.id)
        ring = workplace_rule.ring if workplace_rule is not None else None
        if ring is None:
            workplace_legs.extend(
                Leg(p, workplace_start, workplace_start + default_timeout, LegSource.WORKPLACE)
                for p in workplace.phones
            )
        else:
            for index, entry in enumerate(ring):
                why = _not_applying(entry, context, rules.schedules)
                if why is not None:
                    skipped.append(f"workplace {workplace.id} ring[{index}]: {why}")
                _entry_legs(
                    entry,
                    workplace_start,
                    default_timeout,
                    workplace.phones,
                    template,
                    LegSource.WORKPLACE,
                    f"workplace {workplace.id}",
                    workplace_legs if why is None else skipped_legs,
                    warnings,
                )
        if workplace_stop is not None:
            workplace_legs = [
                replace(leg, stop=min(leg.stop, workplace_stop))
                for leg in workplace_legs
                if leg.start < workplace_stop
            ]
        if workplace_applies:
            legs.extend(workplace_legs)
        else:
            skipped_legs.extend(workplace_legs)

    if caller is not None:
        legs = [leg for leg in legs if leg.endpoint != caller]
    if skipped_legs:
        legs = cut_dead_air(legs, skipped_legs)

    unreachable: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()
    if node is not None and snapshot.phone_nodes:
        elsewhere = tuple(
            sorted({leg.endpoint for leg in legs if not snapshot.on_node(leg.endpoint, node)})
        )
    if presence is not None or elsewhere:
        # External numbers have no device state worth trusting: always dialled.
        external = (
            {expand_external(template, n) for n in _external_numbers(rules, extension, workplace)}
            if template is not None and presence is not None
            else set()
        )
        away = frozenset(elsewhere)

        def reachable(leg: Leg) -> bool:
            return presence is None or leg.endpoint in external or presence.reachable(leg.endpoint)

        kept = [leg for leg in legs if leg.endpoint not in away and reachable(leg)]
        if len(kept) < len(legs):
            removed = [leg for leg in legs if leg.endpoint in away or not reachable(leg)]
            unreachable = tuple(sorted({leg.endpoint for leg in removed} - away))
            legs = cut_dead_air(kept, removed)

    merged = merge_legs(legs)
    if merged:
        status = PlanStatus.OK
    else:
        status = PlanStatus.UNREACHABLE if unreachable or elsewhere else PlanStatus.NO_PHONES
    return RingPlan(
        extension,
        user.name,
        workplace.id if workplace is not None else None,
        status,
        merged,
        tuple(warnings),
        unreachable,
        tuple(skipped),
        elsewhere,
    )


def _not_applying(
    entry: RingEntry | ForwardStep, call: CallContext, schedules: dict[str, Schedule]
) -> str | None:
    """Why ``entry`` (or a forwarding step) does not apply to ``call`` (None: it does)."""
    if entry.calls == "internal" and not call.internal:
        return "internal calls only"
    if entry.calls == "external" and call.internal:
        return "external calls only"
    for key, name, wanted in (("when", entry.when, True), ("unless", entry.unless, False)):
        if name is None:
            continue
        if call.at is None:
            return f"{key} {name}: the time of the call is not known"
        if schedules[name].holds(call.at) is not wanted:
            return f"{key} {name}: {'not ' if wanted else ''}in the schedule at {call.at:%a %H:%M}"
    return None


def _external_numbers(
    rules: RingRules, extension: str, workplace: Workplace | None
) -> Iterable[str]:
    user_rule = rules.users.get(extension)
    entries = list(user_rule.followme or ()) if user_rule is not None else []
    workplace_rule = rules.workplaces.get(workplace.id) if workplace is not None else None
    if workplace_rule is not None:
        entries += list(workplace_rule.ring or ())
    return [number for entry in entries for number in entry.external_numbers]


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, stop in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _minus(
    intervals: list[tuple[float, float]], holes: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    result = []
    for start, stop in intervals:
        cursor = start
        for hole_start, hole_stop in holes:
            if hole_stop <= cursor or hole_start >= stop:
                continue
            if hole_start > cursor:
                result.append((cursor, hole_start))
            cursor = max(cursor, hole_stop)
        if cursor < stop:
            result.append((cursor, stop))
    return result


def cut_dead_air(kept: list[Leg], removed: list[Leg]) -> list[Leg]:
    """Shift ``kept`` legs earlier past the silence that ``removed`` legs leave.

    Dead air is time in which only removed legs would have rung.  It is cut out of
    the timeline: a leg after it starts earlier by its length (an unreachable
    FollowMe entry does not keep the caller waiting), while time in which other
    phones ring anyway is left as it is.
    """
    live = _union((leg.start, leg.stop) for leg in kept)
    dead = _minus(_union((leg.start, leg.stop) for leg in removed), live)
    if not dead:
        return kept

    def earlier(t: float) -> float:
        # Rounded to the microsecond: float subtraction (13.3 - 8.0) must not leave
        # legs of one phone 1e-15 s apart, which would stop and restart its ringing.
        return round(t - sum(min(stop, t) - start for start, stop in dead if start < t), 6)

    return [replace(leg, start=earlier(leg.start), stop=earlier(leg.stop)) for leg in kept]


def _entry_legs(
    entry: RingEntry,
    offset: float,
    default_timeout: float,
    own_phones: tuple[str, ...],
    template: str | None,
    source: LegSource,
    owner: str,
    legs: list[Leg],
    warnings: list[str],
) -> None:
    start = offset + entry.delay
    stop = start + (entry.timeout if entry.timeout is not None else default_timeout)
    for target in entry.ring:
        if target == WORKPLACE_TARGET:
            continue
        if is_external_number(target):
            if template is None:  # the rules model refuses this; never dial it regardless
                warnings.append(f"{owner}: external number {target} has no external_endpoint")
                continue
            endpoint = expand_external(template, target)
        elif target in own_phones:
            endpoint = target
        else:
            warnings.append(f"{owner}: skipped {target}, which is not one of its phones")
            continue
        legs.append(Leg(endpoint, start, stop, source, entry.confirm))


def merge_legs(legs: Iterable[Leg]) -> tuple[Leg, ...]:
    """Merge legs of one endpoint that overlap or touch; sort by start, then endpoint.

    A merged leg keeps the source (and confirm) of its earliest part.
    """
    by_endpoint: dict[str, list[Leg]] = {}
    for leg in legs:
        if leg.stop > leg.start:
            by_endpoint.setdefault(leg.endpoint, []).append(leg)
    merged: list[Leg] = []
    for endpoint_legs in by_endpoint.values():
        if len(endpoint_legs) == 1:
            merged.append(endpoint_legs[0])
            continue
        endpoint_legs.sort(key=lambda leg: (leg.start, leg.stop))
        current = endpoint_legs[0]
        for leg in endpoint_legs[1:]:
            if leg.start <= current.stop:
                if leg.stop > current.stop:
                    current = replace(current, stop=leg.stop)
            else:
                merged.append(current)
                current = leg
        merged.append(current)
    merged.sort(key=lambda leg: (leg.start, leg.endpoint))
    return tuple(merged)
