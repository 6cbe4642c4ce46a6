"""an index on a task's post: a new post's first comment looks for a merged task of it

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 07:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_post", "tasks", ["page_id", "post_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_post", table_name="tasks")
