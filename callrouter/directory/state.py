"""The directory database as plain values, table by table: what import and export work on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.directory import schema as s


@dataclass(slots=True)
class State:
    roles: dict[str, tuple[int, bool]]  # name -> (id, restricted)
    role_workplaces: dict[int, set[int]]  # role id -> workplace ids
    workplaces: dict[str, tuple[int, str, str]]  # slug -> (id, name, code)
    users: dict[str, tuple[int, str, int | None, str | None]]  # ext -> (id, name, role, pin)
    phones: dict[str, tuple[int, int | None, int | None]]  # endpoint -> (id, user, workplace)
    logins: dict[int, tuple[int, datetime]]  # user id -> (workplace id, since)


async def read_state(conn: AsyncConnection) -> State:
    roles = {
        name: (id_, bool(restricted))
        for id_, name, restricted in await conn.execute(
            select(s.roles.c.id, s.roles.c.name, s.roles.c.restricted)
        )
    }
    role_workplaces: dict[int, set[int]] = {}
    for role_id, workplace_id in await conn.execute(
        select(s.role_workplaces.c.role_id, s.role_workplaces.c.workplace_id)
    ):
        role_workplaces.setdefault(role_id, set()).add(workplace_id)
    w = s.workplaces
    workplaces = {
        slug: (id_, name, code)
        for id_, slug, name, code in await conn.execute(
            select(w.c.id, w.c.slug, w.c.name, w.c.code)
        )
    }
    u = s.users
    users = {
        extension: (id_, name, role_id, pin_hash)
        for id_, extension, name, role_id, pin_hash in await conn.execute(
            select(u.c.id, u.c.extension, u.c.name, u.c.role_id, u.c.pin_hash)
        )
    }
    p = s.phones
    phones = {
        endpoint: (id_, user_id, workplace_id)
        for id_, endpoint, user_id, workplace_id in await conn.execute(
            select(p.c.id, p.c.endpoint, p.c.user_id, p.c.workplace_id)
        )
    }
    lg = s.logins
    logins = {
        user_id: (workplace_id, since)
        for user_id, workplace_id, since in await conn.execute(
            select(lg.c.user_id, lg.c.workplace_id, lg.c.since)
        )
    }
    return State(roles, role_workplaces, workplaces, users, phones, logins)
