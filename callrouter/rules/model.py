"""Ring rules: what admins write in rules.yaml, as validated pydantic models.

Only the shape and the values are checked here.  Whether a phone in a rule really
belongs to that user or workplace depends on the directory, and is checked by
``callrouter.rules.check`` (and skipped with a warning at run time).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from callrouter.domain.endpoint import (
    endpoint_problem,
    external_endpoint_problem,
    is_external_number,
)
from callrouter.domain.forwarding import FORWARD_KINDS, forward_target_problem
from callrouter.domain.identifiers import Extension, RoleName, WorkplaceId

WORKPLACE_TARGET = "workplace"

Seconds = Annotated[float, Field(ge=0, le=86400)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]


_TIME_OF_DAY = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _time_of_day(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not _TIME_OF_DAY.fullmatch(value):
        raise ValueError(f'{value!r} is not a time of day: HH:MM, 24-hour, e.g. "03:00"')
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


# A time of day such as "03:00", in the router's time zone.
TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-(([01][0-9]|2[0-3]):([0-5][0-9])|24:00)")


def _weekdays(value: Any) -> Any:
    """``[mon, tue]`` or ranges such as ``mon-fri`` (also inside the list)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    days: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a day: one of {', '.join(WEEKDAYS)}, or mon-fri")
        first, _, last = item.strip().lower().partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{item!r} is not a day: one of {', '.join(WEEKDAYS)}, or mon-fri")
        start, stop = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        if stop < start:
            raise ValueError(f"{item!r} runs backwards: write the earlier day first, e.g. mon-fri")
        days += [d for d in WEEKDAYS[start : stop + 1] if d not in days]
    return tuple(days)


def _hours(value: Any) -> Any:
    if isinstance(value, tuple | list) and len(value) == 2:  # already minutes (a dump)
        start, stop = value
        if isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= 24 * 60:
            return (start, stop)
    if not isinstance(value, str) or not (match := _HOURS.fullmatch(value.replace(" ", ""))):
        raise ValueError(f'{value!r} is not a time range: HH:MM-HH:MM, e.g. "08:00-17:30"')
    start = int(match[1]) * 60 + int(match[2])
    stop = 24 * 60 if match[3] == "24:00" else int(match[4]) * 60 + int(match[5])
    if stop <= start:
        raise ValueError(f"{value!r} ends before it starts (past midnight: two ranges)")
    return (start, stop)


# Minutes from midnight, [start, stop): "08:00-17:30" is (480, 1050).
Hours = Annotated[tuple[int, int], BeforeValidator(_hours)]
Weekdays = Annotated[
    tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...], BeforeValidator(_weekdays)
]
ScheduleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
# The name of a switch its user may turn an entry off and on by, e.g. mobile.
SwitchName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
_SOUND_NAME = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


def _sound_name(value: Any) -> Any:
    # It ends up in an ARI media URI (sound:NAME): no commas, dots, spaces or schemes.
    if isinstance(value, str) and (len(value) > 100 or not _SOUND_NAME.fullmatch(value)):
        raise ValueError(
            f"{value[:40]!r} is not a sound name: up to 100 letters, digits, _ and -, "
            "folders split by /, without an extension, e.g. followme/options"
        )
    return value


# An Asterisk sound file, as Playback() names it: followme/options.
SoundName = Annotated[str, BeforeValidator(_sound_name)]
CallKind = Literal["internal", "external"]


class Schedule(_Strict):
    """When something applies: these days, these hours, except these dates (in the
    router's time zone)."""

    days: Weekdays = WEEKDAYS  # type: ignore[assignment]
    hours: tuple[Hours, ...] = ((0, 24 * 60),)
    # Holidays: the schedule does not hold all day. Not "off": YAML 1.1 tools (PyYAML)
    # read that key as the boolean false.
    days_off: tuple[date, ...] = ()

    def holds(self, at: datetime) -> bool:
        """Does the schedule hold at ``at`` (a local wall-clock time)?"""
        if at.date() in self.days_off or WEEKDAYS[at.weekday()] not in self.days:
            return False
        minute = at.hour * 60 + at.minute
        return any(start <= minute < stop for start, stop in self.hours)


def _target_problem(value: object) -> str | None:
    if isinstance(value, int | float):  # bool too: true/false is an int in Python
        return (
            f"{value!r} is a number: write external numbers in quotes with a leading +, "
            'e.g. "+4917012345678"'
        )
    if not isinstance(value, str):
        return "a ring target must be a string: an endpoint, an external number or 'workplace'"
    if value == WORKPLACE_TARGET or is_external_number(value):
        return None
    if value.startswith("+") or value.isdigit():
        return f"{value!r} is not an external number: + and 2 to 20 digits, e.g. +4917012345678"
    return endpoint_problem(value)


def _dialable_target(value: Any) -> Any:
    problem = _target_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Checked one by one, so that every bad target is reported, each at its own index.
RingTarget = Annotated[str, BeforeValidator(_dialable_target)]


