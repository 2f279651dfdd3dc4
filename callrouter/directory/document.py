"""The directory file admins import and export (``callrouter directory import FILE``).

Pydantic models for the shape and for each value on its own (an extension is 1 to
20 digits, a PIN 4 to 12 digits, an endpoint dialable, ...).  Cross-references
(duplicate extensions, a phone assigned twice, unknown roles or workplaces, ...) are
checked by ``callrouter.directory.check.check_document`` so that each problem can
name the exact place in the file; ``callrouter.directory.loader.load_document`` runs
both.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from callrouter.directory.pins import pin_hash_problem
from callrouter.domain.identifiers import (
    PIN_PATTERN,
    DisplayName,
    Endpoint,
    Extension,
    NodeName,
    RoleName,
    WorkplaceCode,
    WorkplaceId,
)


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
        problem = pin_hash_problem(value)
        if problem is None:
            return value
        # Name the user, never the value: a hash must not end up in logs either.
        extension = info.data.get("extension")
        whose = "pin_hash" if extension is None else f"pin_hash of user {extension}"
        raise ValueError(
            f"{whose} is not a hash written by callrouter directory export ({problem}); "
            'to set a PIN, write it as pin: "1234"'
        )


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
    # node -> the phones on that node's Asterisk (several Asterisks on one
    # directory); a phone listed under no node is on every router's own Asterisk.
    nodes: dict[NodeName, tuple[Endpoint, ...]] = {}
