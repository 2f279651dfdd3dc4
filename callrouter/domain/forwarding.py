"""Call forwarding: its kinds, its targets, and how far a chain may go.

A forwarding sends a user's call elsewhere: *always* (before any phone rings), when
the user is *busy*, when *nobody answers*, when no phone is *reachable*, or while
the user is in *do not disturb* (do not disturb beats every other forwarding; only
a ``dnd`` forwarding sends such a call on). Its target is an extension, rung by that
user's own plan, or an external number.
"""

from __future__ import annotations

from typing import Literal

from callrouter.domain.endpoint import is_external_number
from callrouter.domain.identifiers import is_extension

ForwardKind = Literal["always", "busy", "no_answer", "unreachable", "dnd"]
FORWARD_KINDS: tuple[ForwardKind, ...] = ("always", "busy", "no_answer", "unreachable", "dnd")
# Known only once the phones rang (unreachable also before: no phone can ring now):
# followed by the call's driver.
RUN_TIME_KINDS: tuple[ForwardKind, ...] = ("busy", "no_answer", "unreachable")
# A chain A -> B -> C -> D is three hops; a fourth is not followed (nor a loop).
MAX_FORWARD_HOPS = 3
FORWARD_TARGET_LENGTH = 21  # "+" and 20 digits


def forward_target_problem(value: object) -> str | None:
    """Why ``value`` cannot be a forwarding target (None: it can)."""
    if isinstance(value, int | float):  # bool too
        return (
            f'{value!r} is a number: write the target in quotes, e.g. "202" or '
            '"+4917012345678" (unquoted, YAML drops leading zeros)'
        )
    if not isinstance(value, str):
        return "a forwarding target must be a string: an extension or an external number"
    if is_extension(value) or is_external_number(value):
        return None
    return (
        f"{value[:40]!r} is neither an extension (1 to 20 digits) nor an external number "
        "(+ and 2 to 20 digits)"
    )
