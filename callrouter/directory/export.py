"""Writing the directory out as the admin's file (``callrouter directory export``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory.database import begin_read
from callrouter.directory.document import (
    DirectoryDocument,
    RoleEntry,
    UserEntry,
    WorkplaceEntry,
)
from callrouter.directory.state import phones_by_owner, read_state


def _natural_key(value: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort "office-2" before "office-10" and "201" before "1000"."""
    parts = tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"([0-9]+)", value)
        if part
    )
    return parts, value


async def export_document(engine: AsyncEngine) -> DirectoryDocument:
    """The whole directory in the import format, sorted (the same database, the same file).

    PINs appear only as ``pin_hash``; importing the result changes nothing.
    """
    async with begin_read(engine) as conn:
        state = await read_state(conn)
    role_name = {id_: name for name, (id_, _) in state.roles.items()}
    slug_of = {id_: slug for slug, (id_, _) in state.workplaces.items()}
    ext_of = {id_: ext for ext, (id_, _) in state.users.items()}

    phones = phones_by_owner((endpoint, *values) for endpoint, (_, values) in state.phones.items())
    user_phones, workplace_phones, unassigned = phones.users, phones.workplaces, phones.unassigned

    def sorted_names(values: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(values, key=_natural_key))

    roles = [
        RoleEntry(
            name=name,
            workplaces=(
                sorted_names(slug_of[w] for w in state.role_workplaces.get(id_, ()))
                if restricted
                else None
            ),
        )
        for name, (id_, (restricted,)) in sorted(
            state.roles.items(), key=lambda i: _natural_key(i[0])
        )
    ]
    users = [
        UserEntry(
            extension=ext,
            name=name,
            role=None if role_id is None else role_name[role_id],
            pin_hash=pin_hash,
            phones=sorted_names(user_phones.get(id_, ())),
        )
        for ext, (id_, (name, role_id, pin_hash)) in sorted(
            state.users.items(), key=lambda i: _natural_key(i[0])
        )
    ]
    workplaces = [
        WorkplaceEntry(
            id=slug, name=name, code=code, phones=sorted_names(workplace_phones.get(id_, ()))
        )
        for slug, (id_, (name, code)) in sorted(
            state.workplaces.items(), key=lambda i: _natural_key(i[0])
        )
    ]
    nodes: dict[str, list[str]] = {}
    for endpoint, node in phones.nodes.items():
        nodes.setdefault(node, []).append(endpoint)
    logins = {
        ext_of[user_id]: slug_of[workplace_id]
        for user_id, (workplace_id, _) in state.logins.items()
    }
    return DirectoryDocument(
        roles=tuple(roles),
        users=tuple(users),
        workplaces=tuple(workplaces),
        phones=sorted_names(unassigned),
        nodes={node: sorted_names(nodes[node]) for node in sorted(nodes, key=_natural_key)},
        logins={ext: logins[ext] for ext in sorted(logins, key=_natural_key)},
    )
