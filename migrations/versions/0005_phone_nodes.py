"""phones.node: the Asterisk a phone is on, when several share one directory.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("phones", sa.Column("node", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("phones") as batch:
        batch.drop_column("node")
