"""Whether a login may happen: the same rules whichever way it comes in.

Pure functions of plain values, so the store can apply them inside its write
transaction (the facts they look at cannot change between check and write).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from callrouter.domain.directory import Role

# What logging in at an occupied workplace does to the user already there.
OccupiedPolicy = Literal["displace", "refuse"]


class Refusal(StrEnum):
    """Why a login or logout did not happen.  The values are stable API strings."""

    BAD_CREDENTIALS = "bad_credentials"  # unknown extension or wrong PIN: never say which
    LOCKED = "locked"  # too many wrong PINs lately
    NOT_ALLOWED = "not_allowed"  # the user's role does not allow this workplace
    OCCUPIED = "occupied"  # someone else is there and the policy is "refuse"
    UNKNOWN_WORKPLACE = "unknown_workplace"
    UNKNOWN_USER = "unknown_user"  # only ever said to the admin
    NOT_A_WORKPLACE_PHONE = "not_a_workplace_phone"  # feature code from a non-desk phone
    BAD_INPUT = "bad_input"


def login_refusal(
    extension: str,
    role: Role | None,
    workplace_id: str,
    occupant: str | None,
    policy: OccupiedPolicy,
) -> Refusal | None:
    """None when ``extension`` may log in at ``workplace_id`` now, else the reason.

    ``occupant`` is the extension logged in there now, if any.  Logging in where the
    user already is, is allowed (and changes nothing).
    """
    if role is not None and not role.allows(workplace_id):
        return Refusal.NOT_ALLOWED
    if occupant is not None and occupant != extension and policy == "refuse":
        return Refusal.OCCUPIED
    return None
