"""A RingPlan as a timeline for people (``callrouter plan``)."""

from __future__ import annotations

from callrouter.routing.chain import PlanTree
from callrouter.routing.plan import PlanStatus, RingPlan

BAR_WIDTH = 40


_NOTHING_RINGS = {
    PlanStatus.NO_PHONES: "nothing to ring",
    PlanStatus.UNREACHABLE: "no phone reachable now",
    PlanStatus.DND: "do not disturb: straight to callrouter-result",
    PlanStatus.BUSY: "on a call, call waiting off: busy at once",
}


def _seconds(value: float) -> str:
    return f"{value:g}"


_WHEN = {
    "busy": "When busy",
    "no_answer": "When nobody answers",
    "unreachable": "When no phone can be reached",
}


def format_tree(tree: PlanTree, indent: str = "", hops_shown: int = 0) -> str:
    """A plan, then (indented) where the call goes when it ends busy or unanswered."""
    text = "".join(f"{indent}{line}\n" for line in format_plan(tree.plan, hops_shown).splitlines())
    for kind, then in tree.then:
        stop = f" (after {_seconds(tree.plan.stop)} s)" if kind == "no_answer" else ""
        text += f"{indent}  {_WHEN[kind]}{stop}:\n"
        text += format_tree(then, indent + "    ", len(tree.plan.forwarded))
    return text


def format_plan(plan: RingPlan, hops_shown: int = 0) -> str:
    """The plan as a timeline; ``hops_shown``: forwardings already printed above."""
    lines = [f"{hop}" for hop in plan.forwarded[hops_shown:]]
    if plan.status is PlanStatus.UNKNOWN_EXTENSION:
        return "".join(
            f"{line}\n"
            for line in [*lines, f"Extension {plan.extension}: no such user (unknown-extension)"]
        )
    where = f", logged in at {plan.workplace}" if plan.workplace else ", not logged in"
    lines.append(f"Extension {plan.extension}: {plan.user}{where}")
    if plan.status in _NOTHING_RINGS:
        lines.append(f"  {_NOTHING_RINGS[plan.status]} ({plan.status.value})")
    else:
        end = plan.stop
        width = max(len(leg.endpoint) for leg in plan.legs)
        lines.append(
            f"  {'start':>6} {'stop':>6}  {'endpoint':<{width}}  {'source':<9}  "
            f"0 s{' ' * (BAR_WIDTH - 3 - len(_seconds(end)) - 2)}{_seconds(end)} s"
        )
        for leg in plan.legs:
            a = round(leg.start / end * BAR_WIDTH)
            b = max(a + 1, round(leg.stop / end * BAR_WIDTH))
            bar = "·" * a + "█" * (b - a) + "·" * (BAR_WIDTH - b)
            lines.append(
                f"  {_seconds(leg.start):>6} {_seconds(leg.stop):>6}  "
                f"{leg.endpoint:<{width}}  {leg.source.value:<9}  {bar}"
                + ("  confirm: press 1" if leg.confirm else "")
            )
    if plan.unreachable:
        lines.append(f"  not rung, unreachable now: {', '.join(plan.unreachable)}")
    lines += [f"  does not apply: {why}" for why in plan.skipped]
    if plan.elsewhere:
        lines.append(f"  not rung, on another node: {', '.join(plan.elsewhere)}")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines) + "\n"
