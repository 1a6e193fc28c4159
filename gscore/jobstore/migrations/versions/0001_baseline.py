"""The first release's schema: jobs, datasets, stage timings, idempotency keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from gscore.jobstore.migrations.baseline import BASELINE_TABLES, baseline_metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    baseline_metadata().create_all(op.get_bind())


def downgrade() -> None:
    metadata = baseline_metadata()
    for name in reversed(BASELINE_TABLES):
        metadata.tables[name].drop(op.get_bind())
