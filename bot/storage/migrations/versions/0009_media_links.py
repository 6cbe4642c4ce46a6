"""files staff send to customers, offered to Facebook under unguessable expiring links

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media_links",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("file_id", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index("ix_media_links_expires_at", "media_links", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_media_links_expires_at", table_name="media_links")
    op.drop_table("media_links")
