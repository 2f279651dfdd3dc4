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

from collections.abc import Mapping
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


class PhoneUsers:
    """Who is at each phone of the directory, rebuilt only when the users, workplaces
    or logins change: a pickup must not scan 100,000 users on the event loop."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._phones: dict[str, tuple[str, str]] = {}  # endpoint -> ("user"|"workplace", key)
        self._logins_key: object | None = None
        self._at_workplace: dict[str, str] = {}  # workplace id -> extension logged in

    def picker(self, snapshot: DirectorySnapshot, endpoint: str | None) -> Picker | None:
        """The picker at ``endpoint``, or None when it is no phone of the directory."""
        if endpoint is None:
            return None
        self._refresh(snapshot)
        owner = self._phones.get(endpoint)
        if owner is None:
            return Picker(endpoint, None) if endpoint in snapshot.unassigned_phones else None
        kind, key = owner
        if kind == "user":
            return Picker(endpoint, key)
        return Picker(endpoint, self._occupant(snapshot.logins, key))

    def _refresh(self, snapshot: DirectorySnapshot) -> None:
        key = (snapshot.users, snapshot.workplaces)
        if self._key is None or any(a is not b for a, b in zip(key, self._key, strict=True)):
            self._key = key
            self._phones = {
                endpoint: (owner.kind, owner.key)
                for endpoint, owner in snapshot.phone_owners().items()
            }

    def _occupant(self, logins: Mapping[str, str], workplace_id: str) -> str | None:
        if logins is not self._logins_key:
            self._logins_key = logins
            self._at_workplace = {wp: ext for ext, wp in logins.items()}
        return self._at_workplace.get(workplace_id)
