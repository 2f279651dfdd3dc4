"""The router's view of the directory: the immutable snapshot it resolves calls from.

``load_snapshot`` reads everything in one consistent transaction, with a few Core
queries straight into tuples and dicts (no ORM objects), so 100,000 users load in
a second or two.  ``load_personal`` reads only what users set for themselves (logins,
own forwardings, switches), for a router whose directory changed in nothing else
(see ``callrouter.directory.revisions``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import begin_read
from callrouter.directory.revisions import current_revisions
from callrouter.directory.state import phones_by_owner
from callrouter.domain.directory import DirectorySnapshot, Role, User, Workplace


async def load_snapshot(engine: AsyncEngine) -> DirectorySnapshot:
    """The whole directory, read in one consistent transaction, as an immutable snapshot.

    Plain column tuples from Core queries (no ORM objects), shared string objects
    (a workplace's id is the same object in ``workplaces`` and ``logins``, role
    names are interned): 100,000 users with 300,000 phones load in a couple of
    seconds and take a few tens of MB.
    """
    intern = sys.intern
    r, rw, w, u, p, lg = s.roles, s.role_workplaces, s.workplaces, s.users, s.phones, s.logins
    async with begin_read(engine) as conn:
        revision, content_revision = await current_revisions(conn)
        role_rows = (await conn.execute(select(r.c.id, r.c.name, r.c.restricted))).all()
        role_workplace_rows = (await conn.execute(select(rw.c.role_id, rw.c.workplace_id))).all()
        workplace_rows = (await conn.execute(select(w.c.id, w.c.slug, w.c.name, w.c.code))).all()
        user_rows = (
            await conn.execute(select(u.c.id, u.c.extension, u.c.name, u.c.role_id, u.c.pin_hash))
        ).all()
        phone_rows = (
            await conn.execute(select(p.c.endpoint, p.c.user_id, p.c.workplace_id, p.c.node))
        ).all()
        login_rows = (await conn.execute(select(lg.c.user_id, lg.c.workplace_id))).all()
        forwards, switched_off = await _own_settings(conn)

    owned = phones_by_owner(phone_rows)
    user_phones, workplace_phones, unassigned = owned.users, owned.workplaces, owned.unassigned
    del phone_rows
    no_phones: tuple[str, ...] = ()

    slug_of: dict[int, str] = {}
    workplaces: dict[str, Workplace] = {}
    for id_, slug, name, code in workplace_rows:
        phones = workplace_phones.get(id_)
        slug_of[id_] = slug
        workplaces[slug] = Workplace(
            slug, name, code, tuple(sorted(phones)) if phones else no_phones
        )

    allowed: dict[int, list[str]] = {}
    for role_id, workplace_id in role_workplace_rows:
        allowed.setdefault(role_id, []).append(slug_of[workplace_id])
    role_name: dict[int, str] = {}
    roles: dict[str, Role] = {}
    for id_, name, restricted in role_rows:
        name = intern(name)
        role_name[id_] = name
        roles[name] = Role(name, frozenset(allowed.get(id_, ())) if restricted else None)

    ext_of: dict[int, str] = {}
    users: dict[str, User] = {}
    for id_, extension, name, role_id, pin_hash in user_rows:
        phones = user_phones.get(id_)
        ext_of[id_] = extension
        users[extension] = User(
            extension,
            name,
            None if role_id is None else role_name[role_id],
            tuple(sorted(phones)) if phones else no_phones,
            pin_hash,
        )
    logins = {ext_of[user_id]: slug_of[workplace_id] for user_id, workplace_id in login_rows}
    return DirectorySnapshot(
        users=users,
        workplaces=workplaces,
        roles=roles,
        logins=logins,
        unassigned_phones=tuple(sorted(unassigned)),
        phone_nodes={endpoint: intern(node) for endpoint, node in owned.nodes.items()},
        forwards=forwards,
        switched_off=switched_off,
        revision=revision,
        content_revision=content_revision,
    )


@dataclass(frozen=True, slots=True)
class PersonalState:
    """What users set for themselves, with the revisions it belongs to."""

    logins: dict[str, str]  # extension -> workplace id
    forwards: Mapping[str, Mapping[str, str]]  # extension -> kind -> target
    switched_off: Mapping[str, frozenset[str]]  # extension -> switch names
    revision: int
    content_revision: int


async def _own_settings(
    conn: AsyncConnection,
) -> tuple[dict[str, dict[str, str]], dict[str, frozenset[str]]]:
    """The users' own forwardings and the switches they turned off, by extension."""
    u, f, so = s.users, s.user_forwards, s.switches_off
    forwards: dict[str, dict[str, str]] = {}
    rows = await conn.execute(
        select(u.c.extension, f.c.kind, f.c.target).join_from(f, u, f.c.user_id == u.c.id)
    )
    for extension, kind, target in rows.all():
        forwards.setdefault(str(extension), {})[sys.intern(str(kind))] = str(target)
    off: dict[str, set[str]] = {}
    rows = await conn.execute(
        select(u.c.extension, so.c.switch).join_from(so, u, so.c.user_id == u.c.id)
    )
    for extension, switch in rows.all():
        off.setdefault(str(extension), set()).add(str(switch))
    return forwards, {ext: frozenset(names) for ext, names in off.items()}


async def load_personal(engine: AsyncEngine) -> PersonalState:
    """Logins, own forwardings and switches, read in one transaction."""
    lg, u, w = s.logins, s.users, s.workplaces
    async with begin_read(engine) as conn:
        revision, content_revision = await current_revisions(conn)
        rows = (
            await conn.execute(
                select(u.c.extension, w.c.slug)
                .join_from(lg, u, lg.c.user_id == u.c.id)
                .join(w, lg.c.workplace_id == w.c.id)
            )
        ).all()
        forwards, switched_off = await _own_settings(conn)
    logins = {str(e): sys.intern(str(slug)) for e, slug in rows}
    return PersonalState(logins, forwards, switched_off, revision, content_revision)


async def load_logins(engine: AsyncEngine) -> tuple[dict[str, str], int, int]:
    """Only the logins (extension -> workplace id), with the revisions they belong to."""
    state = await load_personal(engine)
    return state.logins, state.revision, state.content_revision
