"""The directory's SQL schema (SQLAlchemy 2.0 declarative models).

Changes to these models reach a database only through an Alembic migration in
``migrations/versions/``; ``tests/unit/test_migrations.py`` fails when the two
disagree.

The invariants that matter when several routers share one database are enforced
by the database itself, not only by the code that writes to it:

* an extension, a workplace slug, a workplace dial code and a phone endpoint are
  each unique;
* a phone belongs to at most one user *or* one workplace (``ck_phones_one_owner``);
* a user is logged in at one workplace at most (``logins`` is keyed by user) and a
  workplace holds one user at most (``uq_logins_workplace_id``);
* a user has one own forwarding per kind (``user_forwards`` is keyed by user and
  kind) and a switch is off once (``switches_off``, by user and switch).

Every change to the directory also bumps the single row of ``directory_revision``
in the same transaction, so a router learns that it must reload its snapshot with
one cheap query.  On PostgreSQL a trigger on that row (migration 0004) also sends
``NOTIFY callrouter_directory`` with the new revision, delivered at commit, so the
routers listening (``directory/changes.py``) reload at once instead of at their next
poll.  Writers lock that row first (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which serialises directory changes
across processes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from callrouter.domain.identifiers import (
    CLIENT_ID_LENGTH,
    ENDPOINT_LENGTH,
    NAME_LENGTH,
    NODE_LENGTH,
    ROLE_NAME_LENGTH,
    WORKPLACE_ID_LENGTH,
)

# Stable constraint names: Alembic needs them to alter constraints later (SQLite
# batch mode included), and they make IntegrityError messages recognisable.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Columns for an extension or a workplace code were made wider than the identifiers
# (20 and 10 digits, callrouter.domain.identifiers): room to grow without a migration.
# tests/unit/test_migrations.py checks that every column fits its identifier.
EXTENSION_COLUMN_LENGTH = 32
WORKPLACE_CODE_COLUMN_LENGTH = 32
PIN_HASH_LENGTH = 255
ACTION_LENGTH = 64
ACTOR_LENGTH = 200
CLIENT_STATUS_LENGTH = 16
FORWARD_KIND_LENGTH = 16  # "unreachable", with room
FORWARD_TARGET_COLUMN_LENGTH = 32  # "+" and 20 digits, with room
SWITCH_NAME_LENGTH = 40  # rules.model.SwitchName


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware datetime.

    PostgreSQL keeps the zone (``timestamptz``); SQLite stores text without one,
    so naive values read from it are UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RoleRow(Base):
    """A role: which workplaces its users may log in to."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ROLE_NAME_LENGTH), unique=True)
    # False: users of this role may log in anywhere (role_workplaces is ignored).
    # True: only at the workplaces listed in role_workplaces (none listed: nowhere).
    restricted: Mapped[bool] = mapped_column(Boolean, server_default=false())


class RoleWorkplaceRow(Base):
    """One workplace a restricted role allows."""

    __tablename__ = "role_workplaces"

    role_id: Mapped[int] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )
    workplace_id: Mapped[int] = mapped_column(
        ForeignKey("workplaces.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class UserRow(Base):
    """A person, reached by their extension."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    extension: Mapped[str] = mapped_column(String(EXTENSION_COLUMN_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    role_id: Mapped[int | None] = mapped_column(
        ForeignKey("roles.id", ondelete="RESTRICT"), index=True
    )
    # Only ever a salted hash (callrouter.directory.pins); NULL: no PIN set.
    pin_hash: Mapped[str | None] = mapped_column(String(PIN_HASH_LENGTH))


class WorkplaceRow(Base):
    """A hot desk: a place with phones that one user at a time can log in to."""

    __tablename__ = "workplaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(WORKPLACE_ID_LENGTH), unique=True)  # e.g. "office-1"
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    code: Mapped[str] = mapped_column(
        String(WORKPLACE_CODE_COLUMN_LENGTH), unique=True
    )  # numeric dial code


class PhoneRow(Base):
    """A phone, identified by its Asterisk endpoint; owned by a user, a workplace or nobody."""

    __tablename__ = "phones"
    __table_args__ = (CheckConstraint("user_id IS NULL OR workplace_id IS NULL", name="one_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(ENDPOINT_LENGTH), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    workplace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workplaces.id", ondelete="SET NULL"), index=True
    )
    # The Asterisk the phone is registered with, when several share the directory;
    # NULL: the phone is on every router's own Asterisk (one node, the default).
    node: Mapped[str | None] = mapped_column(String(NODE_LENGTH))


class LoginRow(Base):
    """Who is logged in where: one row per logged-in user, one user per workplace."""

    __tablename__ = "logins"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    workplace_id: Mapped[int] = mapped_column(
        ForeignKey("workplaces.id", ondelete="CASCADE"), unique=True
    )
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(Text)  # "import", "admin", "phone", "api", ...


class UserForwardRow(Base):
    """A user's own forwarding of one kind (API, client, feature code), one per kind.

    Personal like a login: a change bumps ``revision`` but not ``content_revision``.
    The target is checked when it is set (``callrouter.personal``), by the rules in
    force then; the resolver checks it again against the rules of each call.
    """

    __tablename__ = "user_forwards"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('always', 'busy', 'no_answer', 'unreachable', 'dnd')", name="kind"
        ),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(FORWARD_KIND_LENGTH), primary_key=True)
    target: Mapped[str] = mapped_column(String(FORWARD_TARGET_COLUMN_LENGTH))
    since: Mapped[datetime] = mapped_column(UTCDateTime())


class SwitchOffRow(Base):
    """A switch (``switch:`` of a FollowMe entry) its user has turned off; on: no row."""

    __tablename__ = "switches_off"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    switch: Mapped[str] = mapped_column(String(SWITCH_NAME_LENGTH), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditRow(Base):
    """One change to the login state (and later other changes), kept after its subjects go.

    Plain text columns rather than foreign keys: the audit log must outlive the users
    and workplaces it names.
    """

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))  # who: "admin", an extension, ...
    source: Mapped[str] = mapped_column(Text)  # from where: "import", "cli", "phone PJSIP/x", ...
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH))  # "login", "logout", "displaced"
    extension: Mapped[str | None] = mapped_column(String(EXTENSION_COLUMN_LENGTH), index=True)
    old_workplace: Mapped[str | None] = mapped_column(String(WORKPLACE_ID_LENGTH))
    new_workplace: Mapped[str | None] = mapped_column(String(WORKPLACE_ID_LENGTH))
    detail: Mapped[str | None] = mapped_column(Text)


class PinFailureRow(Base):
    """One PIN try, by lockout key ("user:201", "source:sha256:<hex digest>").

    Written before the PIN is checked (a try in flight counts); it stays when the
    PIN was wrong and is deleted when it was right.  Kept in the database so that
    every router sharing the directory counts the same tries; rows older than the
    longest lockout window are deleted as new ones come.
    """

    __tablename__ = "pin_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ClientStatusRow(Base):
    """One client app's status (online, away, dnd) and when it lapses without a heartbeat.

    Shared by every router of the directory, so DND set through one router's API is
    in force on all of them.  Keyed by extension, not by a foreign key to users: a
    row lives one heartbeat time-out at most, it is written on the heartbeat path
    without a lookup, and routers merge only the clients of users in their snapshot.
    An offline client is a missing row; expired rows are deleted by the next write.
    On PostgreSQL a trigger (migration 0004) announces every change with NOTIFY.
    """

    __tablename__ = "client_statuses"
    __table_args__ = (CheckConstraint("status IN ('online', 'away', 'dnd')", name="status"),)

    extension: Mapped[str] = mapped_column(String(EXTENSION_COLUMN_LENGTH), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LENGTH), primary_key=True)
    status: Mapped[str] = mapped_column(String(CLIENT_STATUS_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DirectoryRevisionRow(Base):
    """The directory's change counter: exactly one row, bumped by every change.

    ``content_revision`` is the revision of the last change to anything but the
    logins (users, phones, workplaces, roles): while it stays, a router reloads only
    the logins, which keeps a login cheap with 100,000 users.
    """

    __tablename__ = "directory_revision"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)
    content_revision: Mapped[int] = mapped_column(BigInteger, server_default="0")


metadata = Base.metadata

# The Core tables, for the bulk reads and writes (import, export, snapshot, logins).
roles: Table = metadata.tables["roles"]
role_workplaces: Table = metadata.tables["role_workplaces"]
users: Table = metadata.tables["users"]
workplaces: Table = metadata.tables["workplaces"]
phones: Table = metadata.tables["phones"]
logins: Table = metadata.tables["logins"]
audit: Table = metadata.tables["audit"]
directory_revision: Table = metadata.tables["directory_revision"]
pin_failures: Table = metadata.tables["pin_failures"]
client_statuses: Table = metadata.tables["client_statuses"]
user_forwards: Table = metadata.tables["user_forwards"]
switches_off: Table = metadata.tables["switches_off"]
