"""Pickup for a person: who may pick up whose ringing call (pure, no I/O).

A phone dials ``*8`` + extension; the dialplan gives its channel to the Stasis app
with ``pickup`` as the second argument (dialplan/callrouter.conf [callrouter-pickup]).
The picking phone must be a phone of the directory; the *picking user* is the user
the phone is assigned to, or the user logged in at its workplace (a workplace phone
nobody is logged in at has none). The rules' ``picked_up_by`` (the callee's, else
the defaults') lists the roles whose users may pick up; None lets anyone at a phone
of the directory. The callee may always pick up their own calls, from any phone of
the directory.

The intake (calls/intake.py) decides here, then asks the ringing calls, oldest
first, to be picked up (CallDriver.pick_up); what the picker hears when that fails
is the dialplan's ([callrouter-pickup-result], ``PickupResult``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from callrouter.domain.directory import DirectorySnapshot
from callrouter.rules.model import RingRules, picked_up_by

# The second Stasis argument of a picker's channel (the first: the extension).
PICKUP_ARG = "pickup"
# Where a picker that picked nothing up continues, CALLROUTER_RESULT set.
PICKUP_RESULT_CONTEXT = "callrouter-pickup-result"


class PickupResult(StrEnum):
    """What a pickup came to; the dialplan sees all but PICKED_UP in CALLROUTER_RESULT."""

    PICKED_UP = "PICKED_UP"
    NOCALL = "NOCALL"  # nothing rings for that extension now (or no such extension)
    REFUSED = "REFUSED"  # not a phone of the directory, or picked_up_by leaves it out


@dataclass(frozen=True, slots=True)
class Picker:
    """The phone that dials the pickup code, and the user at it (None: nobody)."""

    endpoint: str
    user: str | None


def pickup_refusal(
    snapshot: DirectorySnapshot, rules: RingRules, extension: str, picker: Picker | None
) -> str | None:
    """Why ``picker`` may not pick up ``extension``'s calls (for the log), or None.

    ``picker`` None: the channel is no phone of the directory."""
    if picker is None:
        return "not a phone of the directory"
    if picker.user == extension:
        return None  # one's own calls, from another phone
    roles = picked_up_by(rules, extension)
    if roles is None:
        return None
    if picker.user is None:
        return f"{picker.endpoint} has no user, and picked_up_by is {', '.join(roles)}"
    user = snapshot.users.get(picker.user)
    role = user.role if user is not None else None
    if role in roles:
        return None
    return f"user {picker.user}'s role {role or '(none)'} is not in picked_up_by"


def picker_at(snapshot: DirectorySnapshot, endpoint: str | None) -> Picker | None:
    """The picker at ``endpoint``, or None when it is no phone of the directory (the
    snapshot's phone index: a pickup never scans the users)."""
    if endpoint is None or not snapshot.is_phone(endpoint):
        return None
    return Picker(endpoint, snapshot.user_at(endpoint))
