"""Cross-references inside a directory file, each problem at its exact path.

``DirectoryDocument`` validates every value on its own; this checks how the values
fit together: duplicates (extensions, role names, workplace ids and codes, phones),
references to roles, workplaces and extensions the file does not define, and the
logins (one user per workplace, only where the user's role allows).

What a directory holds only once is defined here once, by ``repeats``:
``check_document`` words each repeat for the file, and the importer refuses a
document built in code that has any (the database could not hold it).
"""

from __future__ import annotations

import difflib
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from callrouter.directory.document import DirectoryDocument, RoleEntry, UserEntry
from callrouter.yamlfile import Path, Problem


class _EveryName:
    """A container that holds every name."""

    def __contains__(self, item: object) -> bool:
        return True


EVERY_NAME: Any = _EveryName()


@dataclass(frozen=True, slots=True)
class Unchecked:
    """Names the file defines in entries that failed shape validation.

    ``load_document`` cross-checks the valid rest of a file that has errors; a
    reference to one of these names is then not reported as unknown.  The loader
    passes ``EVERY_NAME`` for a whole section that could not be read.
    """

    roles: Container[str] = frozenset()
    extensions: Container[str] = frozenset()
    workplaces: Container[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Repeat:
    """A name a directory holds once, given again at ``path`` (``kind`` says which name)."""

    kind: str  # "role", "extension", "workplace", "workplace code", "phone", "login workplace"
    value: str
    path: Path


def repeats(doc: DirectoryDocument) -> list[Repeat]:
    """Every name ``doc`` gives again after its first time, kind by kind, in file order.

    These are the directory's unique constraints seen from the file: role names,
    extensions, workplace ids and codes, phones, and one user per workplace in
    ``logins``.
    """
    found: list[Repeat] = []
    for kind, named in _unique_names(doc):
        seen: set[str] = set()
        for path, value in named:
            if value in seen:
                found.append(Repeat(kind, value, path))
            seen.add(value)
    return found


def _unique_names(doc: DirectoryDocument) -> list[tuple[str, Iterable[tuple[Path, str]]]]:
    """(kind, every (path, name) of that kind in ``doc``), for each name held once."""
    return [
        ("role", ((("roles", i, "name"), r.name) for i, r in enumerate(doc.roles))),
        ("extension", ((("users", i, "extension"), u.extension) for i, u in enumerate(doc.users))),
        ("workplace", ((("workplaces", i, "id"), w.id) for i, w in enumerate(doc.workplaces))),
        (
            "workplace code",
            ((("workplaces", i, "code"), w.code) for i, w in enumerate(doc.workplaces)),
        ),
        ("phone", named_phones(doc)),
        ("login workplace", ((("logins", ext), slug) for ext, slug in doc.logins.items())),
        ("node phone", node_phones(doc)),
    ]


def node_phones(doc: DirectoryDocument) -> Iterator[tuple[Path, str]]:
    """(path, endpoint) of every phone ``doc`` puts on a node."""
    for node, endpoints in doc.nodes.items():
        for j, endpoint in enumerate(endpoints):
            yield ("nodes", node, j), endpoint


def named_phones(doc: DirectoryDocument) -> Iterator[tuple[Path, str]]:
    """(path, endpoint) of every phone ``doc`` names: users', workplaces', unassigned."""
    for i, user in enumerate(doc.users):
        for j, endpoint in enumerate(user.phones):
            yield ("users", i, "phones", j), endpoint
    for i, workplace in enumerate(doc.workplaces):
        for j, endpoint in enumerate(workplace.phones):
            yield ("workplaces", i, "phones", j), endpoint
    for k, endpoint in enumerate(doc.phones):
        yield ("phones", k), endpoint


def check_document(doc: DirectoryDocument, *, unchecked: Unchecked = Unchecked()) -> list[Problem]:
    """Every cross-reference problem in ``doc``, in file order per kind.

    Messages name entries by what they are called, never by list index: a loader
    may check a document with invalid entries left out (see ``Unchecked``), whose
    indexes differ from the file's (the paths are mapped back, the messages not).
    """
    problems: list[Problem] = []
    add = problems.append
    repeated = {repeat.path for repeat in repeats(doc)}

    # Each name -> the index of its first entry.
    roles: dict[str, int] = {}
    for i, role in enumerate(doc.roles):
        roles.setdefault(role.name, i)
        if ("roles", i, "name") in repeated:
            add(Problem(("roles", i, "name"), f"role {role.name!r} is defined twice"))

    workplaces: dict[str, int] = {}
    codes: dict[str, int] = {}
    for i, workplace in enumerate(doc.workplaces):
        workplaces.setdefault(workplace.id, i)
        codes.setdefault(workplace.code, i)
        if ("workplaces", i, "id") in repeated:
            add(Problem(("workplaces", i, "id"), f"workplace id {workplace.id} is used twice"))
        if ("workplaces", i, "code") in repeated:
            other = doc.workplaces[codes[workplace.code]]
            add(
                Problem(
                    ("workplaces", i, "code"),
                    f"code {workplace.code} is already the code of workplace {other.id}",
                )
            )

    users: dict[str, int] = {}
    for i, user in enumerate(doc.users):
        users.setdefault(user.extension, i)
        if ("users", i, "extension") in repeated:
            add(
                Problem(
                    ("users", i, "extension"),
                    f"extension {user.extension} is used twice: it is already "
                    f"{doc.users[users[user.extension]].name}'s",
                )
            )

    for i, workplace in enumerate(doc.workplaces):
        if workplace.code in users:
            add(
                Problem(
                    ("workplaces", i, "code"),
                    f"code {workplace.code} is also the extension of "
                    f"{_user(doc, users, workplace.code)}: a dial code must differ from "
                    "every extension",
                )
            )

    for i, role in enumerate(doc.roles):
        for j, workplace_id in enumerate(role.workplaces or ()):
            if workplace_id not in workplaces and workplace_id not in unchecked.workplaces:
                add(
                    Problem(
                        ("roles", i, "workplaces", j),
                        _unknown("workplace", workplace_id, workplaces),
                    )
                )

    for i, user in enumerate(doc.users):
        if user.role is not None and user.role not in roles and user.role not in unchecked.roles:
            add(Problem(("users", i, "role"), _unknown("role", user.role, roles)))

    problems += _phones_assigned_once(doc, repeated)
    problems += _logins(doc, users, workplaces, roles, unchecked, repeated)
    problems += _nodes(doc, unchecked, repeated)
    return problems


def _nodes(
    doc: DirectoryDocument, unchecked: Unchecked, repeated: Container[Path]
) -> list[Problem]:
    """A node lists phones the file names, each on one node only."""
    problems: list[Problem] = []
    named = {endpoint for _, endpoint in named_phones(doc)}
    # Entries left out for their own errors may have named the phone.
    complete = not (unchecked.extensions or unchecked.workplaces)
    first: dict[str, str] = {}  # endpoint -> its node
    for path, endpoint in node_phones(doc):
        node = str(path[1])
        first.setdefault(endpoint, node)
        if path in repeated:
            where = "on this node" if first[endpoint] == node else f"on node {first[endpoint]}"
            problems.append(Problem(path, f"{endpoint} is listed twice: it is already {where}"))
        elif complete and endpoint not in named:
            problems.append(
                Problem(
                    path,
                    f"{endpoint} is on node {node} but is none of this file's phones; "
                    "list it under a user, a workplace or phones first",
                )
            )
    return problems


def _phones_assigned_once(doc: DirectoryDocument, repeated: Container[Path]) -> list[Problem]:
    problems: list[Problem] = []
    owners: dict[str, str] = {}  # endpoint -> who has it first, for the message
    for path, endpoint in named_phones(doc):
        owner = _owner(doc, path)
        first = owners.setdefault(endpoint, owner)
        if path not in repeated:
            continue
        if first == owner:
            problems.append(Problem(path, f"{endpoint} is listed twice for {owner}"))
        elif owner == _UNASSIGNED:
            problems.append(
                Problem(path, f"{endpoint} is listed as unassigned, but belongs to {first}")
            )
        else:
            problems.append(
                Problem(
                    path,
                    f"{endpoint} is assigned twice: it already belongs "
                    f"to {first}; a phone belongs to at most one user "
                    "or workplace",
                )
            )
    return problems


def _owner(doc: DirectoryDocument, path: Path) -> str:
    """Who has the phone at ``path`` (from ``named_phones``), in words."""
    section, index = path[0], path[1]
    assert isinstance(index, int)
    if section == "users":
        user = doc.users[index]
        return f"user {user.extension} ({user.name})"
    if section == "workplaces":
        return f"workplace {doc.workplaces[index].id}"
    return _UNASSIGNED


_UNASSIGNED = "the unassigned phones"


def _logins(
    doc: DirectoryDocument,
    users: dict[str, int],
    workplaces: dict[str, int],
    roles: dict[str, int],
    unchecked: Unchecked,
    repeated: Container[Path],
) -> list[Problem]:
    problems: list[Problem] = []
    occupant: dict[str, str] = {}  # workplace id -> extension logged in there
    for extension, workplace_id in doc.logins.items():
        path = ("logins", extension)
        user_index = users.get(extension)
        if user_index is None and extension not in unchecked.extensions:
            problems.append(Problem(path, f"no user has the extension {extension}", at_key=True))
        if workplace_id not in workplaces and workplace_id not in unchecked.workplaces:
            problems.append(Problem(path, _unknown("workplace", workplace_id, workplaces)))
            continue
        occupant.setdefault(workplace_id, extension)
        if path in repeated:
            problems.append(
                Problem(
                    path,
                    f"{_user(doc, users, occupant[workplace_id])} is "
                    f"already logged in at {workplace_id}; a workplace "
                    "holds at most one user",
                )
            )
        if user_index is not None:
            problem = _role_forbids(doc.users[user_index], workplace_id, doc.roles, roles)
            if problem is not None:
                problems.append(Problem(path, problem))
    return problems


def _role_forbids(
    user: UserEntry, workplace_id: str, role_entries: tuple[RoleEntry, ...], roles: dict[str, int]
) -> str | None:
    if user.role is None or user.role not in roles:
        return None
    allowed = role_entries[roles[user.role]].workplaces
    if allowed is None or workplace_id in allowed:
        return None
    where = f"only at {', '.join(allowed)}" if allowed else "at no workplace"
    return (
        f"user {user.extension} may not log in at {workplace_id}: "
        f"role {user.role} may log in {where}"
    )


def _user(doc: DirectoryDocument, users: dict[str, int], extension: str) -> str:
    index = users.get(extension)  # None: unknown, or an entry left out for its errors
    return f"user {extension}" if index is None else f"user {extension} ({doc.users[index].name})"


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    names = sorted(known)
    message = f"unknown {kind} {name!r}"
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    if not names:
        return f"{message}: the file defines no {kind}s"
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f"{message}; the file defines: {shown}"
