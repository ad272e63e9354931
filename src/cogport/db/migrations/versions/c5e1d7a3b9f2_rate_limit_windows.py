"""rate_limit_windows: per-account request counters shared by every API process (issue 13)

Revision ID: c5e1d7a3b9f2
Revises: b7f3c1e9a2d4
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c5e1d7a3b9f2"
down_revision = "b7f3c1e9a2d4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_windows",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "kind", "window"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_windows")
