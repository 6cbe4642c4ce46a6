"""several replicas: inbox lanes and claims, shared rate limits, leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "processed_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lane", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", sa.Float(), nullable=True))
        batch_op.create_index(
            "ix_inbox_lane_pending",
            ["lane", "id"],
            sqlite_where=sa.text(PENDING),
            postgresql_where=sa.text(PENDING),
        )
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("sent", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("rate_limits")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_lane_pending")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("lane")
