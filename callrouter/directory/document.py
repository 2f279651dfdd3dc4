"""The directory file admins import and export (``callrouter directory import FILE``).

Shape only, as pydantic models.  Cross-references (duplicate extensions, a phone
assigned twice, unknown roles or workplaces, ...) are checked by
``check_document`` so that each problem can name the exact place in the file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleEntry(_Strict):
    name: str
    # None: users of this role may log in at any workplace (the default).
    workplaces: tuple[str, ...] | None = None


class UserEntry(_Strict):
    extension: str
    name: str
    role: str | None = None
    pin: str | None = Field(default=None, repr=False)  # plain PIN, hashed on import
    pin_hash: str | None = Field(default=None, repr=False)  # as written by export
    phones: tuple[str, ...] = ()  # directly assigned endpoints


class WorkplaceEntry(_Strict):
    id: str
    name: str
    code: str
    phones: tuple[str, ...] = ()


class DirectoryDocument(_Strict):
    roles: tuple[RoleEntry, ...] = ()
    users: tuple[UserEntry, ...] = ()
    workplaces: tuple[WorkplaceEntry, ...] = ()
    phones: tuple[str, ...] = ()  # known but unassigned phones
    logins: dict[str, str] = {}  # extension -> workplace id
