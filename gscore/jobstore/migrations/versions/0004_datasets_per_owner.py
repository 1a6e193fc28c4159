"""Uploaded dataset names are per owner: the key is (scope, name), scope = the owner ('' when keyless).

Revision ID: 0004
Revises: 0003

A new table with the composite key replaces the old one (the same on SQLite and PostgreSQL, whose
primary-key constraint names differ); every row keeps its name under its owner's scope.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = "name, sha256, size_bytes, created_at, summary, owner"


def _datasets_table(name: str, *, scoped: bool) -> None:
    key = [sa.Column("scope", sa.String(64), primary_key=True)] if scoped else []
    op.create_table(
        name,
        *key,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(64)),
    )


def upgrade() -> None:
    _datasets_table("datasets_per_owner", scoped=True)
    op.execute(
        f"INSERT INTO datasets_per_owner (scope, {COLUMNS}) SELECT COALESCE(owner, ''), {COLUMNS} FROM datasets"
    )
    op.drop_table("datasets")
    op.rename_table("datasets_per_owner", "datasets")


def downgrade() -> None:
    """Back to one global name: of several owners' datasets with one name, the oldest keeps it."""
    _datasets_table("datasets_global", scoped=False)
    op.execute(
        f"INSERT INTO datasets_global ({COLUMNS}) SELECT {COLUMNS} FROM datasets AS d WHERE NOT EXISTS "
        "(SELECT 1 FROM datasets AS o WHERE o.name = d.name AND (o.created_at < d.created_at OR "
        "(o.created_at = d.created_at AND o.scope < d.scope)))"
    )
    op.drop_table("datasets")
    op.rename_table("datasets_global", "datasets")
