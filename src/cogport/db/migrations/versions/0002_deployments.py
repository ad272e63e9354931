"""deployments

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cogport.db.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version_pk", sa.Integer(), nullable=False),
        sa.Column("hardware", sa.String(length=64), nullable=False),
        sa.Column("min_instances", sa.Integer(), nullable=False),
        sa.Column("max_instances", sa.Integer(), nullable=False),
        sa.Column("release_number", sa.Integer(), nullable=False),
        sa.Column("release_created_at", cogport.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("release_created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", cogport.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", cogport.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", cogport.db.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("offline_since", cogport.db.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_pk"], ["versions.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["release_created_by_id"], ["accounts.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "name"),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index("ix_deployments_owner_created", ["owner_id", "created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deployments_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deployments_version_pk"), ["version_pk"], unique=False)


def downgrade() -> None:
    op.drop_table("deployments")
