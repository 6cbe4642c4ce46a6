"""an index on a message's post: catch-up asks for the latest comment seen on each open
task's post, which was a full scan of ``messages`` (on the event loop's thread, where
SQLite now answers)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 09:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_post", "messages", ["fb_post_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_post", table_name="messages")
