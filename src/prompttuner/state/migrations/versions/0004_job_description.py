"""a job's task description

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 03:00:00

``jobs.description`` (nullable text): what the task is, in the user's words.  The engine builds the job's
text init from it and the Prompt Bank's selection reads it with the label words and sample texts; jobs
without one (every job before this revision) use the default made from their label words, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite rebuilds the table to drop a column
        batch.drop_column("description")
