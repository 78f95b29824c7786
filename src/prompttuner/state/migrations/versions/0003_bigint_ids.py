"""64-bit file sizes and event ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:40:00

``files.bytes`` and ``events.id`` were ``INTEGER``, 32-bit on PostgreSQL: a file of 2 GiB could not be
recorded and event ids would stop after 2**31.  Both become ``BIGINT`` there.  SQLite's ``INTEGER`` is
64-bit already (and an ``INTEGER PRIMARY KEY`` is the rowid), so nothing changes on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("files", "bytes", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.alter_column("events", "id", type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("events", "id", type_=sa.Integer(), existing_type=sa.BigInteger())
    op.alter_column("files", "bytes", type_=sa.Integer(), existing_type=sa.BigInteger())
