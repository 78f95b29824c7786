"""api keys: several revocable keys a tenant, and admin keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:00:00

Each tenant's single ``tenants.key_hash`` moves into the new ``api_keys`` table (one active key, labelled
"migrated"), so every key that worked before the upgrade works after it; the column then goes.  The
downgrade puts one key a tenant back (its oldest active one) and drops the table; admin keys and any
further tenant keys are lost there.

On SQLite dropping a column rebuilds ``tenants`` (copy, drop, rename) while files, jobs and keys point to
it: run it with foreign keys off, as ``state.store.migrate`` does (and checks them after).
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_tenants = sa.table(
    "tenants",
    sa.column("id", sa.String),
    sa.column("key_hash", sa.String),
    sa.column("created_at", sa.Float),
)
_keys = sa.table(
    "api_keys",
    sa.column("id", sa.String),
    sa.column("tenant_id", sa.String),
    sa.column("role", sa.String),
    sa.column("key_hash", sa.String),
    sa.column("prefix", sa.String),
    sa.column("label", sa.String),
    sa.column("created_at", sa.Float),
    sa.column("revoked_at", sa.Float),
    sa.column("last_used_at", sa.Float),
)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_tenant_id"), ["tenant_id"], unique=False)

    conn = op.get_bind()
    old = conn.execute(sa.select(_tenants.c.id, _tenants.c.key_hash, _tenants.c.created_at)).all()
    if old:
        op.bulk_insert(
            _keys,
            [
                {
                    "id": "key-" + secrets.token_hex(8),
                    "tenant_id": tid,
                    "role": "tenant",
                    "key_hash": key_hash,
                    "prefix": None,
                    "label": "migrated",
                    "created_at": created,
                    "revoked_at": None,
                    "last_used_at": None,
                }
                for tid, key_hash, created in old
            ],
        )
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("key_hash")


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_hash", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    keys = conn.execute(
        sa.select(_keys.c.tenant_id, _keys.c.key_hash)
        .where(_keys.c.role == "tenant", _keys.c.revoked_at.is_(None))
        .order_by(_keys.c.created_at)
    ).all()
    first: dict[str, str] = {}
    for tid, key_hash in keys:
        first.setdefault(tid, key_hash)
    for (tid,) in conn.execute(sa.select(_tenants.c.id)).all():
        # a tenant without an active key gets a hash no key has (the column is unique and not null)
        h = first.get(tid) or "revoked-" + secrets.token_hex(28)
        conn.execute(_tenants.update().where(_tenants.c.id == tid).values(key_hash=h))
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.alter_column("key_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint("uq_tenants_key_hash", ["key_hash"])
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_tenant_id"))
    op.drop_table("api_keys")