class RingEntry(_Strict):
    """One step of a rule: ring these targets from ``delay`` for ``timeout`` seconds."""

    ring: tuple[RingTarget, ...] = Field(min_length=1)
    delay: Seconds = 0
    timeout: PositiveSeconds | None = None  # None: defaults.timeout
    # Only for internal calls (from a phone of the directory) or external ones.
    calls: CallKind | None = None
    # Only while the named schedule holds (when), or does not (unless).
    when: ScheduleName | None = None
    unless: ScheduleName | None = None
    # The user may turn this entry off (and on again) by this name: API, client,
    # feature code. FollowMe entries only: a workplace's phones are not one user's.
    switch: SwitchName | None = None
    # Whoever answers hears defaults.confirm_prompt and must press 1 before the call
    # is theirs: a mobile's voicemail cannot take it.
    confirm: bool = False

    @model_validator(mode="after")
    def _confirm_names_phones(self) -> RingEntry:
        if self.confirm and self.names_workplace:
            raise PydanticCustomError(
                "confirm_workplace",
                "confirm: applies to the phones and numbers of this entry; the workplace's "
                "own rule decides how its phones ring",
                {"path": ("confirm",)},
            )
        return self

    @field_validator("ring")
    @classmethod
    def _targets_listed_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for index, target in enumerate(value):
            if target in seen:
                raise PydanticCustomError(
                    "duplicate_target",
                    f"{target} is listed twice in the same entry",
                    {"path": (index,)},  # for file loaders: point at the second one
                )
            seen.add(target)
        return value

    @property
    def names_workplace(self) -> bool:
        return WORKPLACE_TARGET in self.ring

    @property
    def external_numbers(self) -> tuple[str, ...]:
        return tuple(t for t in self.ring if is_external_number(t))


UserForwarding = Literal["off", "extensions", "anywhere"]


def _forward_target(value: Any) -> Any:
    problem = forward_target_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


ForwardTarget = Annotated[str, BeforeValidator(_forward_target)]


class ForwardStep(_Strict):
    """Forward to ``to`` (an extension or an external number), for these calls only."""

    to: ForwardTarget
    calls: CallKind | None = None
    when: ScheduleName | None = None
    unless: ScheduleName | None = None


def _forward_steps(value: Any) -> Any:
    """``"202"``, ``{to: "202", when: ...}``, or a list of those (the first that
    applies to a call is taken)."""
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(
        {"to": item} if not isinstance(item, dict | ForwardStep) else item for item in items
    )


ForwardSteps = Annotated[tuple[ForwardStep, ...], BeforeValidator(_forward_steps)]


class Forwarding(_Strict):
    """A user's forwardings by kind (see ``callrouter.domain.forwarding``)."""

    always: ForwardSteps = ()
    busy: ForwardSteps = ()
    no_answer: ForwardSteps = ()
    unreachable: ForwardSteps = ()
    dnd: ForwardSteps = ()

    def any(self) -> bool:
        return bool(self.always or self.busy or self.no_answer or self.unreachable or self.dnd)

    def steps(self) -> list[tuple[str, int, ForwardStep]]:
        """Every step with its kind and index, in the order of FORWARD_KINDS."""
        return [
            (kind, i, step) for kind in FORWARD_KINDS for i, step in enumerate(getattr(self, kind))
        ]


class Defaults(_Strict):
    timeout: PositiveSeconds = 20
    # How external numbers are dialled; None: rules may not name external numbers.
    external_endpoint: str | None = None
    # When logins at workplaces end by themselves, unless a workplace says otherwise.
    auto_logout: TimeOfDay | None = None
    # Whether a user already on a call is rung for another one (else: BUSY at once).
    call_waiting: bool = True
    # Where users may forward their own calls to (API, client, feature codes): nowhere,
    # other extensions, or external numbers too (which cost money: not by default).
    user_forwarding: UserForwarding = "extensions"
    # Confirmed legs (confirm: true): what the answering party hears, and how long
    # they have to press 1 before the leg is dropped.
    confirm_prompt: SoundName = "followme/options"
    # At most two minutes: the caller hears ringing while a party decides.
    confirm_timeout: Annotated[float, Field(gt=0, le=120)] = 10
    # Whose calls may be picked up (*8 + extension) by users of which roles; None:
    # by anyone at a phone of the directory.
    picked_up_by: tuple[RoleName, ...] | None = None

    @field_validator("external_endpoint")
    @classmethod
    def _template_makes_endpoints(cls, value: str | None) -> str | None:
        if value is not None:
            problem = external_endpoint_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value


class UserRule(_Strict):
    followme: tuple[RingEntry, ...] | None = None  # None: all direct phones at once
    call_waiting: bool | None = None  # None: defaults.call_waiting
    forward: Forwarding = Forwarding()  # the admin's; the user's own replace them by kind
    user_forwarding: UserForwarding | None = None  # None: defaults.user_forwarding
    picked_up_by: tuple[RoleName, ...] | None = None  # None: defaults.picked_up_by

    @field_validator("followme")
    @classmethod
    def _workplace_named_once(
        cls, value: tuple[RingEntry, ...] | None
    ) -> tuple[RingEntry, ...] | None:
        if value is not None and sum(e.names_workplace for e in value) > 1:
            raise ValueError("'workplace' may start the workplace timeline in one entry only")
        return value


