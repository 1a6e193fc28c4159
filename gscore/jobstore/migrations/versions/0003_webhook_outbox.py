"""The webhook outbox: a job's notify_url and the state of the delivery of its final-state event.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("notify_url", sa.String(2048)))
        batch.add_column(sa.Column("notify_state", sa.String(16)))
        batch.add_column(sa.Column("notify_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("notify_next_at", sa.DateTime))
        batch.add_column(sa.Column("notify_last_status", sa.Integer))
        batch.add_column(sa.Column("notify_last_error", sa.String(512)))
        batch.add_column(sa.Column("notify_delivered_at", sa.DateTime))
        batch.create_index("ix_jobs_notify_state", ["notify_state"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_notify_state")
        for column in (
            "notify_delivered_at",
            "notify_last_error",
            "notify_last_status",
            "notify_next_at",
            "notify_attempts",
            "notify_state",
            "notify_url",
        ):
            batch.drop_column(column)
