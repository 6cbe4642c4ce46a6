"""connect links for the browser, page token health, data deletion requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connect_links",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("chat_platform", sa.String(length=16), nullable=False),
        sa.Column("chat_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=True),
        sa.Column("state_hash", sa.String(length=64), nullable=True),
        sa.Column("browser_hash", sa.String(length=64), nullable=True),
        sa.Column("form_hash", sa.String(length=64), nullable=True),
        sa.Column("user_token_encrypted", sa.Text(), nullable=True),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_connect_links_state_hash", "connect_links", ["state_hash"])
    op.create_index("ix_connect_links_form_hash", "connect_links", ["form_hash"])
    op.create_table(
        "page_token_health",
        sa.Column("page_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("data_access_expires_at", sa.Float(), nullable=True),
        sa.Column("checked_at", sa.Float(), nullable=False),
        sa.Column("warned_deadline", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("page_id"),
    )
    op.create_table(
        "data_deletion_requests",
        sa.Column("confirmation_code", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("confirmation_code"),
    )


def downgrade() -> None:
    op.drop_table("data_deletion_requests")
    op.drop_table("page_token_health")
    op.drop_index("ix_connect_links_form_hash", table_name="connect_links")
    op.drop_index("ix_connect_links_state_hash", table_name="connect_links")
    op.drop_table("connect_links")
