"""What a change to the directory database can fail with, in words an admin can act on."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError


class DirectoryError(Exception):
    """A directory change that cannot be made; the message says why."""


class ImportRejected(DirectoryError):
    """The import was refused and nothing was written; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"import refused, nothing was written: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {problem}" for problem in self.problems)
            message = f"import refused, nothing was written:\n{listed}"
        super().__init__(message)


class UnknownExtension(DirectoryError):
    def __init__(self, extension: str) -> None:
        self.extension = extension
        super().__init__(f"no user has extension {extension}")


class UnknownWorkplace(DirectoryError):
    def __init__(self, workplace_id: str) -> None:
        self.workplace_id = workplace_id
        super().__init__(f"no workplace has the id {workplace_id!r}")


# A constraint's name (PostgreSQL) or its columns (SQLite) -> what it means.
_CONSTRAINT_MESSAGES = {
    "uq_users_extension": "an extension is already in use",
    "users.extension": "an extension is already in use",
    "uq_workplaces_code": "a workplace code is already used by another workplace",
    "workplaces.code": "a workplace code is already used by another workplace",
    "uq_workplaces_slug": "a workplace id is already in use",
    "workplaces.slug": "a workplace id is already in use",
    "uq_phones_endpoint": "a phone is already in the directory",
    "phones.endpoint": "a phone is already in the directory",
    "uq_logins_workplace_id": "a workplace would hold two users",
    "logins.workplace_id": "a workplace would hold two users",
    "uq_roles_name": "a role name is already in use",
    "roles.name": "a role name is already in use",
    "ck_phones_one_owner": "a phone would belong to a user and a workplace at once",
    "fk_users_role_id_roles": "a role that is removed is still some user's role",
    "foreign key": "an entry refers to something that is removed or does not exist",
}


def integrity_problem(error: IntegrityError) -> str:
    """The database's refusal of a write, in words."""
    text = str(error.orig).lower()
    for key, message in _CONSTRAINT_MESSAGES.items():
        if key.lower() in text:
            return f"{message} (the directory was probably changed meanwhile; try again)"
    return f"the database refused the change: {error.orig}"
