"""The directory database as plain values, table by table: what import and export work on.

Each table a directory file describes row by row is an ``Entity``: the column a
file names a row by, and the columns the file decides.  ``read_state`` reads them
all the same way, so the importer can compare a file with the database, and
export write the database out as a file, with one generic piece of code per job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.directory import schema as s


@dataclass(frozen=True, slots=True, eq=False)
class Entity:
    """A table of the directory, as a directory file describes it."""

    table: Table
    key: str  # the column a file names a row by: unique, never changed by an import
    columns: tuple[str, ...]  # the columns a file decides, in this order in a ``Row``
    # Unique columns whose values may move between rows in one import (two workplaces
    # swapping their codes): parked on a placeholder before the real update.
    parked: tuple[str, ...] = ()


ROLES = Entity(s.roles, "name", ("restricted",))
WORKPLACES = Entity(s.workplaces, "slug", ("name", "code"), parked=("code",))
USERS = Entity(s.users, "extension", ("name", "role_id", "pin_hash"))
PHONES = Entity(s.phones, "endpoint", ("user_id", "workplace_id", "node"))
ENTITIES = (ROLES, WORKPLACES, USERS, PHONES)

# (id, the values of the entity's columns): one row, by its key.
Row = tuple[int, tuple[Any, ...]]


@dataclass(slots=True)
class State:
    rows: dict[Entity, dict[str, Row]]  # e.g. rows[USERS]["201"] = (7, (name, role id, hash))
    role_workplaces: dict[int, set[int]]  # role id -> workplace ids
    logins: dict[int, tuple[int, datetime]]  # user id -> (workplace id, since)

    @property
    def roles(self) -> dict[str, Row]:
        return self.rows[ROLES]

    @property
    def workplaces(self) -> dict[str, Row]:
        return self.rows[WORKPLACES]

    @property
    def users(self) -> dict[str, Row]:
        return self.rows[USERS]

    @property
    def phones(self) -> dict[str, Row]:
        return self.rows[PHONES]


async def read_rows(conn: AsyncConnection, entity: Entity) -> dict[str, Row]:
    t = entity.table
    query = select(t.c.id, t.c[entity.key], *(t.c[name] for name in entity.columns))
    return {key: (id_, tuple(values)) for id_, key, *values in await conn.execute(query)}


async def read_state(conn: AsyncConnection) -> State:
    rows = {entity: await read_rows(conn, entity) for entity in ENTITIES}
    role_workplaces: dict[int, set[int]] = {}
    rw = s.role_workplaces
    for role_id, workplace_id in await conn.execute(select(rw.c.role_id, rw.c.workplace_id)):
        role_workplaces.setdefault(role_id, set()).add(workplace_id)
    lg = s.logins
    logins = {
        user_id: (workplace_id, since)
        for user_id, workplace_id, since in await conn.execute(
            select(lg.c.user_id, lg.c.workplace_id, lg.c.since)
        )
    }
    return State(rows, role_workplaces, logins)


@dataclass(slots=True)
class PhonesByOwner:
    """Every phone under its owner: a user, a workplace, or nobody (by row id)."""

    users: dict[int, list[str]]
    workplaces: dict[int, list[str]]
    unassigned: list[str]
    nodes: dict[str, str]  # endpoint -> node, for the phones that have one


def phones_by_owner(rows: Iterable[Sequence[Any]]) -> PhonesByOwner:
    """Group (endpoint, user id, workplace id, node) rows; a phone has one owner at most."""
    grouped = PhonesByOwner({}, {}, [], {})
    for endpoint, user_id, workplace_id, node in rows:
        if node is not None:
            grouped.nodes[endpoint] = node
        if user_id is not None:
            grouped.users.setdefault(user_id, []).append(endpoint)
        elif workplace_id is not None:
            grouped.workplaces.setdefault(workplace_id, []).append(endpoint)
        else:
            grouped.unassigned.append(endpoint)
    return grouped
