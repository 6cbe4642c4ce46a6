"""moderation of relayed comments (who did what on Facebook); a Page's Instagram account

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("moderation", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("moderated_by", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("liked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("pages") as batch:
        batch.add_column(sa.Column("ig_account_id", sa.String(length=64), nullable=True))
        batch.create_index("ix_pages_ig_account_id", ["ig_account_id"])


def downgrade() -> None:
    with op.batch_alter_table("pages") as batch:
        batch.drop_index("ix_pages_ig_account_id")
        batch.drop_column("ig_account_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("liked")
        batch.drop_column("moderated_by")
        batch.drop_column("moderation")
