"""pin_failures: wrong PINs, counted in the database so that routers share the lockout.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pin_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pin_failures")),
    )
    op.create_index(op.f("ix_pin_failures_key"), "pin_failures", ["key"])
    op.create_index(op.f("ix_pin_failures_at"), "pin_failures", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pin_failures_at"), table_name="pin_failures")
    op.drop_index(op.f("ix_pin_failures_key"), table_name="pin_failures")
    op.drop_table("pin_failures")
