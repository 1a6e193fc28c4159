"""API keys, and the owner (an API key's name) of every job and uploaded dataset.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
    )
    op.create_index("ix_api_keys_name", "api_keys", ["name"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(64)))
        batch.create_index("ix_jobs_owner", ["owner"])
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("owner", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_owner")
        batch.drop_column("owner")
    op.drop_index("ix_api_keys_name", "api_keys")
    op.drop_table("api_keys")
