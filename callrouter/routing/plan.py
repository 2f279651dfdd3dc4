"""A ring plan: which endpoint rings when, decided before anything is dialled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any, Literal


class PlanStatus(StrEnum):
    OK = "ok"
    UNKNOWN_EXTENSION = "unknown-extension"
    NO_PHONES = "no-phones"
    UNREACHABLE = "unreachable"  # phones to ring, but none reachable now
    DND = "dnd"  # the user set do-not-disturb in a client
    BUSY = "busy"  # the user is on a call and has call waiting off


class LegSource(StrEnum):
    FOLLOWME = "followme"  # the user's own timeline: direct phones and external numbers
    WORKPLACE = "workplace"  # the workplace the user is logged in to
    FORWARD = "forward"  # an external number a forwarding sends the call to
    # A phone that picked the call up (*8 + extension): never in a plan, only ever a
    # call's winner (calls/flow.py CallFlow.picked_up).
    PICKUP = "pickup"


LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M"


def parse_local_time(text: str, zone: tzinfo | None) -> datetime:
    """A wall-clock time as people write it ("2026-12-02 19:00"), in ``zone`` (None:
    the machine's); ValueError with what is expected otherwise."""
    try:
        at = datetime.strptime(text.strip(), LOCAL_TIME_FORMAT)
    except ValueError:
        raise ValueError('not a local time: "YYYY-MM-DD HH:MM", e.g. "2026-12-02 19:00"') from None
    return at.replace(tzinfo=zone) if zone is not None else at.astimezone()


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a rule entry may depend on, besides the directory: whether the call is
    internal (from a phone of the directory) and the local time it arrived."""

    internal: bool = True
    # The router's local wall-clock time; None: unknown, so entries that name a
    # schedule (when/unless) do not apply.
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ForwardHop:
    """``extension``'s forwarding of ``kind`` sends the call to ``target`` (an extension
    or an external number); ``set_by`` the user themselves or the admin's rules."""

    extension: str
    kind: str  # always, busy, no_answer, unreachable, dnd (domain.forwarding)
    target: str
    set_by: Literal["user", "admin"]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.extension,
            "kind": self.kind,
            "to": self.target,
            "set_by": self.set_by,
        }

    def __str__(self) -> str:
        by = "the user's own" if self.set_by == "user" else "rules"
        return f"{self.extension} forwards {self.kind.replace('_', ' ')} to {self.target} ({by})"


@dataclass(frozen=True, slots=True)
class Leg:
    """Ring ``endpoint`` over ``[start, stop)`` seconds after the call reached the router."""

    endpoint: str
    start: float
    stop: float
    source: LegSource
    # Whoever answers must press 1 first (rules: confirm: true).
    confirm: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "start": _number(self.start),
            "stop": _number(self.stop),
            "source": self.source.value,
            "confirm": self.confirm,
        }


@dataclass(frozen=True, slots=True)
class RingPlan:
    extension: str
    user: str | None  # the user's name
    workplace: str | None  # id of the workplace the user is logged in to
    status: PlanStatus
    legs: tuple[Leg, ...] = ()  # sorted by start, then endpoint
    # Rule targets skipped at resolve time, e.g. a phone that is not the user's.
    warnings: tuple[str, ...] = ()
    # Phones left out because presence says they are unreachable now.
    unreachable: tuple[str, ...] = ()
    # Rule entries that do not apply to this call, each with why (calls:, when:).
    skipped: tuple[str, ...] = ()
    # Phones left out because they are on another node's Asterisk than the call.
    elsewhere: tuple[str, ...] = ()
    # The forwardings followed to reach this plan, first to last (the dialled
    # extension is the first hop's); this plan's user is the last hop's target.
    forwarded: tuple[ForwardHop, ...] = ()
    # Where the call goes on when this plan ends busy or unanswered (kinds busy and
    # no_answer): followed by the call's driver at that moment.
    forward_on: tuple[ForwardHop, ...] = ()

    def forward_for(self, kind: str) -> ForwardHop | None:
        return next((hop for hop in self.forward_on if hop.kind == kind), None)

    @property
    def stop(self) -> float:
        """When the last leg stops ringing (0 for a plan without legs)."""
        return max((leg.stop for leg in self.legs), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "extension": self.extension,
            "user": self.user,
            "workplace": self.workplace,
            "status": self.status.value,
            "legs": [leg.to_json() for leg in self.legs],
            "unreachable": list(self.unreachable),
            "skipped": list(self.skipped),
            "elsewhere": list(self.elsewhere),
            "warnings": list(self.warnings),
            "forwarded": [hop.to_json() for hop in self.forwarded],
            "forward_on": {hop.kind: hop.to_json() for hop in self.forward_on},
        }


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds
