"""client_statuses (shared client status and heartbeats); PostgreSQL announces changes.

On PostgreSQL, triggers send ``NOTIFY`` for every directory change (the revision
row moves; the payload is "revision content_revision") and every client status change
(the payload is the extension), delivered when the writing transaction
commits, so every router listening applies the change at once (directory/changes.py).
SQLite has no NOTIFY: routers there poll.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The channel names are also in callrouter/directory/changes.py (DIRECTORY_CHANNEL,
# CLIENT_STATUS_CHANNEL); a migration keeps its own copy, as it must never change.
_POSTGRES_UP = (
    """
    CREATE FUNCTION callrouter_notify_directory() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify(
            'callrouter_directory', NEW.revision::text || ' ' || NEW.content_revision::text
        );
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER directory_revision_notify
    AFTER UPDATE ON directory_revision
    FOR EACH ROW EXECUTE FUNCTION callrouter_notify_directory()
    """,
    """
    CREATE FUNCTION callrouter_notify_client_status() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('callrouter_client_status', OLD.extension);
        ELSE
            PERFORM pg_notify('callrouter_client_status', NEW.extension);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER client_statuses_notify
    AFTER INSERT OR UPDATE OR DELETE ON client_statuses
    FOR EACH ROW EXECUTE FUNCTION callrouter_notify_client_status()
    """,
)
_POSTGRES_DOWN = (
    "DROP TRIGGER IF EXISTS client_statuses_notify ON client_statuses",
    "DROP FUNCTION IF EXISTS callrouter_notify_client_status()",
    "DROP TRIGGER IF EXISTS directory_revision_notify ON directory_revision",
    "DROP FUNCTION IF EXISTS callrouter_notify_directory()",
)


def upgrade() -> None:
    op.create_table(
        "client_statuses",
        sa.Column("extension", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('online', 'away', 'dnd')", name=op.f("ck_client_statuses_status")
        ),
        sa.PrimaryKeyConstraint("extension", "client_id", name=op.f("pk_client_statuses")),
    )
    op.create_index(op.f("ix_client_statuses_expires_at"), "client_statuses", ["expires_at"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES_DOWN:
            op.execute(statement)
    op.drop_index(op.f("ix_client_statuses_expires_at"), table_name="client_statuses")
    op.drop_table("client_statuses")
