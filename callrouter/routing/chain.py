"""Where a call can go from its plan on: the forwardings its driver follows at run
time (busy, no answer), resolved ahead for people (``callrouter plan``, the API).

The call path does not use this: a driver resolves the next plan only when its plan
ends busy or unanswered, with the directory and presence of that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callrouter.domain.directory import DirectorySnapshot
from callrouter.routing.plan import CallContext, RingPlan
from callrouter.routing.resolver import PresenceView, resolve_forward
from callrouter.rules.model import RingRules


@dataclass(frozen=True, slots=True)
class PlanTree:
    """A plan, and the plan a call continues with when it ends busy or unanswered."""

    plan: RingPlan
    then: tuple[tuple[str, PlanTree], ...] = ()  # (kind, its plan), busy before no_answer

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "then": {kind: t.to_json() for kind, t in self.then}}


def plan_tree(
    snapshot: DirectorySnapshot,
    rules: RingRules,
    plan: RingPlan,
    caller: str | None = None,
    presence: PresenceView | None = None,
    call: CallContext | None = None,
    node: str | None = None,
) -> PlanTree:
    """``plan`` with every run-time forwarding resolved, as far as chains go (the
    resolver stops them at a loop or after MAX_FORWARD_HOPS, so this ends)."""
    then = tuple(
        (
            hop.kind,
            plan_tree(
                snapshot,
                rules,
                resolve_forward(snapshot, rules, hop, plan.forwarded, caller, presence, call, node),
                caller,
                presence,
                call,
                node,
            ),
        )
        for hop in plan.forward_on
    )
    return PlanTree(plan, then)
