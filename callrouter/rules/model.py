"""Ring rules: what admins write in rules.yaml, as validated pydantic models.

Only the shape and the values are checked here.  Whether a phone in a rule really
belongs to that user or workplace depends on the directory, and is checked by
``callrouter.rules.check`` (and skipped with a warning at run time).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from callrouter.routing.endpoint import endpoint_problem, external_endpoint_problem, is_external_number

WORKPLACE_TARGET = "workplace"
EXTENSION_PATTERN = re.compile(r"[0-9]{1,20}")
WORKPLACE_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")

Seconds = Annotated[float, Field(ge=0, le=86400)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _target_problem(value: object) -> str | None:
    if isinstance(value, bool) or isinstance(value, int | float):
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


class RingEntry(_Strict):
    """One step of a rule: ring these targets from ``delay`` for ``timeout`` seconds."""

    ring: tuple[str, ...] = Field(min_length=1)
    delay: Seconds = 0
    timeout: PositiveSeconds | None = None  # None: defaults.timeout

    @field_validator("ring", mode="before")
    @classmethod
    def _targets_are_dialable(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for item in value:
                problem = _target_problem(item)
                if problem is not None:
                    raise ValueError(problem)
            if len(set(value)) != len(value):
                raise ValueError("a target is listed twice in the same entry")
        return value

    @property
    def names_workplace(self) -> bool:
        return WORKPLACE_TARGET in self.ring

    @property
    def external_numbers(self) -> tuple[str, ...]:
        return tuple(t for t in self.ring if is_external_number(t))


class Defaults(_Strict):
    timeout: PositiveSeconds = 20
    # How external numbers are dialled; None: rules may not name external numbers.
    external_endpoint: str | None = None

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

    @field_validator("ring")
    @classmethod
    def _no_workplace_target(
        cls, value: tuple[RingEntry, ...] | None
    ) -> tuple[RingEntry, ...] | None:
        if value is not None and any(e.names_workplace for e in value):
            raise ValueError("'workplace' is a FollowMe target; a workplace rule names phones")
        return value


class RingRules(_Strict):
    defaults: Defaults = Defaults()
    users: dict[str, UserRule] = {}  # by extension
    workplaces: dict[str, WorkplaceRule] = {}  # by workplace id

    @field_validator("users")
    @classmethod
    def _extensions_are_numeric(cls, value: dict[str, UserRule]) -> dict[str, UserRule]:
        for extension in value:
            if not EXTENSION_PATTERN.fullmatch(extension):
                raise ValueError(f"extension {extension!r} must be 1 to 20 digits")
        return value

    @field_validator("workplaces")
    @classmethod
    def _workplace_ids_are_slugs(
        cls, value: dict[str, WorkplaceRule]
    ) -> dict[str, WorkplaceRule]:
        for workplace_id in value:
            if not WORKPLACE_ID_PATTERN.fullmatch(workplace_id):
                raise ValueError(
                    f"workplace id {workplace_id!r} must be a slug: lower-case letters, "
                    "digits and inner hyphens"
                )
        return value

    @model_validator(mode="after")
    def _external_numbers_need_a_template(self) -> RingRules:
        if self.defaults.external_endpoint is None:
            entries = [e for r in self.users.values() for e in (r.followme or ())]
            entries += [e for r in self.workplaces.values() for e in (r.ring or ())]
            for entry in entries:
                if entry.external_numbers:
                    raise ValueError(
                        f"external number {entry.external_numbers[0]} needs "
                        "defaults.external_endpoint, e.g. PJSIP/{number}@trunk"
                    )
        return self


EMPTY_RULES = RingRules()
