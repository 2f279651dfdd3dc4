"""directory_revision.content_revision: logins alone no longer force a full reload.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("directory_revision") as batch:
        batch.add_column(
            sa.Column("content_revision", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE directory_revision SET content_revision = revision")


def downgrade() -> None:
    with op.batch_alter_table("directory_revision") as batch:
        batch.drop_column("content_revision")
