"""The directory file admins import and export (``callrouter directory import FILE``).

Pydantic models for the shape and for each value on its own (an extension is 1 to
20 digits, a PIN 4 to 12 digits, an endpoint dialable, ...).  Cross-references
(duplicate extensions, a phone assigned twice, unknown roles or workplaces, ...) are
checked by ``callrouter.directory.check.check_document`` so that each problem can
name the exact place in the file; ``callrouter.directory.loader.load_document`` runs
both.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from callrouter.directory.pins import is_pin_hash
from callrouter.routing.endpoint import endpoint_problem
from callrouter.rules.model import EXTENSION_PATTERN, WORKPLACE_ID_PATTERN

PIN_PATTERN = re.compile(r"[0-9]{4,12}")
CODE_PATTERN = re.compile(r"[0-9]{1,10}")
# The sizes of the database columns these values go into.
MAX_NAME_LENGTH = 200
MAX_ROLE_NAME_LENGTH = 64
MAX_ENDPOINT_LENGTH = 255


def _not_a_number(what: str, example: str) -> Callable[[Any], Any]:
    """Refuse a YAML number where digits must be text: leading zeros would be lost."""

    def check(value: Any) -> Any:
        if isinstance(value, int | float):  # bool too
            raise ValueError(
                f'write the {what} in quotes, e.g. "{example}": unquoted, YAML reads it '
                "as a number and leading zeros would be lost"
            )
        return value

    return check


def _name_checker(what: str, max_length: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.strip():
            raise ValueError(f"the {what} must not be empty")
        control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
        if control is not None:
            raise ValueError(
                f"the {what} must not contain control characters (found U+{ord(control):04X})"
            )
        if len(value) > max_length:
            raise ValueError(f"the {what} is longer than {max_length} characters")
        return value

    return check


def _extension(value: str) -> str:
    if not EXTENSION_PATTERN.fullmatch(value):
        raise ValueError(f"extension {value!r} must be 1 to 20 digits")
    return value


def _workplace_id(value: str) -> str:
    if not WORKPLACE_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"workplace id {value!r} must be a slug: lower-case letters, digits and inner "
            "hyphens, at most 64 characters, e.g. office-1"
        )
    return value


def _code(value: str) -> str:
    if not CODE_PATTERN.fullmatch(value):
        raise ValueError(f"workplace code {value!r} must be 1 to 10 digits")
    return value


def _endpoint(value: str) -> str:
    problem = endpoint_problem(value)
    if problem is not None:
        raise ValueError(problem)
    if len(value) > MAX_ENDPOINT_LENGTH:
        raise ValueError(f"endpoint {value!r} is longer than {MAX_ENDPOINT_LENGTH} characters")
    return value


Extension = Annotated[
    str, BeforeValidator(_not_a_number("extension", "201")), AfterValidator(_extension)
]
WorkplaceId = Annotated[str, AfterValidator(_workplace_id)]
WorkplaceCode = Annotated[
    str, BeforeValidator(_not_a_number("workplace code", "801")), AfterValidator(_code)
]
Endpoint = Annotated[str, AfterValidator(_endpoint)]
DisplayName = Annotated[str, AfterValidator(_name_checker("name", MAX_NAME_LENGTH))]
RoleName = Annotated[str, AfterValidator(_name_checker("role name", MAX_ROLE_NAME_LENGTH))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleEntry(_Strict):
    name: RoleName
    # None: users of this role may log in at any workplace (the default).
    workplaces: tuple[WorkplaceId, ...] | None = None


class UserEntry(_Strict):
    extension: Extension
    name: DisplayName
    role: RoleName | None = None
    pin: str | None = Field(default=None, repr=False)  # plain PIN, hashed on import
    pin_hash: str | None = Field(default=None, repr=False)  # as written by export
    phones: tuple[Endpoint, ...] = ()  # directly assigned endpoints

    # Never echo a PIN or a hash in a message: they end up in logs and terminals.
    @field_validator("pin", mode="before")
    @classmethod
    def _pin_is_text(cls, value: Any) -> Any:
        if isinstance(value, int | float):
            raise ValueError(
                'write the PIN in quotes, e.g. pin: "0815": unquoted, YAML reads it as a '
                "number and leading zeros would be lost"
            )
        return value

    @field_validator("pin")
    @classmethod
    def _pin_is_4_to_12_digits(cls, value: str | None) -> str | None:
        if value is not None and not PIN_PATTERN.fullmatch(value):
            raise ValueError("the PIN must be 4 to 12 digits")
        return value

    @field_validator("pin_hash")
    @classmethod
    def _pin_hash_is_ours(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("pin") is not None:
            raise ValueError("give either pin or pin_hash, not both")
        if not is_pin_hash(value):
            raise ValueError(
                "pin_hash is not a hash written by callrouter directory export; "
                'to set a PIN, write it as pin: "1234"'
            )
        return value


class WorkplaceEntry(_Strict):
    id: WorkplaceId
    name: DisplayName
    code: WorkplaceCode  # dialled to log in there; may not equal a user's extension
    phones: tuple[Endpoint, ...] = ()


class DirectoryDocument(_Strict):
    roles: tuple[RoleEntry, ...] = ()
    users: tuple[UserEntry, ...] = ()
    workplaces: tuple[WorkplaceEntry, ...] = ()
    phones: tuple[Endpoint, ...] = ()  # known but unassigned phones
    logins: dict[Extension, WorkplaceId] = {}  # extension -> workplace id