class WorkplaceRule(_Strict):
    ring: tuple[RingEntry, ...] | None = None  # None: all the workplace's phones at once
    auto_logout: TimeOfDay | None = None  # None: defaults.auto_logout

    @field_validator("ring")
    @classmethod
    def _no_workplace_target(
        cls, value: tuple[RingEntry, ...] | None
    ) -> tuple[RingEntry, ...] | None:
        if value is not None and any(e.names_workplace for e in value):
            raise ValueError("'workplace' is a FollowMe target; a workplace rule names phones")
        for index, entry in enumerate(value or ()):
            if entry.switch is not None:
                raise PydanticCustomError(
                    "workplace_switch",
                    "switch: is for FollowMe entries: a workplace's phones are not one "
                    "user's to turn off",
                    {"path": (index, "switch")},
                )
        return value


class RingRules(_Strict):
    defaults: Defaults = Defaults()
    schedules: dict[ScheduleName, Schedule] = {}  # by name, e.g. office-hours
    users: dict[Extension, UserRule] = {}  # by extension
    workplaces: dict[WorkplaceId, WorkplaceRule] = {}  # by workplace id

    @model_validator(mode="after")
    def _schedules_exist(self) -> RingRules:
        for path, entry in self._entries():
            for key in ("when", "unless"):
                name = getattr(entry, key)
                if name is not None and name not in self.schedules:
                    known = ", ".join(sorted(self.schedules)) or "none defined"
                    raise PydanticCustomError(
                        "unknown_schedule",
                        f"{key}: {name} is not a schedule of this file (schedules: {known})",
                        {"path": (*path, key)},
                    )
        return self

    def _entries(self) -> list[tuple[tuple[str | int, ...], RingEntry | ForwardStep]]:
        """Everything that may name a schedule, with its path in the file."""
        found: list[tuple[tuple[str | int, ...], RingEntry | ForwardStep]] = []
        for key, rule in self.users.items():
            found += [(("users", key, "followme", i), e) for i, e in enumerate(rule.followme or ())]
            found += [(("users", key, "forward", k, i), f) for k, i, f in rule.forward.steps()]
        for key, wrule in self.workplaces.items():
            found += [(("workplaces", key, "ring", i), e) for i, e in enumerate(wrule.ring or ())]
        return found

    @model_validator(mode="after")
    def _external_numbers_need_a_template(self) -> RingRules:
        if self.defaults.external_endpoint is None:
            for path, number in self._external_number_targets():
                # One error is enough (one fix cures all); its context "path" lets a
                # file loader point at the number itself rather than the whole file.
                raise PydanticCustomError(
                    "external_number_without_template",
                    f"external number {number} needs defaults.external_endpoint, "
                    "e.g. PJSIP/{number}@trunk",
                    {"path": path},
                )
        return self

    def _external_number_targets(self) -> list[tuple[tuple[str | int, ...], str]]:
        found: list[tuple[tuple[str | int, ...], str]] = []
        sections = [
            ("users", key, "followme", rule.followme) for key, rule in self.users.items()
        ] + [("workplaces", key, "ring", rule.ring) for key, rule in self.workplaces.items()]
        for section, key, field, entries in sections:
            for i, entry in enumerate(entries or ()):
                for j, target in enumerate(entry.ring):
                    if is_external_number(target):
                        found.append(((section, key, field, i, "ring", j), target))
        for key, rule in self.users.items():
            for kind, i, step in rule.forward.steps():
                if is_external_number(step.to):
                    found.append((("users", key, "forward", kind, i, "to"), step.to))
        return found


def user_forwarding(rules: RingRules, extension: str) -> UserForwarding:
    """Where ``extension`` may forward their own calls to."""
    rule = rules.users.get(extension)
    if rule is not None and rule.user_forwarding is not None:
        return rule.user_forwarding
    return rules.defaults.user_forwarding


def user_switches(rules: RingRules, extension: str) -> tuple[str, ...]:
    """The switches the admin gave ``extension``, in the order of their FollowMe."""
    rule = rules.users.get(extension)
    names = [e.switch for e in (rule.followme or ()) if e.switch] if rule is not None else []
    return tuple(dict.fromkeys(names))


def picked_up_by(rules: RingRules, extension: str) -> tuple[str, ...] | None:
    """The roles whose users may pick up ``extension``'s calls (None: anyone's)."""
    rule = rules.users.get(extension)
    if rule is not None and rule.picked_up_by is not None:
        return rule.picked_up_by
    return rules.defaults.picked_up_by


def call_waiting(rules: RingRules, extension: str) -> bool:
    rule = rules.users.get(extension)
    if rule is not None and rule.call_waiting is not None:
        return rule.call_waiting
    return rules.defaults.call_waiting


EMPTY_RULES = RingRules()
